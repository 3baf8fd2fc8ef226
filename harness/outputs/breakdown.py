"""Breakdown points: where each path first fails or loses accuracy, next to the theory of why.

Theory, per row of logits x (already rounded to the dtype), label y, loss = lse(x) - x[y] >= 0:

- sum overflow: exp(x_j) overflows once x_j passes ln(largest finite), and the unshifted sum of
  exponentials overflows once lse(x) passes it, which comes first since lse(x) >= max(x). Only the
  naive path sums unshifted exponentials.
- target underflow: the target probability exp(-loss) rounds to zero, and -log gives inf, once the
  loss passes -ln(smallest subnormal); or -ln(smallest normal) where the framework flushes
  subnormal results to zero. (Round to nearest keeps values down to half the smallest subnormal,
  moving the edge by ln 2: within one step of any useful grid.) The naive and softmax_log paths
  take the log of a probability; log_softmax_nll and fused never do, and should not break at all.

Each threshold is compared with the cell's largest value of the quantity it is stated in: the
errors-table columns `max_lse` (sum overflow; where absent, `max_logit`, a lower bound on it) and
`max_exact_loss` (target underflow). A path's predicted break is the first scale at which any of
its mechanisms passes its threshold; the measured break is the first scale whose status is inf,
nan or error. They agree when they lie within one grid step of each other (or neither happens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.dtypes import DTYPES
from harness.outputs import tables
from harness.sweep import metrics

SUM_OVERFLOW, TARGET_UNDERFLOW = "sum overflow", "target underflow"
NO_BREAK = "none"

# The failure mechanisms each path is exposed to; a path not listed has no theory here.
PATH_FAILURES: dict[str, tuple[str, ...]] = {
    "naive": (SUM_OVERFLOW, TARGET_UNDERFLOW),
    "softmax_log": (TARGET_UNDERFLOW,),
    "log_softmax_nll": (),
    "fused": (),
    "upcast_fused": (),
    "log1p_lse": (),
    "online": (),
    "chunked": (),
}

# The errors-table column each mechanism's threshold is compared with, then its fallback.
THEORY_QUANTITIES: dict[str, tuple[str, ...]] = {
    SUM_OVERFLOW: ("max_lse", "max_logit"),
    TARGET_UNDERFLOW: ("max_exact_loss",),
}

# (framework, dtype, device) whose computed results flush subnormals to zero. Measured on CPU with
# JAX 0.10.2 (jitted, x64 enabled): smallest_normal * 0.25, smallest_normal / 4 and
# exp(ln(smallest_normal / 4)) all give 0 in bfloat16, float32 and float64, but the float16
# subnormal 2**-16 in float16 (computed in float32, where it is normal, then rounded). NumPy and
# PyTorch keep subnormals in every dtype. tests/test_breakdown.py re-measures the table on CPU. Devices
# not listed are taken to keep subnormals (IEEE gradual underflow); where a break fits flushing
# better, the explanation column says so.
FLUSHES_SUBNORMALS: frozenset[tuple[str, str, str]] = frozenset(
    {("jax", "bfloat16", "cpu"), ("jax", "float32", "cpu"), ("jax", "float64", "cpu")}
)

GROUP_COLUMNS = ("framework", "path", "dtype", "family", "device", "n_rows", "n_classes")  # those present
NOT_THE_PATHS_FAILURE = (metrics.INPUT_INF, metrics.UNSUPPORTED)

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
    "n_unsupported",
    "flushes_subnormals",
    "theory_cause",
    "theory_quantity",
    "theory_threshold",
    "theory_scale",
    "quantity_before_fail",
    "quantity_at_fail",
    "grid_steps_off",
    "matches_theory",
    "explanation",
)


COLUMN_DOCS = {
    "framework, path, dtype, family, device, n_rows, n_classes": "the combination (those of these columns the "
    "errors table has); one row per combination, over its grid of scales",
    "n_scales": "number of scales (cells) in the combination's grid",
    "first_fail_scale": "first scale whose status is inf, nan or error (empty: never fails within the grid)",
    "first_fail_max_logit": "largest rounded logit at that scale",
    "first_fail_status": "status there: inf, nan or error",
    "bits_lost_limit": "k: more than k bits lost counts as lost accuracy (default: half the significand bits)",
    "first_bits_lost_scale": "first scale losing more than k bits, bits lost = max(0, log2(2 * max_ulp_err)); "
    "a failed cell has lost every bit",
    "first_bits_lost_max_logit": "largest rounded logit at that scale",
    "max_bits_lost": "most bits lost over the cells whose status is ok",
    "input_inf_scale": "first scale whose logits overflow the dtype (input_inf: not a failure of the path)",
    "n_unsupported": "cells the framework cannot run (unsupported: not a failure of the path)",
    "flushes_subnormals": "whether the framework flushes subnormal results to zero in this dtype on this device "
    "(measured on CPU: JAX in bfloat16, float32 and float64)",
    "theory_cause": "mechanism theory says breaks the path first within the grid: sum overflow, target "
    "underflow, or none",
    "theory_quantity": "errors-table column its threshold is compared with: max_lse (else max_logit, a lower "
    "bound) or max_exact_loss",
    "theory_threshold": "ln(largest finite) for sum overflow; -ln(smallest subnormal), or -ln(smallest "
    "normal) where subnormals flush, for target underflow",
    "theory_scale": "first scale at which the quantity passes the threshold (empty: not within the grid)",
    "quantity_before_fail, quantity_at_fail": "the quantity one scale before the measured break and at it: "
    "the threshold should lie between them",
    "grid_steps_off": "grid steps from the predicted to the measured break (negative: broke earlier)",
    "matches_theory": "measured break within one grid step of the predicted one, or neither happens "
    "(empty: theory cannot be checked)",
    "explanation": "why they disagree, or what is notable (e.g. subnormals flushed to zero); empty otherwise",
}

# --- thresholds -----------------------------------------------------------------------------


def overflow_threshold(dtype: str) -> float:
    """ln(largest finite): exp overflows above it, and an unshifted sum once lse(x) passes it."""
    return DTYPES[dtype].exp_overflow_threshold


def underflow_threshold(dtype: str, flushes_subnormals: bool = False) -> float:
    """-ln(smallest subnormal), or -ln(smallest normal) when subnormals flush to zero:
    a loss above it means the target probability exp(-loss) rounds to zero."""
    fmt = DTYPES[dtype]
    return -math.log(fmt.smallest_normal if flushes_subnormals else fmt.smallest_subnormal)


def flushes_subnormals(framework: str, dtype: str, device: str = "cpu") -> bool:
    return (framework, dtype, device) in FLUSHES_SUBNORMALS


def threshold(cause: str, dtype: str, flushes: bool) -> float:
    if cause == SUM_OVERFLOW:
        return overflow_threshold(dtype)
    if cause == TARGET_UNDERFLOW:
        return underflow_threshold(dtype, flushes)
    raise ValueError(f"unknown failure mechanism {cause!r}")


# --- bits lost ------------------------------------------------------------------------------


def default_bits_lost_limit(dtype: str) -> float:
    """k: half the dtype's significand bits (hidden bit included), e.g. 5.5 for float16."""
    return DTYPES[dtype].precision / 2


