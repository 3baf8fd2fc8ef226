"""The report of a run, rebuilt from its results folder alone: report.md and a self-contained report.html.

`python -m harness.outputs.report RUN_DIR` recomputes the breakdown table and the correct-bits heatmaps
from errors.parquet, then writes the report; nothing is rerun. It answers first, in one screen: a
verdict table (harness.outputs.verdict) and at most eight headline findings, led by which path to use
and why (harness.outputs.headlines); then every figure; then, collapsed, every per-combination
finding (harness.outputs.findings), the Markdown summaries, the breakdown, gradients, timing, the
other tables and how the run was produced (harness.outputs.provenance). The HTML
(harness.outputs.html_page) embeds its images and style: it opens offline.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from harness.cli import OneLineParser, non_negative
from harness.dtypes import DTYPES
from harness.outputs import breakdown, edge_tables, option_findings, pareto, tables
from harness.outputs.findings import _g, key_findings, with_where
from harness.outputs.headlines import headline_findings
from harness.outputs.heatmaps import HEATMAP_NOTE, write_heatmaps
from harness.outputs.html_page import markdown_to_html
from harness.outputs.provenance import configured_bits_lost_limit, experiment_name, provenance_section, run_config
from harness.outputs.theory import bits_lost_limits
from harness.outputs.verdict import BreakFinder, entry_class, verdict_markdown

REPORT_MD, REPORT_HTML = "report.md", "report.html"
ERRORS = "errors.parquet"
OWN_FILES = {REPORT_MD, REPORT_HTML}
SECTION_TABLES = ("errors", "breakdown", "grad_errors", "grad_breakdown", "timings")  # shown in their own sections
MAX_TABLE_ROWS = 60  # a table longer than this is shown by its first rows; the file has the rest
HEAD_ROWS = 20


class ReportError(ValueError):
    """A results folder the report cannot be built from; its message is the one line shown."""


# --- reading the folder ---------------------------------------------------------------------


def read_errors(run_dir: Path) -> pd.DataFrame:
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir} is not a folder; give a results folder, e.g. results/precision_sweep/<time>")
    path = run_dir / ERRORS
    if not path.is_file():
        raise ReportError(f"{run_dir} holds no {ERRORS}; is it a results folder of `python -m harness`?")
    try:
        errors = pd.read_parquet(path)
    except Exception as exc:  # a damaged file is one line, not a traceback
        raise ReportError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    missing = [c for c in ("framework", "path", "dtype", "family", "scale", "status", "max_ulp_err") if c not in errors]
    if missing:
        raise ReportError(f"{path} lacks the column(s) {', '.join(missing)}; it is not an errors table")
    return errors


GRID_COLUMNS = ("framework", "path", "dtype", "family", "scale")


def _count(n: int, word: str) -> str:
    plural = word[:-1] + "ies" if word.endswith("y") else word + "s"
    return f"{n} {word if n == 1 else plural}"


# --- Markdown -------------------------------------------------------------------------------


def _cell(value) -> str:
    if isinstance(value, (float, np.floating)):
        return _g(value)
    if value is None or value is pd.NA:
        return "-"
    return str(value).replace("|", "\\|").replace("\n", " ")


def frame_markdown(frame: pd.DataFrame) -> str:
    return tables.markdown_table(
        [str(c) for c in frame.columns], [[_cell(v) for v in row] for row in frame.itertuples(index=False)]
    )


def breakdown_markdown(table: pd.DataFrame) -> str:
    """The breakdown table per family, condensed to what a reader compares."""
    parts = []
    for setting, of_family in with_where(table).groupby("setting", sort=False):
        shown = pd.DataFrame(
            {
                "framework/path": of_family["framework"] + "/" + of_family["path"],
                "dtype": of_family["dtype"],
                "fails from scale": of_family["first_fail_scale"],
                "max_logit there": of_family["first_fail_max_logit"],
                "status": of_family["first_fail_status"],
                "> k bits lost from": of_family["first_bits_lost_scale"],
                "k": of_family["bits_lost_limit"],
                "theory": of_family["theory_cause"],
                "threshold": of_family["theory_threshold"],
                "on": of_family["theory_quantity"],
                "theory scale": of_family["theory_scale"],
                "steps off": of_family["grid_steps_off"],
                "agrees": of_family["matches_theory"].map(lambda v: "-" if pd.isna(v) else ("yes" if v else "NO")),
                "explanation": of_family["explanation"],
            }
        )
        parts += [f"### family {setting}", "", frame_markdown(shown), ""]
    glossary = [f"- `{name}`: {text}" for name, text in breakdown.COLUMN_DOCS.items()]
    return "\n".join(parts + ["Columns of breakdown.csv / breakdown.parquet:", "", *glossary])


def demote(markdown: str, levels: int) -> str:
    """Push a Markdown file's headings down so it nests under a report section."""
    return re.sub(r"^(#+) ", lambda m: "#" * min(len(m.group(1)) + levels, 6) + " ", markdown, flags=re.M)


