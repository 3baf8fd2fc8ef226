"""The report, built from a results folder alone: findings from the tables, every plot and table,
an HTML page that holds its images inline, and a command line that fails in one line."""

import json
import os
import re
import shutil
import sys

import commands
import numpy as np
import pandas as pd
import pytest
from conftest import REPO, small_sweep

from harness.outputs import breakdown, report
from harness.outputs.findings import VERBS, key_findings
from harness.outputs.html_page import markdown_to_html


@pytest.fixture(scope="module")
def measured_run(tmp_path_factory):
    """A small run written by the runner API: numpy and torch, naive and fused, float16 and float32."""
    from harness import pipeline

    sweep = small_sweep(
        experiment="report_test",
        frameworks=("numpy", "torch"),
        paths=("naive", "fused"),
        dtypes=("float16", "float32"),
        families=("spread",),
        scales=tuple(float(s) for s in np.logspace(-1, 3, 12)),
        seed=0,
    )
    run_dir = tmp_path_factory.mktemp("runs") / "report_test"
    pipeline.run(sweep, run_dir)
    return run_dir


@pytest.fixture
def run_dir(measured_run, tmp_path):
    """A private copy, so each test may add to the folder."""
    return shutil.copytree(measured_run, tmp_path / "run")


@pytest.fixture
def no_frameworks(monkeypatch):
    """Make any attempt to run a framework fail: the report must only read the folder."""
    import harness.backends
    import harness.paths

    def refuse(framework):
        raise AssertionError(f"the report tried to load {framework}")

    monkeypatch.setattr(harness.backends, "load", refuse)
    monkeypatch.setattr(harness.paths, "implementations_module", refuse)


def test_report_is_built_from_the_folder_alone(run_dir, no_frameworks):
    md_path, html_path = report.build_report(run_dir)
    assert (md_path, html_path) == (run_dir / "report.md", run_dir / "report.html")
    for name in ("breakdown.csv", "breakdown.parquet", "plots/heatmap_float16.png", "plots/heatmap_float32.png"):
        assert (run_dir / name).is_file(), name
    markdown = md_path.read_text()
    for plot in (run_dir / "plots").glob("*.png"):
        assert f"](plots/{plot.name})" in markdown, plot.name


def test_report_leads_with_the_answer_then_figures_then_collapsed_details(run_dir):
    (run_dir / "plots" / "heatmap_bfloat16.png").write_bytes((run_dir / "plots" / "heatmap_float16.png").read_bytes())
    markdown = report.build_report(run_dir)[0].read_text()
    lines = markdown.splitlines()
    assert lines[4] == "<!-- verdict -->" and lines[5] == "| framework/path | float16 | float32 |"
    headings = [line for line in lines if line.startswith("## ")]
    assert headings[:2] == ["## Headline findings", "## Figures"]
    sections = re.findall(r"^<details><summary>(.*)</summary>$", markdown, flags=re.M)
    assert sections[0] == "Every finding, per combination" and sections[-1] == "How it was produced"
    assert {"summary.md", "Breakdown against theory"} <= set(sections)
    assert markdown.count("<details>") == markdown.count("</details>") == len(sections)
    tail = markdown[markdown.index("<summary>How it was produced") :]
    assert ["### Command and configuration", "### Environment", "### Files"] == [
        line for line in tail.splitlines() if line.startswith("### ")
    ]
    # heatmaps in dtype order, not alphabetical (bfloat16 would come first)
    shown = re.findall(r"\]\(plots/(heatmap_\w+)\.png\)", markdown)
    assert shown == ["heatmap_float16", "heatmap_bfloat16", "heatmap_float32"]


def test_the_configuration_appears_once(run_dir):
    hydra_dir = run_dir / ".hydra"
    hydra_dir.mkdir()
    (hydra_dir / "config.yaml").write_text("frameworks: [numpy, torch]\nseed: 424242\n")
    environment = {"python": "3.11.7", "command": ["python", "-m", "harness"], "config": {"seed": 424242}}
    (run_dir / "environment.json").write_text(json.dumps(environment))
    (run_dir / "sweep.json").write_text(json.dumps({"seed": 424242}))
    markdown = report.build_report(run_dir)[0].read_text()
    assert markdown.count("424242") == 1  # the resolved config; not again from sweep.json or environment.json
    assert "The settings as validated are in `sweep.json`." in markdown
    assert "| python | 3.11.7 |" in markdown and "| config." not in markdown and "| command |" not in markdown


