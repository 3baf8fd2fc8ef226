"""A version matrix's tables, plots and report, from the run folders of its version sets alone.

matrix: one row per cell and version set. changes: the cells that moved between consecutive version
sets, judged by harness.tools.compare's rule and tolerances and told in its words (regressed, status
changed, improved), regressions first and each kind largest move first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from harness.files import atomic_write, write_table, write_text
from harness.outputs import tables
from harness.sweep import metrics
from harness.sweep.journal import setting_columns
from harness.tools import compare

MATRIX_COLUMNS = ("status", "max_ulp_err", "median_ulp_err", "n_nonfinite", "message")
BREAK_COLUMNS = ("first_fail_scale", "break_scale_lo", "break_scale_hi", "first_bits_lost_scale")
SHOWN_CHANGES = 15


def key_of(frame: pd.DataFrame) -> list[str]:
    """What names a cell: the key columns and the loss options the table has."""
    return [c for c in (*tables.KEY_COLUMNS, *tables.OPTION_COLUMNS, *setting_columns()) if c in frame.columns]


def option_groups(a: pd.DataFrame, b: pd.DataFrame):
    """(options, the part of a, the part of b) per set of loss options, which compare's key leaves out."""
    varying = [c for c in tables.OPTION_COLUMNS if c in a.columns and c in b.columns]
    varying = [c for c in varying if pd.concat([a[c], b[c]]).astype(str).nunique() > 1]
    if not varying:
        yield {}, a, b
        return
    for values, part in a.groupby(varying, sort=False, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        same = pd.Series(True, index=b.index)
        for column, value in zip(varying, values, strict=True):
            same &= b[column].isna() if pd.isna(value) else b[column] == value
        yield dict(zip(varying, values, strict=True)), part, b[same]


def with_breaks(errors: pd.DataFrame, breakdown: pd.DataFrame | None) -> pd.DataFrame:
    """The errors rows with their group's break scales from breakdown.parquet, where it has them."""
    if breakdown is None or breakdown.empty:
        return errors.assign(**{c: np.nan for c in BREAK_COLUMNS})
    group = [c for c in breakdown.columns if c in errors.columns and c not in BREAK_COLUMNS and c != "scale"]
    group = [c for c in group if c in tables.KEY_COLUMNS or c in tables.OPTION_COLUMNS or c == "device"]
    present = [c for c in BREAK_COLUMNS if c in breakdown.columns]
    merged = errors.merge(breakdown[group + present].drop_duplicates(group), on=group, how="left")
    return merged.assign(**{c: np.nan for c in BREAK_COLUMNS if c not in present})


def set_rows(run_dir: Path) -> pd.DataFrame | None:
    """A finished run's errors with break scales, or None where the run left no errors table."""
    if not (run_dir / compare.ERRORS_FILE).is_file():
        return None
    errors = pd.read_parquet(run_dir / compare.ERRORS_FILE)
    breakdown_file = run_dir / "breakdown.parquet"
    return with_breaks(errors, pd.read_parquet(breakdown_file) if breakdown_file.is_file() else None)


RUN_FAILED = ""  # the key of a set's reasons that tells why its run failed


def fill_missing(frames: dict[str, pd.DataFrame | None], reasons: dict[str, dict[str, str]]) -> dict:
    """Every set's rows over the same cells: a framework that did not import in a set, or a set whose run
    failed, gets the cells the other sets hold, with status unsupported (import) or error (run) and why."""
    present = [f for f in frames.values() if f is not None]
    if not present:
        return frames
    cells = pd.concat(present, ignore_index=True)
    key = key_of(cells)
    cells = cells.drop_duplicates(key)[key]
    filled = {}
    for label, frame in frames.items():
        missing = cells if frame is None else cells.merge(frame[key], on=key, how="left", indicator=True)
        if frame is not None:
            missing = missing[missing["_merge"] == "left_only"].drop(columns="_merge")
        rows = []
        for framework, group in missing.groupby("framework", sort=False):
            why = reasons.get(label, {}).get(framework)
            failed = reasons.get(label, {}).get(RUN_FAILED) or "no row"
            status = metrics.UNSUPPORTED if why else metrics.ERROR
            rows.append(group.assign(status=status, message=why or f"the run of this version set failed: {failed}"))
        extra = pd.concat(rows, ignore_index=True) if rows else None
        parts = [p for p in (frame, extra) if p is not None and not p.empty]
        joined = pd.concat(parts, ignore_index=True) if parts else cells.iloc[:0]
        filled[label] = joined.reindex(columns=list(dict.fromkeys([*joined.columns, *MATRIX_COLUMNS])))
    return filled


def matrix_frame(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per cell and version set, sets in matrix order."""
    parts = []
    for order, (label, frame) in enumerate(frames.items()):
        key = key_of(frame)
        shown = [c for c in (*MATRIX_COLUMNS, *BREAK_COLUMNS) if c in frame.columns]
        parts.append(frame[key + shown].assign(version_set=label, set_order=order))
    matrix = pd.concat(parts, ignore_index=True)
    first = ["version_set", "set_order"]
    return matrix[first + [c for c in matrix.columns if c not in first]]


def changes_frame(frames: dict[str, pd.DataFrame], rel_tolerance: float, ulp_tolerance: float) -> pd.DataFrame:
    """The cells that moved between each pair of consecutive sets, by compare's rule, in its order."""
    labels = list(frames)
    parts = []
    for before, after in zip(labels, labels[1:], strict=False):
        for options, a, b in option_groups(frames[before], frames[after]):
            comparison = compare.compare_errors(a, b, rel_tolerance, ulp_tolerance)
            parts.append(compare.changed_cells(comparison).assign(set_a=before, set_b=after, **options))
    changes = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if changes.empty:
        return changes
    changes = compare.worst_first(changes)
    first = ["change", "set_a", "set_b"]
    return changes[first + [c for c in changes.columns if c not in first]]


def _fmt(value) -> str:
    if isinstance(value, float | np.floating):
        return "-" if np.isnan(value) else f"{value:.3g}"
    return str(value)


def changes_markdown(changes: pd.DataFrame, n_cells: int, labels: list[str], tolerances: tuple[float, float]) -> str:
    """The changes, counted per kind, and the largest SHOWN_CHANGES of them as a table."""
    rel, ulp = tolerances
    lines = [f"# Changes across {' -> '.join(labels)}", ""]
    counts = changes["change"].value_counts() if not changes.empty else pd.Series(dtype=int)
    told = ", ".join(f"{int(counts.get(c, 0))} {c}" for c in compare.CHANGES[:-1])
    lines += [
        f"{n_cells} cells per version set; between consecutive sets: {told}.",
        f"Regressed: status ok -> {', '.join(compare.NOT_OK)}; or both ok and "
        f"max_ulp_err_b > max_ulp_err_a * {1 + rel:g} + {ulp:g} (harness.tools.compare's rule).",
    ]
    if changes.empty:
        return "\n".join(lines + ["", "No cell changed."]) + "\n"
    key = [c for c in ("loss", "framework", "path", "dtype", "family", "scale") if c in changes.columns]
    key = [c for c in key if c != "loss" or changes[c].nunique() > 1]  # the loss where several are swept
    shown = ["change", "set_a", "set_b", *key, "status_a", "status_b", "max_ulp_err_a", "max_ulp_err_b"]
    shown.append("ulp_err_ratio")
    rows = [[_fmt(row[c]) for c in shown] for _, row in changes.head(SHOWN_CHANGES).iterrows()]
    title = "All changes" if len(changes) <= SHOWN_CHANGES else f"The {SHOWN_CHANGES} largest of {len(changes)}"
    return "\n".join(lines + ["", f"## {title}", "", tables.markdown_table(shown, rows)]) + "\n"


PLOT_GROUP = ("framework", "path", "dtype")


def plot_name(group: tuple) -> str:
    return "error_vs_scale_" + "_".join(str(v) for v in group) + ".png"


def write_plots(matrix: pd.DataFrame, changes: pd.DataFrame, out: Path) -> list[Path]:
    """Per changed (framework, path, dtype): max ulp error against scale, one line per version set, one
    panel per family; a cell that is not ok is drawn as its status's marker in a band at the top."""
    from harness.outputs.plots import LOSS_ULPS
    from harness.outputs.styles import new_figure

    if changes.empty or "scale" not in matrix.columns:
        return []
    written = []
    several_losses = "loss" in changes.columns and "loss" in matrix.columns and matrix["loss"].nunique() > 1
    by = ["loss", *PLOT_GROUP] if several_losses else list(PLOT_GROUP)
    for group in changes[by].drop_duplicates().itertuples(index=False):
        cells = matrix.loc[(matrix[by] == pd.Series(group, index=by)).all(axis=1)]
        families = list(dict.fromkeys(cells["family"]))
        ok = cells["status"] == metrics.OK
        measured = cells.loc[ok, "max_ulp_err"].replace([np.inf], np.nan).dropna()
        top = max(float(measured.max()) if not measured.empty else 1.0, 1.0) * 30
        fig = new_figure(4.2 * len(families) + 1.8, 3.8, layout=None)
        axes = fig.subplots(1, len(families), squeeze=False)[0]
        lines = [c for c in key_of(cells) if c not in (*by, "family", "scale") and cells[c].nunique() > 1]
        for ax, family in zip(axes, families, strict=True):
            in_family = cells[cells["family"] == family]
            for order, (label, one) in enumerate(in_family.groupby("version_set", sort=False)):
                for extra, line in one.groupby(lines, sort=False, dropna=False) if lines else [((), one)]:
                    line = line.sort_values("scale")
                    good = line["status"] == metrics.OK
                    name = label + ("" if not lines else f" ({', '.join(map(str, np.atleast_1d(extra)))})")
                    y = line["max_ulp_err"].where(good).clip(lower=LOSS_ULPS.floor)
                    drawn = ax.plot(line["scale"], y, marker="o", markersize=3, label=name, zorder=3 + order)
                    bad = line[~good]
                    for status, points in bad.groupby("status"):
                        marker = compare.STATUS_MARKERS.get(status, "v")
                        ax.scatter(points["scale"], [top] * len(points), marker=marker, color=drawn[0].get_color())
            ax.set(xscale="log", yscale="log", xlabel="scale", title=f"family {family}")
            ax.axhline(top, color="0.85", linewidth=6, zorder=0)
            ax.grid(True, which="major", alpha=0.3)
        axes[0].set_ylabel("max ulp error (band at top: not ok)")
        fig.suptitle(" / ".join(map(str, group)), fontsize=10)
        axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
        fig.tight_layout()
        path = out / "plots" / plot_name(tuple(group))
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp, fig=fig: fig.savefig(tmp, dpi=100, format="png"))
        written.append(path)
    return written


def report_markdown(changes_md: str, sets: pd.DataFrame, plots: list[Path], out: Path, command: str) -> str:
    """What changed first, then the plots, then each version set's environment and cost."""
    lines = [changes_md.rstrip(), ""]
    if plots:
        lines += ["## Error against scale, per changed framework/path/dtype", ""]
        lines += [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in plots] + [""]
    lines += ["## Version sets", "", f"Command: `{command}`", ""]
    shown = ["version_set", "imports", "outcome", "env_created", "env_seconds", "probe_seconds", "run_seconds"]
    shown.append("unsupported_frameworks")
    shown = [c for c in shown if c in sets.columns]
    rows = [[_fmt(row[c]) if c.endswith("seconds") else str(row[c]) for c in shown] for _, row in sets.iterrows()]
    lines += [tables.markdown_table(shown, rows), ""]
    lines += ["Tables: matrix.parquet/.csv (one row per cell and version set), changes.csv; each set's run folder."]
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, labels: list[str], reasons: dict, sets: pd.DataFrame, tolerances, command: str) -> int:
    """Every table, plot and the report of the matrix in `out`; the number of regressed cells."""
    frames = fill_missing({label: set_rows(out / label) for label in labels}, reasons)
    frames = {label: frame for label, frame in frames.items() if frame is not None}
    if len(frames) < len(labels) or any(f.empty for f in frames.values()):
        raise compare.BadInput("no version set produced an errors table (see each set's harness.log)")
    matrix = matrix_frame(frames)
    changes = changes_frame(frames, *tolerances)
    write_table(matrix, out / "matrix")
    write_table(changes, out / "changes")
    changes_md = changes_markdown(changes, len(next(iter(frames.values()))), labels, tolerances)
    write_text(changes_md, out / "changes.md")
    plots = write_plots(matrix, changes, out)
    write_table(sets, out / "sets")
    write_text(report_markdown(changes_md, sets, plots, out, command), out / "report.md")
    return int((changes["change"] == compare.REGRESSED).sum()) if not changes.empty else 0
