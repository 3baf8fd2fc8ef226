"""Compare two runs cell by cell: which cells regressed, improved or changed status from RUN_A to RUN_B.

    python -m harness.tools.compare RUN_A RUN_B [--ulp-tolerance X] [--rel-tolerance R] [--out DIR]
                                    [--allow-different-settings]

RUN_A is the baseline. Cells are matched on the key columns present in both errors tables. A cell
regressed when it went from ok to a failure or unsupported, or when both are ok and
max_ulp_err_b > max_ulp_err_a * (1 + R) + X (a missing error counts as infinitely large); improved
is the mirror image; any other change of status is "status changed". The two sweep.json files may
differ only in SAME_ANYWHERE unless --allow-different-settings. Writes comparison.{parquet,csv,md,png}
into --out (default RUN_B/compare_<RUN_A's name>). Exit status: 0 nothing regressed, 1 something
did, 2 bad input, told in one line. Why R = 0.5 and X = 1 ulp: docs/pages/how-to/compare-runs.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from harness.cli import OneLineParser, non_negative
from harness.losses import DEFAULT
from harness.outputs import tables
from harness.sweep import metrics
from harness.sweep.journal import setting_columns

ERRORS_FILE = "errors.parquet"
REQUIRED_COLUMNS = ("status", "max_ulp_err")
COMPARED_COLUMNS = ("status", "max_ulp_err", "median_ulp_err", "n_nonfinite", "message")  # each gets _a and _b
DEFAULT_REL_TOLERANCE = 0.5
DEFAULT_ULP_TOLERANCE = 1.0

REGRESSED, STATUS_CHANGED, IMPROVED, UNCHANGED = "regressed", "status changed", "improved", "unchanged"
CHANGES = (REGRESSED, STATUS_CHANGED, IMPROVED, UNCHANGED)  # also the order of the written table
NOT_OK = metrics.FAILED + (metrics.UNSUPPORTED,)  # the path did not give a usable loss
WORST_SHOWN = 10
SETTINGS_FILE = "sweep.json"
# settings two compared runs may differ in: what is compared across, or what leaves errors.parquet unchanged
SAME_ANYWHERE = ("experiment", "device", "progress", "timing", "gradient", "row_errors", "bits_lost_limit")


class BadInput(Exception):
    """An input the comparison cannot use; its message is the one line printed after 'error: '."""


# a setting a run recorded before it existed has this value (sweep.json without `loss`: cross-entropy)
SETTING_DEFAULTS = {"loss": DEFAULT}


def with_loss(errors: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    """An errors table written before the `loss` column, with it where the other has it: every cell
    of the default loss."""
    return errors.assign(loss=DEFAULT) if "loss" in other and "loss" not in errors else errors


def key_columns(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    """The key columns (harness.outputs.tables.KEY_COLUMNS, read now, and the losses' own settings) that
    both tables carry."""
    return [c for c in (*tables.KEY_COLUMNS, *setting_columns()) if c in a.columns and c in b.columns]


def describe_key(row, key: list[str]) -> str:
    return ", ".join(f"{c}={row[c]}" for c in key)


def grown_beyond(before: pd.Series, after: pd.Series, rel_tolerance: float, ulp_tolerance: float) -> pd.Series:
    """after > before * (1 + rel) + ulp, a missing (NaN) error counting as infinite."""
    before = before.astype("float64").fillna(math.inf)
    after = after.astype("float64").fillna(math.inf)
    return after > before * (1 + rel_tolerance) + ulp_tolerance


def classify_change(
    status_a: pd.Series,
    status_b: pd.Series,
    max_ulp_err_a: pd.Series,
    max_ulp_err_b: pd.Series,
    rel_tolerance: float = DEFAULT_REL_TOLERANCE,
    ulp_tolerance: float = DEFAULT_ULP_TOLERANCE,
) -> pd.Series:
    """regressed / improved / status changed / unchanged per cell, by the rule in the module docstring."""
    ok_a, ok_b = status_a == metrics.OK, status_b == metrics.OK
    both_ok = ok_a & ok_b
    regressed = (ok_a & status_b.isin(NOT_OK)) | (
        both_ok & grown_beyond(max_ulp_err_a, max_ulp_err_b, rel_tolerance, ulp_tolerance)
    )
    improved = (status_a.isin(NOT_OK) & ok_b) | (
        both_ok & grown_beyond(max_ulp_err_b, max_ulp_err_a, rel_tolerance, ulp_tolerance)
    )
    change = pd.Series(UNCHANGED, index=status_a.index, dtype=object)
    change[status_a != status_b] = STATUS_CHANGED
    change[improved] = IMPROVED
    change[regressed] = REGRESSED
    return change


def ulp_err_ratio(comparison: pd.DataFrame) -> pd.Series:
    """max_ulp_err_b / max_ulp_err_a where both runs are ok: 1 where both errors are 0, inf where only A's is;
    NaN where a run is not ok or an error is missing."""
    a, b = comparison["max_ulp_err_a"].astype("float64"), comparison["max_ulp_err_b"].astype("float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (b / a).mask((a == 0) & (b == 0), 1.0)
    both_ok = (comparison["status_a"] == metrics.OK) & (comparison["status_b"] == metrics.OK)
    return ratio.where(both_ok)


def worst_first(comparison: pd.DataFrame) -> pd.DataFrame:
    """Regressed, status changed, improved, unchanged; within each, status changes first, then the
    largest move of the error (|log ulp_err_ratio|), ties in the order given."""
    with np.errstate(divide="ignore"):
        move = np.abs(np.log(comparison["ulp_err_ratio"].astype("float64")))
    order = comparison.assign(
        _change=comparison["change"].map(CHANGES.index),
        _same_status=comparison["status_a"] == comparison["status_b"],
        _move=-move,
    ).sort_values(["_change", "_same_status", "_move"], kind="stable", na_position="last")
    return comparison.loc[order.index].reset_index(drop=True)


def check_cells(frame: pd.DataFrame, key: list[str], run: str) -> None:
    """One row per cell and the columns the comparison needs, or BadInput naming what is wrong."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise BadInput(f"{run}'s errors table lacks the column(s) {', '.join(missing)}")
    if frame.empty:
        raise BadInput(f"{run}'s errors table holds no cells")
    duplicated = frame[frame.duplicated(key, keep=False)]
    if not duplicated.empty:
        example = describe_key(duplicated.iloc[0], key)
        raise BadInput(
            f"{run}'s errors table has {len(duplicated)} rows sharing a key ({', '.join(key)}), e.g. {example}"
        )


def check_same_grid(a: pd.DataFrame, b: pd.DataFrame, key: list[str]) -> None:
    """Both runs hold the same cells, or BadInput saying how many are in one only, with an example key."""
    try:
        present = a[key].merge(b[key], how="outer", on=key, indicator=True)
    except ValueError as exc:  # key columns of incompatible types, e.g. numbers in one and text in the other
        raise BadInput(f"the key columns of the two tables do not match: {exc}") from exc
    only_a, only_b = present[present["_merge"] == "left_only"], present[present["_merge"] == "right_only"]
    if only_a.empty and only_b.empty:
        return
    examples = [
        f"{which}: {describe_key(cells.iloc[0], key)}" for which, cells in (("A", only_a), ("B", only_b)) if len(cells)
    ]
    raise BadInput(
        f"mismatched grids: {len(only_a)} cells only in RUN_A, {len(only_b)} only in RUN_B "
        f"(e.g. only in {'; only in '.join(examples)})"
    )


def different_settings(a: dict, b: dict) -> list[str]:
    """Keys of two runs' sweep.json that differ, beyond those a comparison may differ in (SAME_ANYWHERE)."""
    a, b = SETTING_DEFAULTS | a, SETTING_DEFAULTS | b
    return sorted(k for k in a.keys() | b.keys() if k not in SAME_ANYWHERE and a.get(k) != b.get(k))


def read_settings(run_dir: Path) -> dict | None:
    path = run_dir / SETTINGS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def check_same_settings(run_a: Path, run_b: Path) -> None:
    """BadInput naming the settings the two runs differ in, where both record them."""
    a, b = read_settings(run_a), read_settings(run_b)
    if a is None or b is None:
        return
    keys = different_settings(a, b)
    if keys:
        shown = "; ".join(f"{k}: A {json.dumps(a.get(k))}, B {json.dumps(b.get(k))}" for k in keys)
        raise BadInput(
            f"the runs differ in settings other than the grid: {', '.join(keys)} ({shown}); "
            "compare them anyway with --allow-different-settings"
        )


def compare_errors(
    a: pd.DataFrame,
    b: pd.DataFrame,
    rel_tolerance: float = DEFAULT_REL_TOLERANCE,
    ulp_tolerance: float = DEFAULT_ULP_TOLERANCE,
) -> pd.DataFrame:
    """Every cell of two errors tables side by side, with its change from A (baseline) to B.

    Columns: the shared key columns, change, status_a, status_b, max_ulp_err_a, max_ulp_err_b,
    ulp_err_ratio (b / a where both ok), then median_ulp_err, n_nonfinite and message with _a and _b,
    where present. Rows in worst_first order. Raises BadInput for missing columns, duplicate or
    mismatched cells.
    """
    a, b = with_loss(a, b), with_loss(b, a)
    key = key_columns(a, b)
    if not key:
        raise BadInput(f"the two tables share none of the key columns {', '.join(tables.KEY_COLUMNS)}")
    check_cells(a, key, "RUN_A")
    check_cells(b, key, "RUN_B")
    check_same_grid(a, b, key)
    compared = [c for c in COMPARED_COLUMNS if c in a.columns and c in b.columns]
    cells = a[key + compared].merge(b[key + compared], on=key, how="left", suffixes=("_a", "_b"), validate="1:1")
    cells["change"] = classify_change(
        cells["status_a"],
        cells["status_b"],
        cells["max_ulp_err_a"],
        cells["max_ulp_err_b"],
        rel_tolerance,
        ulp_tolerance,
    )
    cells["ulp_err_ratio"] = ulp_err_ratio(cells)
    side_by_side = [f"{c}_{run}" for c in compared if c not in REQUIRED_COLUMNS for run in ("a", "b")]
    cells = cells[
        key + ["change", "status_a", "status_b", "max_ulp_err_a", "max_ulp_err_b", "ulp_err_ratio"] + side_by_side
    ]
    return worst_first(cells)


def changed_cells(comparison: pd.DataFrame) -> pd.DataFrame:
    return comparison[comparison["change"] != UNCHANGED].reset_index(drop=True)


def _fmt(value) -> str:
    if isinstance(value, float | np.floating):
        return "-" if np.isnan(value) else f"{value:.3g}"
    return str(value)


def summary_markdown(
    comparison: pd.DataFrame, run_a: Path, run_b: Path, rel_tolerance: float, ulp_tolerance: float
) -> str:
    """Counts per change, the status transitions, and the worst regressions as a Markdown table."""
    counts = comparison["change"].value_counts()
    lines = [
        f"# Comparison of {run_b} (B) against {run_a} (A, baseline)",
        "",
        f"{len(comparison)} cells: " + ", ".join(f"{int(counts.get(c, 0))} {c}" for c in CHANGES) + ".",
        f"Regressed: status ok -> {', '.join(NOT_OK)}; or both ok and "
        f"max_ulp_err_b > max_ulp_err_a * {1 + rel_tolerance:g} + {ulp_tolerance:g}.",
    ]
    moved = comparison[comparison["status_a"] != comparison["status_b"]]
    if not moved.empty:
        transitions = moved.groupby(["status_a", "status_b", "change"], sort=False).size()
        rows = [[sa, sb, change, str(n)] for (sa, sb, change), n in transitions.items()]
        lines += [
            "",
            f"## Status changes: {len(moved)} cells, each counted above under its change",
            "",
            tables.markdown_table(["status_a", "status_b", "change", "cells"], rows),
        ]
    regressed = comparison[comparison["change"] == REGRESSED]
    if not regressed.empty:
        key = [c for c in (*tables.KEY_COLUMNS, *setting_columns()) if c in comparison.columns]
        shown = ["status_a", "status_b", "max_ulp_err_a", "max_ulp_err_b", "ulp_err_ratio"]
        rows = [[_fmt(row[c]) for c in key + shown] for _, row in regressed.head(WORST_SHOWN).iterrows()]
        title = (
            "Worst regressions"
            if len(regressed) <= WORST_SHOWN
            else f"Worst {WORST_SHOWN} of {len(regressed)} regressions"
        )
        lines += ["", f"## {title}", "", tables.markdown_table(key + shown, rows)]
    return "\n".join(lines) + "\n"


CHANGE_COLORS = {REGRESSED: "tab:red", STATUS_CHANGED: "tab:orange", IMPROVED: "tab:green", UNCHANGED: "0.7"}
STATUS_MARKERS = {metrics.OK: "o", metrics.INF: "x", metrics.NAN: "D", metrics.ERROR: "*", metrics.UNSUPPORTED: "s"}


def write_comparison_plot(comparison: pd.DataFrame, out: Path, rel_tolerance: float, ulp_tolerance: float) -> None:
    """max_ulp_err in A against B, log-log, one point per cell, coloured by change.

    A cell not ok in a run is drawn in that run's band at the top (B) or right (A); its marker is the
    status that is not ok (x inf, D nan, * error, s unsupported, v input_inf), o where both are ok.
    """
    from harness.outputs.plots import LOSS_ULPS
    from harness.outputs.styles import new_figure

    floor = LOSS_ULPS.floor  # the same floor as the error plots

    ok_a, ok_b = comparison["status_a"] == metrics.OK, comparison["status_b"] == metrics.OK
    measured = pd.concat([comparison.loc[ok_a, "max_ulp_err_a"], comparison.loc[ok_b, "max_ulp_err_b"]]).dropna()
    measured = measured[np.isfinite(measured)]
    top = max(10.0 ** np.ceil(np.log10(max(measured.max() if not measured.empty else 1.0, 1.0))) * 100, 1e3)
    band = top / 3  # where cells that are not ok sit
    x = comparison["max_ulp_err_a"].astype("float64").fillna(band).clip(floor, band).where(ok_a, band)
    y = comparison["max_ulp_err_b"].astype("float64").fillna(band).clip(floor, band).where(ok_b, band)
    shown_status = comparison["status_b"].where(~ok_b, comparison["status_a"])

    fig = new_figure(8.2, 6.0, layout=None)  # no pyplot: no backend to set, no global figure state
    ax = fig.add_subplot()
    line = np.logspace(np.log10(floor), np.log10(top), 200)
    ax.plot(line, line, color="0.5", linewidth=0.8, label="B = A")
    ax.plot(line, line * (1 + rel_tolerance) + ulp_tolerance, color="tab:red", linestyle="--", linewidth=0.8)
    ax.plot(line, (line - ulp_tolerance) / (1 + rel_tolerance), color="tab:green", linestyle="--", linewidth=0.8)
    ax.axhspan(band / 2, top, color="0.93", zorder=0)
    ax.axvspan(band / 2, top, color="0.93", zorder=0)
    for change in reversed(CHANGES):  # changed cells drawn on top
        for status in shown_status[comparison["change"] == change].unique():
            picked = (comparison["change"] == change) & (shown_status == status)
            marker = STATUS_MARKERS.get(status, "v")
            ax.scatter(
                x[picked],
                y[picked],
                marker=marker,
                s=14 if change == UNCHANGED else 36,
                color=CHANGE_COLORS[change],
                facecolors="none" if marker in "oDsv" else None,
                linewidths=1.0,
                label=f"{change} ({status})" if status != metrics.OK else change,
                zorder=1 if change == UNCHANGED else 3,
            )
    ax.set(xscale="log", yscale="log", xlim=(floor / 2, top), ylim=(floor / 2, top))
    ax.set(xlabel="max ulp error in A (baseline); right band: not ok", ylabel="max ulp error in B; top band: not ok")
    ax.set_title(
        f"{len(changed_cells(comparison))} of {len(comparison)} cells changed (dashed: tolerance)", fontsize=10
    )
    ax.grid(True, which="major", alpha=0.3)
    ax.text(floor, band, "not ok in B", fontsize=8, va="center", color="0.4")
    ax.text(band, floor, "not ok in A", fontsize=8, ha="center", rotation=90, color="0.4")
    fig.legend(fontsize=7, loc="center left", bbox_to_anchor=(0.78, 0.5), frameon=False)
    fig.tight_layout(rect=(0, 0, 0.78, 1))
    tables.atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


def read_errors(run_dir: Path, run: str) -> pd.DataFrame:
    """RUN_X/errors.parquet, or BadInput saying why not."""
    if not run_dir.exists():
        raise BadInput(f"{run} folder not found: {run_dir}")
    if not run_dir.is_dir():
        raise BadInput(f"{run} is not a folder: {run_dir}")
    path = run_dir / ERRORS_FILE
    if not path.is_file():
        raise BadInput(f"{run} folder {run_dir} has no {ERRORS_FILE} (not a run folder, or the run did not finish)")
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BadInput(f"cannot read {path}: {reason}") from exc


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m harness.tools.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_a", metavar="RUN_A", type=Path, help="baseline run folder (holds errors.parquet)")
    p.add_argument("run_b", metavar="RUN_B", type=Path, help="run folder compared against the baseline")
    p.add_argument(
        "--ulp-tolerance",
        type=non_negative,
        default=DEFAULT_ULP_TOLERANCE,
        metavar="X",
        help=f"ulps an error may grow by, on top of the relative tolerance (default {DEFAULT_ULP_TOLERANCE:g})",
    )
    p.add_argument(
        "--rel-tolerance",
        type=non_negative,
        default=DEFAULT_REL_TOLERANCE,
        metavar="R",
        help=f"fraction an error may grow by (default {DEFAULT_REL_TOLERANCE:g}: up to x{1 + DEFAULT_REL_TOLERANCE:g})",
    )
    p.add_argument("--out", type=Path, metavar="DIR", help="output folder (default RUN_B/compare_<RUN_A folder name>)")
    p.add_argument(
        "--allow-different-settings",
        action="store_true",
        help=f"compare runs whose {SETTINGS_FILE} differ beyond the grid (e.g. label or seed)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        a = read_errors(args.run_a, "RUN_A")
        b = read_errors(args.run_b, "RUN_B")
        if not args.allow_different_settings:
            check_same_settings(args.run_a, args.run_b)
        comparison = compare_errors(a, b, args.rel_tolerance, args.ulp_tolerance)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or args.run_b / f"compare_{args.run_a.resolve().name}"
    summary = summary_markdown(comparison, args.run_a, args.run_b, args.rel_tolerance, args.ulp_tolerance)
    tables.write_table(changed_cells(comparison), out / "comparison")
    tables.write_text(summary, out / "comparison.md")
    write_comparison_plot(comparison, out / "comparison.png", args.rel_tolerance, args.ulp_tolerance)
    print(summary + f"\nresults in {out}")
    return 1 if (comparison["change"] == REGRESSED).any() else 0


if __name__ == "__main__":
    sys.exit(main())