def test_html_holds_its_images_inline(run_dir):
    _, html_path = report.build_report(run_dir)
    page = html_path.read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == len(list((run_dir / "plots").glob("*.png")))
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"<(link|script)\b|href=|url\(", page)  # nothing fetched from elsewhere
    # the page still shows everything once the folder's own files are gone
    shutil.rmtree(run_dir / "plots")
    assert page.count("data:image/png;base64,") == len(sources)


def test_findings_are_sentences_written_from_the_breakdown_table(run_dir):
    md_path, _ = report.build_report(run_dir)
    markdown = md_path.read_text()
    table = pd.read_parquet(run_dir / "breakdown.parquet")
    naive = table[(table["path"] == "naive") & (table["framework"] == "numpy")].set_index("dtype")
    for dtype, row in naive.iterrows():
        verb = VERBS[row["theory_cause"]]
        words = breakdown.QUANTITY_WORDS[row["theory_quantity"]]
        expected = (
            f"naive {verb} in {dtype} (spread) once the {words} passes {row['theory_threshold']:.4g}, as theory "
            f"predicts: inf from scale {row['first_fail_scale']:.4g}"
        )
        assert expected in markdown
    assert "fused never fails in any framework, dtype or family" in markdown
    agree = int(table["matches_theory"].sum())
    assert f"{agree} of the {len(table)} that theory can check agree with it" in markdown


def test_disagreements_are_explained_in_the_findings():
    errors = pd.DataFrame(
        {
            "framework": "torch",
            "path": "log_softmax_nll",
            "dtype": "float32",
            "family": "spread",
            "scale": [1.0, 10.0],
            "n_rows": 4,
            "n_classes": 10,
            "max_logit": [3.0, 30.0],
            "status": ["ok", "nan"],
            "max_ulp_err": [0.7, np.nan],
            "message": "",
            "mechanisms": "",  # the entry declares none: a stable path
        }
    )
    findings = key_findings(breakdown.breakdown_frame(errors), errors)
    agree = "0 of the 1 that theory can check agree with it (a threshold within 1% of the measured break), 1 disagree"
    assert agree in findings[0]
    assert any(
        f.startswith("Unlike theory, log_softmax_nll in float32 (spread) broke (nan) at scale 10") for f in findings
    )


def test_run_record_config_and_bits_lost_limit_come_from_hydra(run_dir):
    hydra_dir = run_dir / ".hydra"
    hydra_dir.mkdir()
    (hydra_dir / "config.yaml").write_text(
        "frameworks: [numpy, torch]\nscales: ${logspace:-1,1,3}\nbits_lost_limit: 1\n"
    )
    (hydra_dir / "overrides.yaml").write_text("- experiment=report_test\n- n_rows=8\n")
    (hydra_dir / "hydra.yaml").write_text(
        "hydra:\n  overrides:\n    hydra: [hydra.run.dir=/somewhere, hydra.mode=RUN]\n"
        "    task: [experiment=report_test, n_rows=8]\n"
        "  runtime:\n    cwd: /work/main\n    choices:\n      experiment: report_test\n"
    )
    md_path, _ = report.build_report(run_dir)
    markdown = md_path.read_text()
    assert markdown.startswith("# Report: report_test")
    assert "python -m harness experiment=report_test n_rows=8 hydra.run.dir=/somewhere\n" in markdown
    assert "scales:\n- 0.1\n- 1.0\n- 10.0\n" in markdown  # the resolved ${logspace:...}
    assert set(pd.read_csv(run_dir / "breakdown.csv")["bits_lost_limit"]) == {1.0}


def test_environment_json_tables_and_plots_are_shown_whatever_the_folder_holds(run_dir):
    markdown = report.build_report(run_dir)[0].read_text()
    assert "found when this report was built" in markdown and "| torch |" in markdown
    environment = {"python": "3.11.7", "packages": {"numpy": "2.4.6"}, "threads": [{"num_threads": 2}]}
    (run_dir / "environment.json").write_text(json.dumps(environment))
    pd.DataFrame({"framework": ["numpy"], "median_s": [1.5e-5]}).to_parquet(run_dir / "timings.parquet")
    shutil.copy(run_dir / "plots" / "heatmap_float16.png", run_dir / "plots" / "timing_numpy.png")
    md_path, html_path = report.build_report(run_dir)
    markdown = md_path.read_text()
    assert "recorded by the run in environment.json" in markdown
    assert "| packages.numpy | 2.4.6 |" in markdown and "| threads.0.num_threads | 2 |" in markdown
    assert "<summary>Timing</summary>" in markdown and "| numpy | 1.5e-05 |" in markdown
    assert "](plots/timing_numpy.png)" in markdown
    assert "<td>packages.numpy</td>" in html_path.read_text()


