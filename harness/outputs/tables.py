"""Tidy tables: the errors table's columns, atomic writing, and the Markdown summary."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness import losses
from harness.files import atomic_write, write_table, write_text  # noqa: F401 (outputs write through these)
from harness.sweep import metrics
from harness.sweep.journal import KEY_COLUMNS, OPTION_COLUMNS, setting_columns

# what a cell records beside its key: device, theory's mechanisms, the backend's measured facts, the
# quantities theory's thresholds are stated in, the status
CELL_COLUMNS = ("device", "mechanisms", "flushes_subnormals", "exp_dtype", "exp_overflow", "exp_underflow")
CELL_COLUMNS += ("quotient_flushes", "max_logit", "max_exact_loss", "max_lse", "max_class_loss")
CELL_COLUMNS += ("max_class_gap", "max_target_gap", "max_neg_target_logit", "status")
ERROR_COLUMNS = KEY_COLUMNS + OPTION_COLUMNS + CELL_COLUMNS + metrics.METRIC_COLUMNS + ("message",)
GRAD_COLUMNS = (
    KEY_COLUMNS + OPTION_COLUMNS + CELL_COLUMNS + ("gradient_by",) + metrics.GRAD_METRIC_COLUMNS + ("message",)
)
QUANTITY_COLUMNS = ("exp_overflow", "exp_underflow", "max_logit", "max_exact_loss", "max_lse", "max_class_loss")
QUANTITY_COLUMNS += ("max_class_gap", "max_target_gap", "max_neg_target_logit")
SORT_COLUMNS = ("family", "n_classes", "n_rows", "scale", "dtype", "framework", "path")


def _rank(values: pd.Series, known: list[str]) -> pd.Series:
    """Position of each value in `known`; names not in it follow, in order of first appearance."""
    ranks = {name: i for i, name in enumerate(known)}
    for name in values.unique():
        ranks.setdefault(name, len(ranks))
    return values.map(ranks)


def canonical_order(frame: pd.DataFrame, names: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """Rows in grid order, names in registry order: the same cells give the same table however run.

    `names` gives the registry order of frameworks and paths ({"framework": [...], "path": [...]});
    the sweep layer passes it (this module imports neither backends nor paths). Names not listed
    follow in sorted order, so the order never depends on how the rows arrived."""
    from harness.dtypes import DTYPES
    from harness.sweep.families import FAMILIES

    known = {"family": list(FAMILIES), "dtype": list(DTYPES)} | {
        column: list((names or {}).get(column, []))
        + sorted(set(frame[column].dropna()) - set((names or {}).get(column, [])))
        for column in ("framework", "path")
        if column in frame
    }
    settings = [c for c in setting_columns() if c in frame]  # a loss's own settings, after the family, as text
    known |= {c: sorted(set(frame[c].map(str))) for c in settings}
    by = [c for c in SORT_COLUMNS if c in frame] + (["row"] if "row" in frame else [])
    by[1:1] = settings if "family" in by else []
    keys = pd.DataFrame(
        {c: _rank(frame[c].map(str) if c in settings else frame[c], known[c]) if c in known else frame[c] for c in by}
    )
    order = keys.sort_values(by, kind="stable").index
    return frame.loc[order].reset_index(drop=True)


def loss_columns(columns, loss: str) -> tuple[str, ...]:
    """A table's columns for the loss it measures: cross-entropy's as documented; a loss measured on named
    arrays keeps the loss options it takes (reduction, and its entry's `loss_options`), then its own
    settings, and its theory quantities beside cross-entropy's (harness.losses)."""
    entry = losses.entry(loss)
    if not entry.named:
        return tuple(columns)
    taken = ("reduction", *entry.loss_options)  # reduction: every loss has one
    kept = [c for c in columns if c not in OPTION_COLUMNS or c in taken]
    at = max(kept.index(c) for c in taken) + 1
    kept[at:at] = entry.setting_names
    at = kept.index("status")
    kept[at:at] = [q for q in entry.quantities if q not in kept]
    return tuple(kept)


def table_loss(rows) -> str:
    """The one loss a table's rows measure (the default where they do not say, or mix losses)."""
    found = {row.get("loss", losses.DEFAULT) for row in rows}
    return found.pop() if len(found) == 1 else losses.DEFAULT


def errors_frame(rows: list[dict], columns=ERROR_COLUMNS, names: dict | None = None) -> pd.DataFrame:
    """Rows of cells -> an errors table (loss or gradient), documented columns, grid order, NaN if missing."""
    columns = loss_columns(columns, table_loss(rows))
    frame = canonical_order(pd.DataFrame(rows), names).reindex(columns=list(columns))
    frame["n_nonfinite"] = frame["n_nonfinite"].fillna(-1).astype("int64")
    frame["message"] = frame["message"].fillna("").astype(str)
    for column in ("framework", "path", "dtype", "family", "device", "status"):
        frame[column] = frame[column].astype(str)
    frame["exp_dtype"] = frame["exp_dtype"].fillna("").astype(str)  # empty where the path never ran
    frame["flushes_subnormals"] = frame["flushes_subnormals"].astype("boolean")  # empty where the path never ran
    frame["quotient_flushes"] = frame["quotient_flushes"].astype("boolean")
    for column in QUANTITY_COLUMNS:  # None where a cell has no such quantity (max_class_loss: dense targets only)
        frame[column] = pd.to_numeric(frame[column]).astype("float64")
    for column in set(columns) - set(ERROR_COLUMNS) - set(GRAD_COLUMNS):  # a loss's own settings and quantities
        if frame[column].dtype == object and frame[column].map(lambda v: v is None or isinstance(v, float)).all():
            frame[column] = pd.to_numeric(frame[column]).astype("float64")
    return frame


def loss_words(frame: pd.DataFrame) -> str:
    """The loss a table measures, in words: its entries' titles by the `loss` column where it has one (a
    name with no entry in words), else the default entry's title."""
    if "loss" not in frame or not frame["loss"].notna().any():
        return losses.entry().title
    named = dict.fromkeys(str(name) for name in frame["loss"].dropna())
    return " and ".join(losses.entry(n).title if n in losses.names() else n.replace("_", " ") for n in named)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.3g}"