# --- one group: framework/path/dtype/family over the scale grid ----------------------------


@dataclass(frozen=True)
class Prediction:
    """Where one mechanism's threshold is first passed: `index` into the grid, None if never."""

    cause: str
    quantity: str  # the column compared with the threshold
    threshold: float
    index: int | None
    values: np.ndarray  # the quantity per grid cell (NaN where the path did not run)


def first_index(mask) -> int | None:
    hits = np.flatnonzero(np.asarray(mask, dtype=bool))
    return int(hits[0]) if hits.size else None


def predict(cells: pd.DataFrame, cause: str, dtype: str, flushes: bool) -> Prediction | None:
    """The mechanism's predicted break over the cells (sorted by scale); None if no column holds
    its quantity."""
    quantity = next((c for c in THEORY_QUANTITIES[cause] if c in cells and cells[c].notna().any()), None)
    if quantity is None:
        return None
    ran = ~cells["status"].isin(NOT_THE_PATHS_FAILURE).to_numpy()
    values = np.where(ran, cells[quantity].to_numpy(dtype=np.float64), np.nan)
    limit = threshold(cause, dtype, flushes)
    with np.errstate(invalid="ignore"):
        return Prediction(cause, quantity, limit, first_index(values > limit), values)


def _steps(a: int | None, b: int | None) -> int | None:
    """Grid steps from b to a; None unless both happen."""
    return None if a is None or b is None else a - b