def other_tables(run_dir: Path) -> list[Path]:
    """Every table of the folder but errors and breakdown: Parquet, and CSV without a Parquet twin."""
    found = []
    for path in sorted(run_dir.rglob("*")):
        if not path.is_file() or (path.stem in SECTION_TABLES and path.parent == run_dir):
            continue
        if path.suffix == ".parquet" or (path.suffix == ".csv" and not path.with_suffix(".parquet").exists()):
            found.append(path)
    return found


def table_head(path: Path) -> tuple[pd.DataFrame, int | None]:
    """The table whole if it is short, else its first rows, without reading a long file whole;
    and its row count (None for a long CSV, which is not counted)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        file = pq.ParquetFile(path)
        n_rows = file.metadata.num_rows
        if n_rows <= MAX_TABLE_ROWS:
            return file.read().to_pandas(), n_rows
        return next(file.iter_batches(batch_size=HEAD_ROWS)).to_pandas(), n_rows
    frame = pd.read_csv(path, nrows=MAX_TABLE_ROWS + 1)
    return (frame, len(frame)) if len(frame) <= MAX_TABLE_ROWS else (frame.head(HEAD_ROWS), None)


def table_section(run_dir: Path, path: Path) -> list[str]:
    name = path.relative_to(run_dir).as_posix()
    try:
        frame, n_rows = table_head(path)
    except Exception as exc:
        return [f"### {name}", "", f"Could not read it: {type(exc).__name__}: {exc}", ""]
    size = f"{n_rows} rows" if n_rows is not None else f"more than {MAX_TABLE_ROWS} rows"
    lines = [f"### {name}", "", f"{size} x {len(frame.columns)} columns.", ""]
    if n_rows is None or n_rows > MAX_TABLE_ROWS:
        lines += [f"The first {len(frame)} rows; the file holds them all.", ""]
    return lines + [frame_markdown(frame), ""]


def plot_order(path: Path) -> tuple:
    """Sort key: by name, but a name ending in a dtype (heatmap_float16) in dtype order, not alphabetical."""
    stem, _, last = path.stem.rpartition("_")
    dtypes = list(DTYPES)
    return (stem, dtypes.index(last), "") if last in dtypes else (path.stem, -1, path.as_posix())


def plot_files(run_dir: Path) -> list[Path]:
    return sorted((p for p in run_dir.rglob("*.png") if p.is_file()), key=plot_order)


def images(plots: list[Path], run_dir: Path) -> list[str]:
    return [line for path in plots for line in (f"![{path.stem}]({path.relative_to(run_dir).as_posix()})", "")]


def timing_section(run_dir: Path) -> list[str]:
    """The timings table (median, IQR, throughput against bandwidth), where timed."""
    if not (run_dir / "timings.parquet").is_file():
        return []
    timings = pd.read_parquet(run_dir / "timings.parquet")
    shown = ["framework", "path", "dtype", "n_rows", "n_classes", "threads", "median_s", "iqr_s", "compile_s"]
    shown += ["gb_per_s", "bandwidth_fraction", "status"]
    lines = []
    if "bandwidth_gb_per_s" in timings and len(timings):
        lines += [f"Memory bandwidth measured for the run: {_g(timings['bandwidth_gb_per_s'].iloc[0])} GB/s.", ""]
    return lines + [frame_markdown(timings[[c for c in shown if c in timings]]), ""]


def gradient_section(run_dir: Path) -> list[str]:
    """Findings and breakdown of the gradient, where the run measured it."""
    if not (run_dir / "grad_errors.parquet").is_file() or not (run_dir / "grad_breakdown.parquet").is_file():
        return []
    grad_errors = pd.read_parquet(run_dir / "grad_errors.parquet")
    grad_table = pd.read_parquet(run_dir / "grad_breakdown.parquet")
    return [
        "d(sum of losses)/d(logits) against the exact softmax - onehot (grad_errors); the breakdown below "
        "applies the forward pass's thresholds, since a backward pass breaks where its forward does.",
        "",
        *[f"- {sentence}" for sentence in key_findings(grad_table, grad_errors)],
        "",
        breakdown_markdown(grad_table),
        "",
    ]


def details(title: str, lines: list[str]) -> list[str]:
    """A collapsed section (HTML <details>, which Markdown viewers show as such too)."""
    return [f"<details><summary>{title}</summary>", "", *lines, "", "</details>", ""] if lines else []


def _table(run_dir: Path, name: str) -> pd.DataFrame | None:
    path = run_dir / f"{name}.parquet"
    return pd.read_parquet(path) if path.is_file() else None


def answer_section(run_dir: Path, errors: pd.DataFrame, table: pd.DataFrame, limits: dict) -> list[str]:
    """The first screen: the verdict table and the ranked headline findings, from the run's tables."""
    finder = BreakFinder(errors, _table(run_dir, "breaks"), table)
    grad_errors, grad = _table(run_dir, "grad_errors"), None
    if grad_errors is not None and not grad_errors.empty:
        grad = (grad_errors, BreakFinder(grad_errors, None, _table(run_dir, "grad_breakdown")))
    findings = headline_findings(errors, finder, limits, table, grad, _table(run_dir, "timings"))
    return [*verdict_markdown(errors, finder, limits), "## Headline findings", "", *[f"- {s}" for s in findings], ""]


