"""The real command line, end to end, in subprocesses with small grids."""

import re

import pandas as pd
import pytest
from conftest import REPO, run_cli

from harness.outputs.tables import ERROR_COLUMNS

SMALL = ["experiment=precision_sweep", "scales=[0.1,10,1000]", "n_rows=4", "n_classes=20", "progress=false"]
SMALL += ["timing.budget_s=0.01", "timing.min_blocks=2"]  # timing on, as in the main command, but brief


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The grid twice: into hydra.run.dir, and with none given, from a scratch working folder (its default
    folder, results/<experiment>/<timestamp>/); (run folder, result, working folder) each. The second runs
    NumPy alone, untimed: a framework's rows depend neither on the others run beside it nor on timing."""
    out = tmp_path_factory.mktemp("cli") / "a"
    first = run_cli(*SMALL, f"hydra.run.dir={out}", new_interpreter=True)
    assert first.returncode == 0, first.stderr
    cwd = tmp_path_factory.mktemp("cli_default")
    second = run_cli(*SMALL, "frameworks=[numpy]", "timing.enabled=false", cwd=cwd)
    assert second.returncode == 0, second.stderr
    (default,) = (cwd / "results" / "precision_sweep").iterdir()
    return [(out, first, out.parent), (default, second, cwd)]


@pytest.mark.slow
def test_a_run_writes_tables_summary_plots_and_config(two_runs):
    out, result, _ = two_runs[0]
    for name in ("errors.parquet", "errors.csv", "summary.md", ".hydra/config.yaml"):
        assert (out / name).is_file(), name
    for family in ("spread", "offset"):
        assert (out / "plots" / f"error_vs_scale_{family}.png").stat().st_size > 10_000
    errors = pd.read_parquet(out / "errors.parquet")
    assert list(errors.columns) == list(ERROR_COLUMNS)
    assert len(errors) == 4 * 4 * 4 * 2 * 3  # the four default frameworks
    assert pd.read_csv(out / "errors.csv").shape == errors.shape
    summary = (out / "summary.md").read_text()
    assert "| numpy/naive |" in summary and summary.strip() in result.stdout


@pytest.mark.slow
def test_the_same_cells_give_identical_error_rows(two_runs):
    (a, _, _), (b, _, _) = two_runs
    numpy_rows = pd.read_parquet(a / "errors.parquet").query("framework == 'numpy'").reset_index(drop=True)
    assert len(numpy_rows) == 4 * 4 * 2 * 3
    pd.testing.assert_frame_equal(numpy_rows, pd.read_parquet(b / "errors.parquet"))


@pytest.mark.slow
def test_default_output_folder_is_results_experiment_timestamp(two_runs):
    run_dir, _, cwd = two_runs[1]  # the run with no hydra.run.dir
    assert list((cwd / "results" / "precision_sweep").iterdir()) == [run_dir]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", run_dir.name), run_dir.name
    assert (run_dir / "errors.parquet").is_file()


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("frameworks=[numpy,caffe]", "unknown framework 'caffe'"),
        ("paths=[exp]", "unknown path 'exp'"),
        ("dtypes=[float128]", "unknown dtype 'float128'"),
        ("families=[gauss]", "unknown family 'gauss'"),
        ("scales=[0]", "bad scale 0"),
        ("scales=[nan]", "bad scale nan"),
        ("scales=[]", "scales is empty"),
        ("frameworks=[]", "frameworks is empty"),
        ("n_classes=1", "n_classes must be an integer >= 2"),
        ("n_rows=0", "n_rows must be an integer >= 1"),
    ],
)
def test_bad_input_fails_in_one_line_before_any_work(tmp_path, refused, override, words):
    out = tmp_path / "run"
    code, stdout, stderr = refused(*SMALL, override, f"hydra.run.dir={out}", cwd=tmp_path)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and lines[0].startswith("error: ")
    assert "Traceback" not in stderr + stdout
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_the_command_refuses_bad_input_in_one_line_with_status_2_and_writes_nothing(tmp_path):
    """As the tests above check in this process, by the command itself: its exit status, one line, no folder."""
    out = tmp_path / "run"
    result = run_cli(*SMALL, "scales=[0]", f"hydra.run.dir={out}", cwd=tmp_path, new_interpreter=True)
    assert result.returncode == 2
    assert result.stderr == "error: bad scale 0 in scales; each scale must be a finite number > 0\n"
    assert "Traceback" not in result.stdout and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_the_main_command_times_every_framework_path_and_dtype(two_runs):
    out, _, _ = two_runs[0]
    timings = pd.read_parquet(out / "timings.parquet")
    assert len(timings) == 4 * 4 * 4  # frameworks x paths x dtypes at n_rows x n_classes
    assert set(zip(timings["n_rows"], timings["n_classes"], strict=True)) == {(4, 20)}
    assert (timings["status"] == "ok").all() and (timings["median_s"] > 0).all()
    assert (timings["threads"] == 1).all()
    for name in ("timing_float16.png", "timing_float64.png", "accuracy_vs_time.png"):
        assert (out / "plots" / name).is_file(), name
    report = (out / "report.md").read_text()
    assert "<summary>Timing</summary>" in report and "accuracy_vs_time" in report


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (
            ["experiment=nope"],
            "error: unknown experiment 'nope'; valid choices: "
            + ", ".join(sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))),
        ),
        (["n_row=4"], "error: unknown setting 'n_row'; valid settings: frameworks, paths, dtypes, families, scales,"),
        (["+n_row=4"], "error: unknown setting 'n_row'; valid settings: frameworks, paths, dtypes, families, scales,"),
        (["+timing.budget=1"], "error: unknown setting 'timing.budget'; valid settings: enabled, threads, budget_s,"),
        (["frameworks=[numpy"], "error: malformed override 'frameworks=[numpy': no viable alternative at input"),
        (["frameworks=[numpy],[torch]"], "error: 'frameworks=[numpy],[torch]' gives several values: add -m"),
        (["hydra/launcher=slurm"], "error: unknown hydra/launcher 'slurm'; valid choices: basic, joblib,"),
        (["-m", "dtypes=[float32],[float99]"], "error: unknown dtype 'float99' in dtypes; valid choices: float16,"),
        (["-m", "experiment=precision_sweep,vocab_sweep"], "error: experiment cannot be swept in one multirun"),
    ],
)
def test_hydra_errors_are_one_line_before_any_work(tmp_path, refused, overrides, line):
    """Hydra's own errors, a key Hydra would add (+key) and a bad value in a later multirun job."""
    code, stdout, stderr = refused(*overrides, "progress=false", cwd=tmp_path)
    assert code == 2, stderr
    assert len(stderr.strip().splitlines()) == 1 and stderr.startswith(line), stderr
    assert "Traceback" not in stderr + stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_the_command_refuses_a_bad_multirun_job_in_one_line_before_any_job(tmp_path):
    result = run_cli("-m", "dtypes=[float32],[float99]", "progress=false", cwd=tmp_path, new_interpreter=True)
    assert result.returncode == 2 and result.stderr.startswith("error: unknown dtype 'float99' in dtypes;")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stdout
    assert list(tmp_path.iterdir()) == []