def _agrees(measured: int | None, predicted: int | None) -> bool:
    if measured is None or predicted is None:
        return measured is None and predicted is None
    return abs(measured - predicted) <= 1


def _fmt(value) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.4g}"


QUANTITY_WORDS = {
    "max_lse": "largest log-sum-exp",
    "max_logit": "largest logit",
    "max_exact_loss": "largest exact loss",
}


def _passes(p: Prediction, scales: np.ndarray) -> str:
    """'largest exact loss 104.1 > 103.3 from scale 17.78'."""
    value, scale = _fmt(p.values[p.index]), _fmt(scales[p.index])
    return f"{QUANTITY_WORDS[p.quantity]} {value} > {_fmt(p.threshold)} from scale {scale}"


def predictions(cells: pd.DataFrame, path: str, dtype: str, flushes: bool) -> list[Prediction | None]:
    """One prediction per mechanism the path is exposed to (None where its quantity is absent)."""
    return [predict(cells, cause, dtype, flushes) for cause in PATH_FAILURES.get(path, ())]


def earliest(predicted: list[Prediction]) -> Prediction | None:
    """The mechanism that breaks first (ties: the listed order); None if none breaks in the grid."""
    breaking = [p for p in predicted if p.index is not None]
    return min(breaking, key=lambda p: p.index) if breaking else None


def _other_flush_note(
    cells: pd.DataFrame, framework: str, path: str, dtype: str, flushes: bool, measured, scales
) -> str:
    """Whether the break would fit theory had the framework flushed subnormals (or kept them)."""
    other = predictions(cells, path, dtype, not flushes)
    if TARGET_UNDERFLOW not in PATH_FAILURES.get(path, ()) or None in other:
        return ""
    chosen = earliest(other)
    if not _agrees(measured, chosen.index if chosen else None):
        return ""
    kind = "kept subnormals" if flushes else "flushed subnormals to zero"
    where = _passes(chosen, scales) if chosen else "no threshold passed within the grid"
    return f"; it fits theory had {framework} {kind} in {dtype} ({where})"


def _flush_fit_note(cells: pd.DataFrame, framework: str, path: str, dtype: str, measured, chosen, scales) -> str:
    """Where a flushing framework's target underflow lands exactly on -ln(smallest normal) and
    gradual underflow would have put it elsewhere: say so, since it sets the framework apart."""
    plain = earliest(predictions(cells, path, dtype, False))
    if chosen.cause != TARGET_UNDERFLOW or (plain is not None and plain.index == measured):
        return ""
    where = "beyond the grid" if plain is None else f"at scale {_fmt(scales[plain.index])}"
    return (
        f"fits -ln(smallest normal) = {_fmt(chosen.threshold)} at scale {_fmt(scales[measured])}"
        f" ({QUANTITY_WORDS[chosen.quantity]} {_fmt(chosen.values[measured])}) because {framework} flushes"
        f" subnormals to zero in {dtype}; with gradual underflow theory would put the break {where}"
    )


