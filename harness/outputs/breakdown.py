"""Breakdown points: where each path first fails or loses accuracy, next to the theory of why.

Each path's mechanisms (harness.mechanisms: sum overflow, target underflow, exp overflow, other-class
underflow) put a threshold on a quantity the errors table records per cell (`max_lse`,
`max_exact_loss`, `max_logit`, `max_target_gap`, ...), taken at the facts each backend measured.
The measured break lies between the last good scale and the first failing one (status inf, nan or
error; a correctly rounded inf or 0 is no failure): the bisection's bracket from the run's `breaks`
table where there is one, else the two grid cells. Theory agrees when one of the path's mechanisms
has its threshold within 1% of the quantity measured there, and none was passed (by more than 1%)
before it; or when neither theory nor measurement breaks within the grid. A disagreement is
explained by a measured fact (subnormals flushed, the dtype the path accumulates in) that puts a
threshold at the break, or else by the numbers alone. The reasoning: docs/pages/explanation/theory.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from harness import losses
from harness.mechanisms import (  # noqa: F401 (re-exported: the breakdown's public theory)
    SUM_OVERFLOW,
    TARGET_UNDERFLOW,
    THEORY_QUANTITIES,
    failure_mechanisms,
    overflow_threshold,
    threshold,
    underflow_threshold,
)
from harness.outputs import named_breakdown, tables
from harness.outputs.explain import (  # noqa: F401 (re-exported for the findings)
    QUANTITY_WORDS,
    double_rounding_facts,
    explain_agreement,
    explain_disagreement,
    facts,
    fmt_quantity,
    fmt_span,
)
from harness.outputs.theory import (  # noqa: F401 (re-exported for the plots and tests)
    FLUSHES_SUBNORMALS,
    GROUP_COLUMNS,
    NO_BREAK,
    NOT_THE_PATHS_FAILURE,
    OPTION_CELLS_NOTE,
    QUANTITIES,
    TOLERANCE,
    Break,
    ExpFacts,
    Prediction,
    default_bits_lost_limit,
    earliest,
    first_index,
    fits,
    flushes_subnormals,
    group_exp_facts,
    group_flushes,
    group_mechanisms,
    lower_bound_slack,
    measured_break,
    object_strings,
    passed_before,
    predictions,
    theory_causes,
    theory_dtype,
    unbisected_note,
    unmatched,
)
from harness.sweep import metrics
from harness.sweep.journal import setting_columns

BREAKDOWN_COLUMNS = GROUP_COLUMNS + (
    "n_scales",
    "first_fail_scale",
    "first_fail_max_logit",
    "first_fail_status",
    "bits_lost_limit",
    "first_bits_lost_scale",
    "first_bits_lost_max_logit",
    "max_bits_lost",
    "input_inf_scale",
    "exact_overflow_scale",
    "exact_underflow_scale",
    "n_unsupported",
    "flushes_subnormals",
    "theory_cause",
    "theory_quantity",
    "theory_threshold",
    "theory_scale",
    "quantity_before_fail",
    "quantity_at_fail",
    "grid_steps_off",
    "bisection",
    "break_scale_lo",
    "break_scale_hi",
    "break_quantity_lo",
    "break_quantity_hi",
    "matches_theory",
    "explanation",
)


COLUMN_DOCS = {
    "framework, path, dtype, family, device, n_rows, n_classes": "the combination (those of these columns the "
    "errors table has); one row per combination, over its grid of scales",
    "n_scales": "number of scales (cells) in the combination's grid",
    "first_fail_scale": "first grid scale whose status is inf, nan or error (empty: never fails within the grid)",
    "first_fail_max_logit": "largest rounded logit at that scale",
    "first_fail_status": "status there: inf, nan or error",
    "bits_lost_limit": "k: more than k bits lost counts as lost accuracy (default: half the significand bits)",
    "first_bits_lost_scale": "first scale losing more than k bits, bits lost = max(0, log2(2 * max_ulp_err)); "
    "a failed cell has lost every bit",
    "first_bits_lost_max_logit": "largest rounded logit at that scale",
    "max_bits_lost": "most bits lost over the cells that did not fail (ok, exact_overflow, exact_underflow)",
    "input_inf_scale": "first scale whose logits overflow the dtype (input_inf: not a failure of the path)",
    "exact_overflow_scale, exact_underflow_scale": "first scale where the path's inf, resp. 0, is the correctly "
    "rounded exact loss (not a failure)",
    "n_unsupported": "cells the framework cannot run (unsupported: not a failure of the path)",
    "flushes_subnormals": "whether the framework flushes subnormal results to zero in this dtype on this device, "
    "as measured by its backend (the errors table's column)",
    "theory_cause": "mechanism theory says breaks the path: sum overflow, target underflow, or none; where the "
    "break was measured, the mechanism whose threshold lies at it, if any",
    "theory_quantity": "errors-table column its threshold is stated in: max_lse (else max_logit, a lower "
    "bound), max_exact_loss, or the exp's argument where its measured underflow sets the threshold "
    "(max_target_gap, max_neg_target_logit)",
    "theory_threshold": "ln(largest finite + half an ulp) for sum overflow; -ln(smallest subnormal / 2), or "
    "-ln(smallest normal) where subnormals flush, for target underflow",
    "theory_scale": "first grid scale at which the quantity passes the threshold (empty: not within the grid)",
    "quantity_before_fail, quantity_at_fail": "the quantity at the grid scale before the first failure and at it",
    "grid_steps_off": "grid steps from the predicted to the measured break (negative: broke earlier)",
    "bisection": "how the break was located: bisected (halvings, runs of the path), or why not (never fails, "
    "fails at the first scale; grid only where the folder has no breaks table)",
    "break_scale_lo, break_scale_hi": "the last good and the first failing scale, within 1e-4 relative after "
    "bisection (else the grid's)",
    "break_quantity_lo, break_quantity_hi": "the theory quantity at those two scales: the measured break quantity",
    "matches_theory": "a mechanism's threshold lies within 1% of the measured break quantity and none was passed "
    "before it, or neither theory nor measurement breaks within the grid (empty: theory cannot be checked)",
    "explanation": "why they disagree, from a measured fact (subnormals flushed, the accumulation dtype) or the "
    "numbers alone; or what is notable where they agree; empty otherwise",
}

# --- one group: framework/path/dtype/family over the scale grid ----------------------------


def breakdown_row(
    cells: pd.DataFrame, bits_lost_limit: float | None = None, bisected=None, breaks_table: bool = False
) -> dict:
    """The breakdown of one framework/path/dtype/family (one device, n_rows, n_classes) over its
    scales; `bisected` is its row of the breaks table, if the run has one (`breaks_table`)."""
    scales = cells["scale"].to_numpy(dtype=np.float64)
    if not (np.diff(scales) >= 0).all():  # the grid's cells come by scale: sorted only where they do not
        cells = cells.sort_values("scale", kind="stable", ignore_index=True)
        scales = cells["scale"].to_numpy(dtype=np.float64)
    first = cells.iloc[0]
    framework, path, dtype = first["framework"], first["path"], first["dtype"]
    limit = default_bits_lost_limit(dtype) if bits_lost_limit is None else float(bits_lost_limit)
    max_logit = cells["max_logit"].to_numpy(dtype=np.float64)
    status = cells["status"].to_numpy()
    failed = metrics.status_in(cells["status"], metrics.FAILED)
    good = metrics.status_in(cells["status"], metrics.GOOD)
    lost = metrics.bits_lost(cells["max_ulp_err"].to_numpy(dtype=np.float64))
    measured = first_index(failed)
    lost_index = first_index(failed | (good & (lost > limit)))  # a failed cell has lost every bit
    flushes = group_flushes(cells, framework, dtype, str(first.get("device", "cpu")))

    def scale_of(index):
        return scales[index] if index is not None else np.nan

    row = {column: first[column] for column in GROUP_COLUMNS + setting_columns() if column in cells} | {
        "n_scales": len(cells),
        "first_fail_scale": scale_of(measured),
        "first_fail_max_logit": max_logit[measured] if measured is not None else np.nan,
        "first_fail_status": status[measured] if measured is not None else "",
        "bits_lost_limit": limit,
        "first_bits_lost_scale": scale_of(lost_index),
        "first_bits_lost_max_logit": max_logit[lost_index] if lost_index is not None else np.nan,
        "max_bits_lost": float(np.nanmax(lost[good])) if good.any() and np.isfinite(lost[good]).any() else np.nan,
        "input_inf_scale": scale_of(first_index(status == metrics.INPUT_INF)),
        "exact_overflow_scale": scale_of(first_index(status == metrics.EXACT_OVERFLOW)),
        "exact_underflow_scale": scale_of(first_index(status == metrics.EXACT_UNDERFLOW)),
        "n_unsupported": int((status == metrics.UNSUPPORTED).sum()),
        "flushes_subnormals": flushes,
    }
    if losses.entry(str(first.get("loss", losses.DEFAULT))).named:  # its own theory (its entry's theory module)
        return row | named_breakdown.theory_columns(cells, framework, path, dtype, measured, bisected)
    brk = measured_break(cells, measured, bisected, unbisected_note(first, breaks_table))
    accumulation = str(bisected.get("accumulation", "") or "") if bisected is not None else ""
    double = bisected is not None and bool(bisected.get("double_rounding", False))
    return row | theory_columns(cells, framework, path, dtype, flushes, brk, accumulation, double)


def _unchecked(cells: pd.DataFrame, path: str, mechanisms, dtype: str, causes, predicted) -> str:
    """Why theory cannot be checked for this group; empty where it can."""
    if metrics.status_in(cells["status"], NOT_THE_PATHS_FAILURE).all():
        unsupported = first_index(metrics.status_in(cells["status"], (metrics.UNSUPPORTED,)))
        if unsupported is not None:
            message = cells["message"].iat[unsupported] if "message" in cells else ""
            return f"unsupported: {message}" if message else "unsupported"
        return f"inputs overflow {dtype} at every scale"
    if mechanisms is None:
        return f"no theory for path {path!r}"
    unchecked = [cause for cause in causes if not any(p.cause == cause for p in predicted)]
    return "; ".join(f"{cause} needs column {THEORY_QUANTITIES[cause][0]}" for cause in unchecked) + (
        ", absent from this table" if unchecked else ""
    )


def theory_columns(
    cells: pd.DataFrame,
    framework: str,
    path: str,
    dtype: str,
    flushes: bool,
    brk: Break,
    accumulation: str = "",
    double_rounding: bool = False,
) -> dict:
    """theory_* columns, the measured break, matches_theory and explanation of one group."""
    columns = unmatched(brk.bisection, brk.scale_lo, brk.scale_hi)
    mechanisms = group_mechanisms(cells)
    measured = group_exp_facts(cells)
    dtype = dtype if measured is not None else theory_dtype(cells, dtype)  # a table before the exp facts
    predicted = predictions(cells, mechanisms, dtype, flushes, measured)
    why_not = _unchecked(cells, path, mechanisms, dtype, theory_causes(mechanisms, dtype, measured), predicted)
    if why_not:
        return columns | {"explanation": why_not}
    chosen = earliest(predicted)
    if brk.index is None:
        cause, early, agrees = chosen, [], chosen is None
    else:
        fitting = [
            p
            for p in predicted
            if fits(p.threshold, brk.lo[p.quantity], brk.hi[p.quantity] + lower_bound_slack(cells, p))
        ]
        early = [p for p in predicted if passed_before(p.threshold, brk.lo[p.quantity])]
        cause = fitting[0] if fitting else chosen
        agrees = bool(fitting) and not early
    shown = cause or (predicted[0] if predicted else None)
    if shown is not None:
        columns |= {"theory_quantity": shown.quantity, "theory_threshold": shown.threshold}
        columns |= {"break_quantity_lo": brk.lo[shown.quantity], "break_quantity_hi": brk.hi[shown.quantity]}
        if brk.index is not None:
            columns["quantity_at_fail"] = shown.values[brk.index]
            columns["quantity_before_fail"] = shown.values[brk.index - 1] if brk.index > 0 else np.nan
    if cause is not None and cause.index is not None:
        columns["theory_scale"] = cells["scale"].iloc[cause.index]
        if brk.index is not None:
            columns["grid_steps_off"] = brk.index - cause.index
    quantity_of = {p.cause: p.quantity for p in predicted}
    known = facts(framework, path, mechanisms, dtype, flushes, accumulation, quantity_of, measured, predicted)
    known += double_rounding_facts(framework, path, mechanisms, dtype, flushes, measured, double_rounding)
    if agrees:
        explanation = explain_agreement(cells, framework, dtype, flushes, brk, cause, known, measured)
    else:
        explanation = explain_disagreement(
            cells, mechanisms, brk, shown if brk.index is not None else None, chosen, early, known
        )
    return columns | {
        "theory_cause": cause.cause if cause else NO_BREAK,
        "matches_theory": agrees,
        "explanation": explanation,
    }


# --- the table ------------------------------------------------------------------------------


def _breaks_by_group(breaks: pd.DataFrame | None, keys: list[str]) -> dict:
    """The breaks table's rows by the group keys (option columns included where the table has them:
    the bisection covers the cells without loss options only)."""
    if breaks is None or breaks.empty or not set(keys) <= set(breaks):
        return {}
    return {tuple(_key_value(row[k]) for k in keys): row for _, row in breaks.iterrows()}


def _key_value(value):
    """None and NaN alike (an option that is off reads either way after a parquet round trip)."""
    return None if value is None or (isinstance(value, float) and value != value) else value


def breakdown_frame(errors: pd.DataFrame, bits_lost_limit: float | None = None, breaks=None) -> pd.DataFrame:
    """One row per framework/path/dtype/family (and device, n_rows, n_classes where present) of an errors table.

    bits_lost_limit is k of "more than k bits lost"; None means half each dtype's significand bits.
    `breaks` is the run's breaks table (harness.sweep.bisect), whose brackets replace the grid's.
    """
    keys = [column for column in GROUP_COLUMNS + setting_columns() if column in errors]
    bisected = _breaks_by_group(breaks, keys)
    groups = object_strings(errors).groupby(keys, sort=False, dropna=False)
    rows = [
        breakdown_row(
            cells,
            bits_lost_limit,
            bisected.get(tuple(_key_value(k) for k in (key if isinstance(key, tuple) else (key,)))),
            breaks is not None,
        )
        for key, cells in groups
    ]
    frame = pd.DataFrame(rows, columns=keys + [c for c in BREAKDOWN_COLUMNS if c not in GROUP_COLUMNS])
    frame["grid_steps_off"] = frame["grid_steps_off"].astype("Int64")
    frame["matches_theory"] = frame["matches_theory"].astype("boolean")
    frame["flushes_subnormals"] = frame["flushes_subnormals"].astype(bool)
    for column in ("first_fail_status", "theory_cause", "theory_quantity", "bisection", "explanation"):
        frame[column] = frame[column].fillna("").astype(str)
    return frame


def read_breaks(run_dir: Path) -> pd.DataFrame | None:
    path = Path(run_dir) / "breaks.parquet"
    return pd.read_parquet(path) if path.is_file() else None


def write_breakdown(
    errors: pd.DataFrame, run_dir: Path, bits_lost_limit: float | None = None, stem: str = "breakdown"
) -> pd.DataFrame:
    """<stem>.parquet and <stem>.csv in run_dir (grad_breakdown for the gradient table, which is not
    bisected); the loss breakdown takes the folder's breaks table where it has one."""
    breaks = read_breaks(run_dir) if stem == "breakdown" else None
    frame = breakdown_frame(errors, bits_lost_limit, breaks)
    tables.write_table(frame, Path(run_dir) / stem)
    return frame