def test_markdown_to_html_subset(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    page = markdown_to_html(
        "# T\n\ntext with `x<y`\n\n- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 \\| 3 |\n\n"
        "```\nraw <b>\n```\n\n![pic](a.png)\n",
        tmp_path,
        "T",
    )
    assert '<h1 id="t">T</h1>' in page and "<code>x&lt;y</code>" in page and "<li>two</li>" in page
    assert "<td>2 | 3</td>" in page and "raw &lt;b&gt;" in page
    assert 'src="data:image/png;base64,iVBORw0KGgo="' in page


def _cli(*args):
    return commands.run([sys.executable, "-m", "harness.outputs.report", *map(str, args)], REPO, dict(os.environ), 120)


@pytest.mark.slow
@pytest.mark.cli
def test_cli_rebuilds_a_report(run_dir):
    done = _cli(run_dir, "--bits-lost-limit", 3)
    assert done.returncode == 0, done.stderr
    assert (run_dir / "report.md").is_file() and (run_dir / "report.html").is_file()
    assert set(pd.read_csv(run_dir / "breakdown.csv")["bits_lost_limit"]) == {3.0}


@pytest.mark.slow
@pytest.mark.cli
def test_cli_bad_run_dir_fails_in_one_line(tmp_path):
    done = _cli(tmp_path / "missing")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith("error: ")
    assert "is not a folder" in done.stderr


@pytest.mark.parametrize("content", [None, b"not parquet"])
def test_folder_without_a_readable_errors_table_fails_in_one_line(tmp_path, capsys, content):
    if content is not None:
        (tmp_path / "errors.parquet").write_bytes(content)
    assert report.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.strip().count("\n") == 0
    assert ("holds no errors.parquet" if content is None else "cannot read") in err


@pytest.mark.slow
def test_cli_refuses_a_negative_bits_lost_limit(run_dir):
    done = _cli(run_dir, "--bits-lost-limit", "-3")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: argument --bits-lost-limit: must be a finite number >= 0, got '-3' (see --help)"
    ]


# --- the answer first: verdict table, headline findings, printed summary ----------------------


def _cells(path, statuses, framework="numpy", dtype="float32", family="spread"):
    """One framework/path/dtype over scales 1, 10, 100 with hand-set statuses and quantities."""
    return pd.DataFrame(
        {
            "framework": framework,
            "path": path,
            "dtype": dtype,
            "family": family,
            "scale": [1.0, 10.0, 100.0],
            "n_rows": 4,
            "n_classes": 10,
            "device": "cpu",
            "max_logit": [3.0, 30.0, 300.0],
            "max_exact_loss": [6.0, 60.0, 600.0],
            "status": statuses,
            "max_ulp_err": [0.5 if s == "ok" else np.nan for s in statuses],
        }
    )


@pytest.fixture
def two_paths():
    """naive fails (inf) from scale 10; fused never fails. The bisection put naive's break at scale 2.96,
    largest logit 88.72 and exact loss 90.1: float32's exp overflow."""
    errors = pd.concat([_cells("naive", ["ok", "inf", "inf"]), _cells("fused", ["ok", "ok", "ok"])], ignore_index=True)
    breaks = pd.DataFrame(
        {
            "framework": ["numpy"],
            "path": ["naive"],
            "dtype": ["float32"],
            "family": ["spread"],
            "device": ["cpu"],
            "n_rows": [4],
            "n_classes": [10],
            "break_scale_hi": [2.957],
            "break_status": ["inf"],
            "max_logit_hi": [88.72],
            "max_exact_loss_hi": [90.1],
        }
    )
    return errors, breaks