def path_outcome(cells: pd.DataFrame, axis: str = "scale", finder=None) -> str:
    """One framework/path/dtype along `axis`: worst ulp error while ok, then the first failure, stated
    as the largest logit and exact loss there (bisected where `finder` has the break) beside the axis."""
    from harness.outputs.verdict import worst_ulp

    if cells.empty:
        return ""
    statuses = set(cells["status"])
    if statuses <= {metrics.UNSUPPORTED, metrics.INPUT_INF}:
        return metrics.UNSUPPORTED if metrics.UNSUPPORTED in statuses else "no finite input"
    worst = f"{_fmt(worst_ulp(cells))} ulp" if metrics.status_in(cells["status"], metrics.GOOD).any() else "never ok"
    failed = metrics.status_in(cells["status"], metrics.FAILED)
    if not failed.any():
        return f"{worst}; never fails"
    found = finder.earliest(cells) if finder is not None and axis == "scale" else None
    if found is not None:
        return f"{worst}; {found.status} from {found.words()}"
    first = cells[failed].sort_values(axis).iloc[0]
    where = f"scale {_fmt(first['scale'])}" if axis == "scale" else f"{_fmt(first[axis])} {axis.removeprefix('n_')}"
    logit, loss = _fmt(first["max_logit"]), _fmt(first["max_exact_loss"])
    return f"{worst}; {first['status']} from largest logit {logit} (loss {loss}), {where}"


def outcome_table(cells: pd.DataFrame, axis: str, finder=None) -> str:
    """framework/path x dtype table of path_outcome, in the order the cells came."""
    dtypes = list(dict.fromkeys(cells["dtype"]))
    grouped = cells.groupby(["framework", "path", "dtype"], sort=False)  # one pass, not a filter per dtype
    outcomes = {key: path_outcome(of_cell, axis, finder) for key, of_cell in grouped}
    paths = dict.fromkeys(zip(cells["framework"], cells["path"], strict=True))
    rows = [[f"{f}/{p}"] + [outcomes.get((f, p, d), "") for d in dtypes] for f, p in paths]
    return markdown_table(["framework/path", *dtypes], rows)


def _input_inf_note(cells: pd.DataFrame, axis: str) -> list[str]:
    skipped = cells[cells["status"] == metrics.INPUT_INF].groupby("dtype", sort=False)[axis].min()
    if skipped.empty:
        return []
    where = ", ".join(f"in {dtype} from {axis} {_fmt(value)}" for dtype, value in skipped.items())
    return ["", f"Inputs not finite (status input_inf) {where}."]