def figures_section(run_dir: Path) -> list[str]:
    """Every plot of the folder: error plots, heatmaps (dtype order), gradient, then timing."""
    plots = plot_files(run_dir)
    heatmaps = [p for p in plots if p.name.startswith("heatmap_")]
    later = [p for p in plots if p.name.startswith(("grad_", "timing_", "accuracy_vs_time"))]
    first = [p for p in plots if p not in heatmaps + later]
    if not plots:
        return []
    return ["## Figures", "", *images(first, run_dir), HEATMAP_NOTE, "", *images(heatmaps + later, run_dir)]


def edge_report_markdown(run_dir: Path) -> str:
    """An edge_cases run: its verdict and headline findings, then the full matrix and provenance, collapsed."""
    frame = pd.read_parquet(run_dir / f"{edge_tables.EDGE_TABLE}.parquet")
    cases = ", ".join(dict.fromkeys(frame["case"]))
    lines = [
        f"# Report: {experiment_name(run_dir)}",
        "",
        f"{frame['case'].nunique()} edge inputs ({cases}) through {_count(frame['framework'].nunique(), 'framework')}, "
        f"{_count(frame['path'].nunique(), 'path')} and {_count(frame['dtype'].nunique(), 'dtype')}.",
        "",
        *edge_tables.edge_verdict(frame),
        "## Headline findings",
        "",
        *[f"- {s}" for s in edge_tables.edge_headlines(frame)],
        "",
    ]
    lines += details("Edge cases in full", edge_tables.edge_section(run_dir))
    lines += details("How it was produced", provenance_section(run_dir, OWN_FILES, heading=False))
    return "\n".join(lines)