def test_verdict_states_a_break_as_largest_logit_and_loss_or_never(two_paths):
    from harness.outputs.verdict import BreakFinder, entry_class, verdict_markdown

    errors, breaks = two_paths
    lines = verdict_markdown(errors, BreakFinder(errors, breaks, None), {"float32": 12.0})
    assert lines[0] == "<!-- verdict -->" and lines[1] == "| framework/path | float32 |"
    assert lines[3] == "| numpy/naive | inf at logit 88.7 (loss 90.1); 0.5 ulp |"  # bisected: "at"
    assert lines[4] == "| numpy/fused | never; 0.5 ulp |"
    grid_only = verdict_markdown(errors, BreakFinder(errors, None, None), {"float32": 12.0})
    assert grid_only[3] == "| numpy/naive | inf by logit 30 (loss 60); 0.5 ulp |"  # the first failing grid cell
    assert [
        entry_class(t) for t in ("never; 0.5 ulp", "never; 2e+03 ulp (12 bits lost)", "inf at logit 1 (loss 2)")
    ] == [
        "ok",
        "warn",
        "bad",
    ]


def test_headlines_say_which_path_to_use_and_where_the_others_break(two_paths):
    from harness.outputs.headlines import headline_findings
    from harness.outputs.verdict import BreakFinder

    errors, breaks = two_paths
    headlines = headline_findings(errors, BreakFinder(errors, breaks, None), {"float32": 12.0})
    assert headlines[0] == (
        "Use fused: it never fails in any framework or dtype measured, up to largest logit 300, and its worst error "
        "while finite is 0.5 ulp, in numpy/fused float32; naive fails from largest logit 88.7 (float32)."
    )
    assert headlines[1] == "naive fails: inf at largest logit 88.7 (loss 90.1) in float32."
    assert len(headlines) <= 8


def test_printed_summary_states_the_break_beside_the_scale(two_paths):
    from types import SimpleNamespace

    from harness.outputs import tables

    errors, breaks = two_paths
    sweep = SimpleNamespace(experiment="x", label="random", seed=0, bits_lost_limit=None)
    summary = tables.summary_markdown(errors, sweep, breaks)
    assert "4 rows x 10 classes per cell, label=random, seed=0; 3 scales from 1 to 100." in summary
    assert "| numpy/naive | 0.5 ulp; inf from largest logit 88.72 (loss 90.1), scale 2.957 |" in summary
    assert summary.rstrip().splitlines()[-1].startswith("Use fused: it never fails")
    grid = tables.summary_markdown(errors, sweep)  # no breaks table: the first failing grid cell
    assert "| numpy/naive | 0.5 ulp; inf from largest logit 30 (loss 60), scale 10 |" in grid


def test_given_data_are_described_by_their_own_shape_and_labels():
    from types import SimpleNamespace

    from harness.outputs import tables

    errors = _cells("fused", ["ok", "ok", "ok"], family="inline").assign(n_rows=3, n_classes=3).head(1)
    summary = tables.summary_markdown(errors, SimpleNamespace(experiment="seed", label="random", seed=0))
    assert "family inline: its 3 x 3 logits and labels as given; scale 1." in summary
    assert "label=random" not in summary and "64 rows" not in summary


def test_a_multirun_job_prints_one_line_and_its_merge_the_summary(tmp_path):
    from harness.outputs import tables

    job = tmp_path / "sweep" / "0"
    job.mkdir(parents=True)
    assert tables.printed_summary(job, "# summary") == "# summary"
    (tmp_path / "sweep" / "multirun.yaml").write_text("hydra: {}\n")
    assert tables.printed_summary(job, "# summary").startswith(f"summary of this job: {job / 'summary.md'}")
    assert tables.printed_summary(tmp_path / "sweep", "# summary") == "# summary"  # the merged sweep folder


def test_html_colours_the_verdict_and_passes_details_through(tmp_path):
    from harness.outputs.verdict import entry_class

    markdown = "<!-- verdict -->\n| framework/path | float16 |\n|---|---|\n"
    markdown += "| numpy/naive | inf at logit 11 (loss 11) |\n"
    markdown += "| numpy/fused | never; 0.5 ulp |\n\n<details><summary>More</summary>\n\ntext\n\n</details>\n"
    page = markdown_to_html(markdown, tmp_path, "T", entry_class)
    assert '<table class="verdict">' in page and '<td class="bad">inf\u00a0at\u00a0logit' in page
    assert '<td class="ok">never; 0.5\u00a0ulp</td>' in page and "<td>numpy/naive</td>" in page
    assert "<details><summary>More</summary>" in page and "</details>" in page and "<p>text</p>" in page