def explain(cells: pd.DataFrame, framework: str, path: str, dtype: str, flushes: bool, measured, chosen, scales) -> str:
    """Why measured and predicted break disagree; empty where they agree and nothing is notable."""
    if measured is None and chosen is None:
        return ""
    flush_note = _other_flush_note(cells, framework, path, dtype, flushes, measured, scales)
    if measured is None:
        return f"never broke, though the {_passes(chosen, scales)}{flush_note}"
    status = cells["status"].iloc[measured]
    broke = f"broke ({status}) at scale {_fmt(scales[measured])}"
    message = cells["message"].iloc[measured] if "message" in cells else ""
    if status == metrics.ERROR and message:
        broke += f": {message}"
    if chosen is None:
        if not PATH_FAILURES[path]:
            return f"{broke}, though a stable path should not break"
        return f"{broke}, though no threshold is passed within the grid{flush_note}"
    off = measured - chosen.index
    sum_first = chosen.quantity == "max_logit" and off < 0
    if sum_first:
        sum_first_note = (
            f"the sum of exps overflows before any single exp: once lse(x) passes {_fmt(chosen.threshold)}, which "
            f"it does up to ln(n_classes){_ln_classes(cells)} before the largest logit; this table has no max_lse "
            "to check it"
        )
    if abs(off) <= 1:
        if sum_first:
            return sum_first_note
        return _flush_fit_note(cells, framework, path, dtype, measured, chosen, scales) if flushes and off == 0 else ""
    note = f"{broke}, {abs(off)} grid steps {'before' if off < 0 else 'after'} theory ({_passes(chosen, scales)})"
    return note + (f"; {sum_first_note}" if sum_first else "") + flush_note


def _ln_classes(cells: pd.DataFrame) -> str:
    """' = 6.908' for 1000 classes, where the table says how many."""
    return f" = {_fmt(math.log(cells['n_classes'].iloc[0]))}" if "n_classes" in cells else ""


def breakdown_row(cells: pd.DataFrame, bits_lost_limit: float | None = None) -> dict:
    """The breakdown of one framework/path/dtype/family (one device, n_rows, n_classes) over its scales."""
    cells = cells.sort_values("scale", kind="stable").reset_index(drop=True)
    first = cells.iloc[0]
    framework, path, dtype = first["framework"], first["path"], first["dtype"]
    limit = default_bits_lost_limit(dtype) if bits_lost_limit is None else float(bits_lost_limit)
    scales = cells["scale"].to_numpy(dtype=np.float64)
    max_logit = cells["max_logit"].to_numpy(dtype=np.float64)
    status = cells["status"].to_numpy()
    failed = np.isin(status, metrics.FAILED)
    ok = status == metrics.OK
    lost = metrics.bits_lost(cells["max_ulp_err"].to_numpy(dtype=np.float64))
    measured = first_index(failed)
    lost_index = first_index(failed | (ok & (lost > limit)))  # a failed cell has lost every bit
    input_inf = first_index(status == metrics.INPUT_INF)
    flushes = flushes_subnormals(framework, dtype, str(first.get("device", "cpu")))

    row = {column: first[column] for column in GROUP_COLUMNS if column in cells} | {
        "n_scales": len(cells),
        "first_fail_scale": scales[measured] if measured is not None else np.nan,
        "first_fail_max_logit": max_logit[measured] if measured is not None else np.nan,
        "first_fail_status": status[measured] if measured is not None else "",
        "bits_lost_limit": limit,
        "first_bits_lost_scale": scales[lost_index] if lost_index is not None else np.nan,
        "first_bits_lost_max_logit": max_logit[lost_index] if lost_index is not None else np.nan,
        "max_bits_lost": float(np.max(lost[ok])) if ok.any() else np.nan,
        "input_inf_scale": scales[input_inf] if input_inf is not None else np.nan,
        "n_unsupported": int((status == metrics.UNSUPPORTED).sum()),
        "flushes_subnormals": flushes,
    }
    row |= theory_columns(cells, framework, path, dtype, flushes, measured, scales)
    return row