def report_markdown(run_dir: Path, errors: pd.DataFrame, table: pd.DataFrame, limits: dict | None = None) -> str:
    """The answer first (verdict table, headline findings), then the figures, then the details in
    collapsed sections: every finding, summaries, breakdown, gradients, timing, tables, provenance."""
    limits = limits or bits_lost_limits(errors, None)
    low, high = errors["scale"].min(), errors["scale"].max()
    span = f" from {_g(low)} to {_g(high)}" if low != high else f" ({_g(low)})"
    lines = [
        f"# Report: {experiment_name(run_dir)}",
        "",
        f"{len(errors)} cells: " + ", ".join(_count(errors[c].nunique(), c) for c in GRID_COLUMNS) + f"{span}.",
        "",
        *answer_section(run_dir, errors, table, limits),
        *figures_section(run_dir),
    ]
    every = [f"- {sentence}" for sentence in key_findings(table, errors)]
    every += ["", *pareto.front_section(run_dir), *option_findings.option_sections(errors)]
    lines += details("Every finding, per combination", every)
    for path in sorted(run_dir.glob("*.md")):
        if path.name not in OWN_FILES:
            lines += details(path.name, [demote(path.read_text(), 2).rstrip()])
    lines += details("Breakdown against theory", [breakdown_markdown(table)])
    lines += details("Gradients", gradient_section(run_dir))
    lines += details("Timing", timing_section(run_dir))
    extra = other_tables(run_dir)
    lines += details("Other tables", [line for path in extra for line in table_section(run_dir, path)])
    lines += details("How it was produced", provenance_section(run_dir, OWN_FILES, heading=False))
    return "\n".join(lines)


# --- entry points ---------------------------------------------------------------------------


def build_report(run_dir, bits_lost_limit: float | None = None, draw_heatmaps: bool = True) -> tuple[Path, Path]:
    """Rebuild breakdown.{csv,parquet}, plots/heatmap_<dtype>.png, report.md and report.html in
    run_dir from its errors table; k of "more than k bits lost" is bits_lost_limit, else the
    run's config key `bits_lost_limit`, else half each dtype's significand bits. draw_heatmaps=False
    keeps the heatmaps already in the folder (the pipeline draws them with the other figures)."""
    run_dir = Path(run_dir)
    if edge_tables.is_edge_run(run_dir):  # experiment edge_cases: no errors table, a section of its own
        return write_report(run_dir, edge_report_markdown(run_dir))
    errors = read_errors(run_dir)
    if bits_lost_limit is None:
        bits_lost_limit = configured_bits_lost_limit(run_config(run_dir)[0])
    table = breakdown.write_breakdown(errors, run_dir, bits_lost_limit)
    limits = bits_lost_limits(errors, bits_lost_limit)
    if (run_dir / "grad_errors.parquet").is_file():  # the backward pass breaks where its forward does
        grad_errors = pd.read_parquet(run_dir / "grad_errors.parquet")
        breakdown.write_breakdown(grad_errors, run_dir, bits_lost_limit, stem="grad_breakdown")
    if draw_heatmaps:
        write_heatmaps(errors, run_dir)
    return write_report(run_dir, report_markdown(run_dir, errors, table, limits))


def write_report(run_dir: Path, markdown: str) -> tuple[Path, Path]:
    """report.md and its self-contained report.html."""
    md_path, html_path = run_dir / REPORT_MD, run_dir / REPORT_HTML
    tables.write_text(markdown, md_path)
    tables.write_text(
        markdown_to_html(markdown, run_dir, f"Report: {experiment_name(run_dir)}", entry_class), html_path
    )
    return md_path, html_path


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m harness.outputs.report",
        description="Rebuild breakdown, heatmaps and report.md/report.html of a results folder, rerunning nothing.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a results folder written by `python -m harness`")
    parser.add_argument(
        "--bits-lost-limit",
        type=non_negative,
        default=None,
        metavar="K",
        help="k of 'more than k bits lost' (default: the run's bits_lost_limit, else half the significand bits)",
    )
    args = parser.parse_args(argv)
    try:
        md_path, html_path = build_report(Path(args.run_dir), args.bits_lost_limit)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {md_path} and {html_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