def test_edge_verdict_names_wrong_and_silent_cases():
    from harness.outputs import edge_tables

    frame = pd.DataFrame(
        {
            "case": ["finite", "label_minus_one", "finite", "label_minus_one"],
            "framework": ["numpy", "numpy", "torch", "torch"],
            "path": "fused",
            "dtype": "float32",
            "exact_loss": [2.5, np.nan, 2.5, np.nan],
            "loss_outcome": ["exact", "number", "exact", "error"],
            "loss_ulp_err": [0.25, np.nan, 0.5, np.nan],
            "grad_outcome": ["exact", "number", "exact", "error"],
        }
    )
    assert edge_tables.edge_entry(frame[frame["framework"] == "numpy"]) == "silent on label_minus_one; 0.25 ulp"
    assert edge_tables.edge_entry(frame[frame["framework"] == "torch"]) == "exact or flagged; 0.5 ulp"
    assert edge_tables.edge_recommendation(frame).startswith(
        "Use fused: of 4 answers (every framework, dtype and edge input), 0 are wrong losses and 0 NaN or wrong "
        "gradients where the loss is defined, and 1 are numbers returned silently where it is not (in numpy)."
    )


def test_the_loss_is_named_from_the_table():
    from harness.outputs.tables import loss_words

    assert loss_words(pd.DataFrame({"path": ["fused"]})) == "cross-entropy"  # a table from before the loss column
    assert loss_words(pd.DataFrame({"loss": ["cross_entropy"]})) == "cross-entropy"  # the entry's title
    assert loss_words(pd.DataFrame({"loss": ["focal_loss"]})) == "focal loss"  # no entry: the name in words


def test_edge_findings_say_when_the_edge_row_changes_other_rows():
    from harness.outputs import edge_tables

    frame = pd.DataFrame(
        {
            "case": ["finite", "finite", "label_n_classes", "label_n_classes"],
            "framework": ["tensorflow", "mlx"] * 2,
            "path": "fused",
            "dtype": "float64",
            "other_rows_loss": ["exact", "wrong", "exact", "wrong"],  # MLX's float64 is off in the control too
            "other_rows_grad": ["exact", "wrong", "wrong", "wrong"],  # the -1 of the bad label lands in the next row
        }
    )
    assert edge_tables.spill_findings(frame) == [
        "The edge row changes the other rows of its call: `label_n_classes`: tensorflow (their gradient: wrong)."
    ]
    assert edge_tables.spill_findings(frame.assign(other_rows_grad="exact")) == []


def test_recommendation_between_equally_accurate_paths_takes_the_smaller_peak_memory():
    from harness.outputs.headlines import path_stats, recommendation
    from harness.outputs.verdict import BreakFinder

    errors = pd.concat([_cells("linear_fused", ["ok"] * 3), _cells("linear_chunked", ["ok"] * 3)], ignore_index=True)
    timings = pd.DataFrame({"path": ["linear_fused", "linear_chunked"], "peak_bytes": [64 * 2**20, 16 * 2**20]})
    stats = path_stats(errors, BreakFinder(errors, None, None), {"float32": 12.0}, timings)
    assert recommendation(stats) == (
        "Use linear_chunked: it never fails in any framework or dtype measured, up to largest logit 300, and its "
        "worst error while finite is 0.5 ulp, in numpy/linear_chunked float32, peak memory 16 MiB; linear_fused "
        "never fails either (worst 0.5 ulp, peak memory 64 MiB)."
    )


def test_where_every_path_fails_no_single_path_is_recommended():
    from harness.outputs import headlines

    class Stats:
        def __init__(self, path, failed, worst, logit):
            self.path, self.failed, self.worst, self.fails = path, failed, (worst, f"torch/{path} float32"), True
            self.found = type("Break", (), {"max_logit": logit})()

        def earliest(self):
            return self.found, f"torch/{self.path}", "float32"

        def rank(self):
            return (True, -self.found.max_logit)

        def worst_words(self):
            return f"{self.worst[0]:.3g} ulp, in {self.worst[1]}"

    text = headlines.recommendation([Stats("a", (10, 40), 5.0, 2.0), Stats("b", (2, 40), 900.0, 1.0)])
    assert text.startswith("No path holds everywhere: each fails somewhere, b in the fewest cells (2 of 40;")
    assert text.endswith("a with the smallest worst error while finite (5 ulp, in torch/a float32).")