def _grid_words(errors: pd.DataFrame, sweep) -> str:
    """What each cell holds: the generated families' shape, label and seed; the given families' own data."""
    from harness.sweep.families import GIVEN_FAMILIES

    given = [f for f in dict.fromkeys(errors["family"]) if f in GIVEN_FAMILIES]
    made = errors[~errors["family"].isin(GIVEN_FAMILIES)]
    parts = []
    if not made.empty:
        rows = ", ".join(str(n) for n in sorted(made["n_rows"].unique()))
        classes = ", ".join(str(n) for n in sorted(made["n_classes"].unique()))
        parts.append(f"{rows} rows x {classes} classes per cell, label={sweep.label}, seed={sweep.seed}")
    for family in given:
        of_family = errors[errors["family"] == family].iloc[0]
        parts.append(
            f"family {family}: its {of_family['n_rows']} x {of_family['n_classes']} logits and labels as given"
        )
    scales = sorted(errors["scale"].unique())
    span = (
        f"scale {_fmt(scales[0])}"
        if len(scales) == 1
        else f"{len(scales)} scales from {_fmt(scales[0])} to {_fmt(scales[-1])}"
    )
    return "; ".join(parts) + f"; {span}."


def summary_markdown(errors: pd.DataFrame, sweep, breaks: pd.DataFrame | None = None) -> str:
    """Per family (and scale, when class counts vary): worst ulp error over ok cells, the first failure
    as the largest logit and loss there (bisected where `breaks` has it), and which path to use."""
    from harness.outputs.headlines import path_stats, recommendation
    from harness.outputs.theory import bits_lost_limits, object_strings
    from harness.outputs.verdict import BreakFinder

    finder = BreakFinder(errors, breaks, None)
    lines = [
        f"# {sweep.experiment}: {loss_words(errors)} error against the exact reference",
        "",
        _grid_words(errors, sweep),
        "Each entry: worst max_ulp_err over the cells with status ok; then the first failure (status inf, nan or",
        "error): the largest logit and exact loss there, at the bisected break where located, and its scale (or",
        "class count); or 'never fails'.",
    ]
    for family, cells in object_strings(errors).groupby("family", sort=False):
        if cells["n_classes"].nunique() == 1:
            shape = f"{cells['n_rows'].iloc[0]} x {cells['n_classes'].iloc[0]}"
            lines += ["", f"## family {family} ({shape}), along scale", "", outcome_table(cells, "scale", finder)]
            lines += _input_inf_note(cells, "scale")
            continue
        for scale, at_scale in cells.groupby("scale"):
            lines += ["", f"## family {family}, scale {_fmt(scale)}, along n_classes", ""]
            lines += [outcome_table(at_scale, "n_classes"), *_input_inf_note(at_scale, "n_classes")]
    limits = bits_lost_limits(errors, getattr(sweep, "bits_lost_limit", None))
    stats = path_stats(errors[errors["status"] != metrics.UNSUPPORTED], finder, limits) if len(errors) else []
    if stats:
        lines += ["", recommendation(stats)]
    return "\n".join(lines) + "\n"


def in_multirun(run_dir) -> bool:
    """A job folder of a multirun: Hydra's multirun.yaml lies beside it (in the sweep folder)."""
    return (run_dir.parent / "multirun.yaml").is_file()


def printed_summary(run_dir, summary: str) -> str:
    """What a run prints of its summary: all of it, or one line from a job of a multirun, whose
    shards' summaries are printed once, merged, when it ends."""
    if in_multirun(run_dir):
        return f"summary of this job: {run_dir / 'summary.md'} (the merged summary follows when the multirun ends)"
    return summary


def grad_errors_frame(records: list[dict], names: dict | None = None) -> pd.DataFrame:
    """The gradient table: the cell keys of each record with its gradient metrics."""
    keys = [c for c in GRAD_COLUMNS if c not in metrics.GRAD_METRIC_COLUMNS + ("status", "message")]
    rows = [{k: r["cell"].get(k) for k in keys} | r["grad"] for r in records if "grad" in r]
    return errors_frame(rows, GRAD_COLUMNS, names)


def row_errors_frame(records: list[dict], names: dict | None = None) -> pd.DataFrame:
    """One row per (cell, logit row) from the journal's records that carry per-row errors."""
    frames = [
        pd.DataFrame({k: r["cell"][k] for k in KEY_COLUMNS} | {k: r["cell"].get(k) for k in OPTION_COLUMNS} | r["rows"])
        for r in records
        if "rows" in r
    ]
    return canonical_order(pd.concat(frames, ignore_index=True), names) if frames else pd.DataFrame()