def theory_columns(cells: pd.DataFrame, framework: str, path: str, dtype: str, flushes: bool, measured, scales) -> dict:
    """theory_* columns, matches_theory and explanation of one group."""
    empty = {
        "theory_quantity": "",
        "theory_threshold": np.nan,
        "theory_scale": np.nan,
        "quantity_before_fail": np.nan,
        "quantity_at_fail": np.nan,
        "grid_steps_off": pd.NA,
    }
    status = cells["status"]
    if not (~status.isin(NOT_THE_PATHS_FAILURE)).any():
        if (status == metrics.UNSUPPORTED).any():
            message = cells.loc[status == metrics.UNSUPPORTED, "message"].iloc[0] if "message" in cells else ""
            why = f"unsupported: {message}" if message else "unsupported"
        else:
            why = f"inputs overflow {dtype} at every scale"
        return empty | {"theory_cause": "", "matches_theory": pd.NA, "explanation": why}
    if path not in PATH_FAILURES:
        return empty | {"theory_cause": "", "matches_theory": pd.NA, "explanation": f"no theory for path {path!r}"}
    predicted = predictions(cells, path, dtype, flushes)
    unchecked = [cause for cause, p in zip(PATH_FAILURES[path], predicted, strict=True) if p is None]
    if unchecked:
        needs = "; ".join(f"{cause} needs column {THEORY_QUANTITIES[cause][0]}" for cause in unchecked)
        return empty | {"theory_cause": "", "matches_theory": pd.NA, "explanation": f"{needs}, absent from this table"}
    chosen = earliest(predicted)
    shown = chosen or (predicted[0] if predicted else None)
    columns = dict(empty)
    if shown is not None:
        columns |= {"theory_quantity": shown.quantity, "theory_threshold": shown.threshold}
        if measured is not None:
            columns["quantity_at_fail"] = shown.values[measured]
            columns["quantity_before_fail"] = shown.values[measured - 1] if measured > 0 else np.nan
    if chosen is not None:
        columns["theory_scale"] = scales[chosen.index]
    steps = _steps(measured, chosen.index if chosen else None)
    return columns | {
        "theory_cause": chosen.cause if chosen else NO_BREAK,
        "grid_steps_off": pd.NA if steps is None else steps,
        "matches_theory": _agrees(measured, chosen.index if chosen else None),
        "explanation": explain(cells, framework, path, dtype, flushes, measured, chosen, scales),
    }


# --- the table ------------------------------------------------------------------------------


def breakdown_frame(errors: pd.DataFrame, bits_lost_limit: float | None = None) -> pd.DataFrame:
    """One row per framework/path/dtype/family (and device, n_rows, n_classes where present) of an errors table.

    bits_lost_limit is k of "more than k bits lost"; None means half each dtype's significand bits.
    """
    keys = [column for column in GROUP_COLUMNS if column in errors]
    groups = errors.groupby(keys, sort=False, dropna=False)
    rows = [breakdown_row(cells, bits_lost_limit) for _, cells in groups]
    frame = pd.DataFrame(rows, columns=[c for c in BREAKDOWN_COLUMNS if c in keys or c not in GROUP_COLUMNS])
    frame["grid_steps_off"] = frame["grid_steps_off"].astype("Int64")
    frame["matches_theory"] = frame["matches_theory"].astype("boolean")
    frame["flushes_subnormals"] = frame["flushes_subnormals"].astype(bool)
    for column in ("first_fail_status", "theory_cause", "theory_quantity", "explanation"):
        frame[column] = frame[column].fillna("").astype(str)
    return frame


def write_breakdown(
    errors: pd.DataFrame, run_dir: Path, bits_lost_limit: float | None = None, stem: str = "breakdown"
) -> pd.DataFrame:
    """<stem>.parquet and <stem>.csv in run_dir (grad_breakdown for the gradient table); returns the table."""
    frame = breakdown_frame(errors, bits_lost_limit)
    tables.write_table(frame, Path(run_dir) / stem)
    return frame
