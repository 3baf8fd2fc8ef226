"""Breakdown points: where each path first fails or loses accuracy, next to the theory of why.

Theory, per row of logits x (already rounded to the dtype), label y, loss = lse(x) - x[y] >= 0,
every threshold derived from the dtype's round-to-nearest (harness.dtypes):

- sum overflow: exp(x_j) rounds to inf once x_j passes ln(largest finite + half an ulp), and the
  unshifted sum of exponentials once lse(x) passes it, which comes first since lse(x) >= max(x).
  Only the naive path sums unshifted exponentials.
- target underflow: the target probability exp(-loss) rounds to zero, and -log gives inf, once the
  loss passes -ln(smallest subnormal / 2); or -ln(smallest normal) where the framework flushes
  subnormal results to zero (measured per framework, dtype and device: the errors table's
  `flushes_subnormals`). The naive and softmax_log paths take the log of a probability;
  log_softmax_nll and fused never do, and should not break at all.

Each threshold is stated in a quantity the errors table records per cell: `max_lse` (sum
overflow; where absent, `max_logit`, a lower bound on it) and `max_exact_loss` (target underflow).
The measured break lies between the last good scale and the first failing one (status inf, nan
or error; a correctly rounded inf or 0, exact_overflow or exact_underflow, is no failure): the
bisection's bracket from the run's `breaks` table (harness.sweep.bisect) where there is one, else
the two grid cells. Theory agrees when one of the path's mechanisms has its threshold within 1% of
the quantity measured there, and none was passed (by more than 1%) before it; or when neither
theory nor measurement breaks within the grid. A disagreement is explained by a measured fact
(subnormals flushed, the dtype the path accumulates in) that puts a threshold at the break, or
else by the numbers alone.
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
TOLERANCE = 0.01  # a threshold within 1% of the measured break quantity agrees with it

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
QUANTITIES = ("max_logit", "max_lse", "max_exact_loss")

# Fallback for errors tables without the measured `flushes_subnormals` column (runs before it):
# (framework, dtype, device) whose computed results flush subnormals to zero, as measured on CPU
# with JAX 0.10.2 (jitted, x64 enabled). NumPy and PyTorch keep subnormals in every dtype.
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
    "bound) or max_exact_loss",
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

# --- thresholds -----------------------------------------------------------------------------


def overflow_threshold(dtype: str) -> float:
    """ln(largest finite + half an ulp): exp rounds to inf beyond it, and an unshifted sum once lse(x) does."""
    return DTYPES[dtype].exp_overflow_threshold


def underflow_threshold(dtype: str, flushes_subnormals: bool = False) -> float:
    """-ln(smallest subnormal / 2), or -ln(smallest normal) when subnormals flush to zero:
    a loss beyond it means the target probability exp(-loss) rounds to zero."""
    fmt = DTYPES[dtype]
    return fmt.exp_flush_threshold if flushes_subnormals else fmt.exp_underflow_threshold


def flushes_subnormals(framework: str, dtype: str, device: str = "cpu") -> bool:
    """The fallback table, for errors tables without the measured column."""
    return (framework, dtype, device) in FLUSHES_SUBNORMALS


def threshold(cause: str, dtype: str, flushes: bool) -> float:
    if cause == SUM_OVERFLOW:
        return overflow_threshold(dtype)
    if cause == TARGET_UNDERFLOW:
        return underflow_threshold(dtype, flushes)
    raise ValueError(f"unknown failure mechanism {cause!r}")


def group_flushes(cells: pd.DataFrame, framework: str, dtype: str, device: str) -> bool:
    """The errors table's measured `flushes_subnormals` where it has it, else the fallback table."""
    measured = cells["flushes_subnormals"].dropna() if "flushes_subnormals" in cells else ()
    return bool(measured.iloc[0]) if len(measured) else flushes_subnormals(framework, dtype, device)


# --- bits lost ------------------------------------------------------------------------------


def default_bits_lost_limit(dtype: str) -> float:
    """k: half the dtype's significand bits (hidden bit included), e.g. 5.5 for float16."""
    return DTYPES[dtype].precision / 2


# --- theory on the grid ---------------------------------------------------------------------


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


def predictions(cells: pd.DataFrame, path: str, dtype: str, flushes: bool) -> list[Prediction | None]:
    """One prediction per mechanism the path is exposed to (None where its quantity is absent)."""
    return [predict(cells, cause, dtype, flushes) for cause in PATH_FAILURES.get(path, ())]


def earliest(predicted: list[Prediction]) -> Prediction | None:
    """The mechanism that breaks first on the grid (ties: the listed order); None if none does."""
    breaking = [p for p in predicted if p.index is not None]
    return min(breaking, key=lambda p: p.index) if breaking else None


# --- the measured break ---------------------------------------------------------------------


@dataclass(frozen=True)
class Break:
    """Where a combination first fails: its grid index, and the bracket of scales around the break
    with each quantity at both ends (the bisection's, else the grid's; NaN where unknown)."""

    index: int | None
    scale_lo: float
    scale_hi: float
    lo: dict
    hi: dict
    bisection: str


def _at(cells: pd.DataFrame, index: int | None) -> dict:
    return {q: float(cells[q].iloc[index]) if index is not None and q in cells else np.nan for q in QUANTITIES}


def measured_break(cells: pd.DataFrame, index: int | None, bisected) -> Break:
    """The break from the breaks-table row `bisected` (None where the folder has none) or the grid."""
    note = "grid only: no breaks table" if bisected is None else str(bisected["bisection"])
    if index is None:
        return Break(None, np.nan, np.nan, _at(cells, None), _at(cells, None), note)
    if bisected is not None and np.isfinite(bisected["break_scale_lo"]) and np.isfinite(bisected["break_scale_hi"]):
        lo = {q: float(bisected.get(f"{q}_lo", np.nan)) for q in QUANTITIES}
        hi = {q: float(bisected.get(f"{q}_hi", np.nan)) for q in QUANTITIES}
        return Break(index, float(bisected["break_scale_lo"]), float(bisected["break_scale_hi"]), lo, hi, note)
    scales = cells["scale"].to_numpy(dtype=np.float64)
    before = index - 1 if index > 0 else None
    lo_scale = scales[before] if before is not None else np.nan
    return Break(index, lo_scale, scales[index], _at(cells, before), _at(cells, index), note)


def fits(limit: float, lo: float, hi: float) -> bool:
    """Whether `limit` lies within TOLERANCE of the measured quantity, known to lie in [lo, hi]
    (lo NaN: only that it is at most hi)."""
    if not np.isfinite(hi):
        return False
    low, high = (min(lo, hi), max(lo, hi)) if np.isfinite(lo) else (-np.inf, hi)
    return low - TOLERANCE * abs(low) <= limit <= high + TOLERANCE * abs(high)


def _slack(cells: pd.DataFrame, p: Prediction) -> float:
    """ln(n_classes) where the quantity is max_logit, a lower bound on the log-sum-exp by at most that."""
    return math.log(cells["n_classes"].iloc[0]) if p.quantity == "max_logit" and "n_classes" in cells else 0.0


def passed_before(limit: float, lo: float) -> bool:
    """Whether the quantity was already more than TOLERANCE past `limit` at the last good scale."""
    return bool(np.isfinite(lo) and lo > limit + TOLERANCE * abs(limit))


# --- explanations from measured facts -------------------------------------------------------

QUANTITY_WORDS = {
    "max_lse": "largest log-sum-exp",
    "max_logit": "largest logit",
    "max_exact_loss": "largest exact loss",
}


def _fmt(value) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.4g}"


def fmt_quantity(value) -> str:
    """A measured quantity, to the 5 digits a bisected bracket resolves."""
    return "-" if value is None or not np.isfinite(value) else f"{value:.5g}"


def fmt_span(lo: float, hi: float) -> str:
    """'87.333 to 87.34', or one number where both ends read the same."""
    if not np.isfinite(lo) or fmt_quantity(lo) == fmt_quantity(hi):
        return fmt_quantity(hi)
    return f"{fmt_quantity(min(lo, hi))} to {fmt_quantity(max(lo, hi))}"


@dataclass(frozen=True)
class Fact:
    """A measured fact that puts a threshold on a quantity: `says` how, in words."""

    quantity: str
    threshold: float
    says: str


def facts(framework: str, path: str, dtype: str, flushes: bool, accumulation: str, quantity_of: dict) -> list[Fact]:
    """Thresholds that measured facts put on this combination, beside theory's own.

    Flushing (the backend's measurement): 1/sum(exp) flushes to 0 once the sum passes
    1/smallest normal, i.e. the log-sum-exp passes -ln(smallest normal). Accumulation (the path
    entry, through the breaks table): a mechanism's threshold in the dtype the sums are carried in.
    """
    found = []
    if flushes and SUM_OVERFLOW in PATH_FAILURES.get(path, ()):
        limit = DTYPES[dtype].exp_flush_threshold
        says = (
            f"{framework} flushes subnormals to zero in {dtype} (measured), so 1/sum(exp) becomes 0 once the "
            f"log-sum-exp passes -ln(smallest normal) = {fmt_quantity(limit)}"
        )
        found.append(Fact(quantity_of.get(SUM_OVERFLOW, "max_lse"), limit, says))
    if flushes and TARGET_UNDERFLOW in PATH_FAILURES.get(path, ()):
        limit = DTYPES[dtype].exp_underflow_threshold
        says = (
            f"this path keeps subnormals: the break lies at gradual underflow's -ln(smallest subnormal / 2) = "
            f"{fmt_quantity(limit)}, though {framework} flushes them in {dtype} where measured"
        )
        found.append(Fact(quantity_of.get(TARGET_UNDERFLOW, "max_exact_loss"), limit, says))
    if accumulation and accumulation != dtype and accumulation in DTYPES:
        for cause in PATH_FAILURES.get(path, ()):
            limit = threshold(cause, accumulation, False)
            says = (
                f"{framework}'s {path} carries {dtype} sums in {accumulation} (path entry): {cause} at "
                f"{fmt_quantity(limit)}"
            )
            found.append(Fact(quantity_of.get(cause, THEORY_QUANTITIES[cause][0]), limit, says))
    return found


def _distance(limit: float, lo: float, hi: float) -> float:
    """How far `limit` lies outside [lo, hi], relative to it (0 inside)."""
    low, high = (min(lo, hi), max(lo, hi)) if np.isfinite(lo) else (hi, hi)
    return max(low - limit, limit - high, 0.0) / abs(limit)


def _fitting_fact(known: list[Fact], brk: Break) -> Fact | None:
    """The fact whose threshold lies closest to the measured break, if within 1% of it."""
    fitting = [f for f in known if fits(f.threshold, brk.lo[f.quantity], brk.hi[f.quantity])]
    return min(fitting, key=lambda f: _distance(f.threshold, brk.lo[f.quantity], brk.hi[f.quantity]), default=None)


def _broke(cells: pd.DataFrame, brk: Break) -> str:
    """'broke (inf) at scale 20.862 (not yet at 20.86)'."""
    status = cells["status"].iloc[brk.index]
    text = f"broke ({status}) at scale {fmt_quantity(brk.scale_hi)}"
    if np.isfinite(brk.scale_lo):
        text += f" (not yet at {fmt_quantity(brk.scale_lo)})"
    message = cells["message"].iloc[brk.index] if "message" in cells else ""
    return text + (f": {message}" if status == metrics.ERROR and message else "")


def _ln_classes(cells: pd.DataFrame) -> str:
    """' = 6.908' for 1000 classes, where the table says how many."""
    return f" = {_fmt(math.log(cells['n_classes'].iloc[0]))}" if "n_classes" in cells else ""


def _sum_first_note(cells: pd.DataFrame, p: Prediction) -> str:
    return (
        f"the sum of exps overflows before any single exp: once lse(x) passes {_fmt(p.threshold)}, which it does "
        f"up to ln(n_classes){_ln_classes(cells)} before the largest logit; this table has no max_lse to check it"
    )


def explain_disagreement(cells, path: str, brk: Break, shown, chosen, early, known: list[Fact]) -> str:
    """Why a measured break and theory disagree: a measured fact that puts a threshold there, or the numbers."""
    if brk.index is None:
        value = chosen.values[chosen.index]
        text = (
            f"never broke, though the {QUANTITY_WORDS[chosen.quantity]} {fmt_quantity(value)} > "
            f"{fmt_quantity(chosen.threshold)} "
            f"from scale {_fmt(cells['scale'].iloc[chosen.index])}"
        )
        below = [f for f in known if np.nanmax(np.r_[cells[f.quantity].to_numpy(dtype=float), -np.inf]) <= f.threshold]
        return text + (f"; {below[0].says}, never passed within the grid" if below else "")
    text = _broke(cells, brk)
    fact = _fitting_fact(known, brk)
    if early:
        p = early[0]
        text += (
            f", though the {QUANTITY_WORDS[p.quantity]} had passed {fmt_quantity(p.threshold)} ({p.cause}) before it"
        )
    elif shown is None:
        text += ", though a stable path should not break" if not PATH_FAILURES[path] else ""
    else:
        lo, hi = brk.lo[shown.quantity], brk.hi[shown.quantity]
        off = (hi - shown.threshold) / shown.threshold
        text += (
            f", where the {QUANTITY_WORDS[shown.quantity]} is {fmt_span(lo, hi)}, {abs(off):.1%} "
            f"{'below' if off < 0 else 'above'} the {shown.cause} threshold {fmt_quantity(shown.threshold)}"
        )
        if shown.quantity == "max_logit" and off < 0:
            text += f"; {_sum_first_note(cells, shown)}"
    if fact is not None and shown is not None and not early and fact.quantity == shown.quantity:
        return text + f"; {fact.says}: within 1% of it"
    if fact is not None:
        value = fmt_span(brk.lo[fact.quantity], brk.hi[fact.quantity])
        return text + f"; {fact.says}, within 1% of the measured {QUANTITY_WORDS[fact.quantity]} {value}"
    return text + (
        "" if shown is None else "; no measured fact (subnormal flushing, accumulation dtype) puts a threshold there"
    )


def explain_agreement(cells, framework: str, dtype: str, flushes: bool, brk: Break, cause, known) -> str:
    """What is notable where theory agrees: a flushed threshold, a fact that fits closer, a lower bound."""
    if brk.index is None or cause is None:
        return ""
    lo, hi = brk.lo[cause.quantity], brk.hi[cause.quantity]
    measured = f"the measured {QUANTITY_WORDS[cause.quantity]} {fmt_span(lo, hi)}"
    if cause.cause == TARGET_UNDERFLOW and flushes:
        gradual = DTYPES[dtype].exp_underflow_threshold
        return (
            f"{framework} flushes subnormals to zero in {dtype} (measured): -ln(smallest normal) = "
            f"{fmt_quantity(cause.threshold)} lies within 1% of {measured}; gradual underflow would put it at "
            f"{fmt_quantity(gradual)}"
        )
    inside = np.isfinite(lo) and min(lo, hi) <= cause.threshold <= max(lo, hi)
    closer = next(
        (
            f
            for f in known
            if np.isfinite(lo)
            and min(brk.lo[f.quantity], brk.hi[f.quantity])
            <= f.threshold
            <= max(brk.lo[f.quantity], brk.hi[f.quantity])
        ),
        None,
    )
    if not inside and closer is not None:
        return (
            f"{measured} brackets {fmt_quantity(closer.threshold)}, not {fmt_quantity(cause.threshold)}: {closer.says}"
        )
    if cause.quantity == "max_logit" and cause.index is not None and cause.index > brk.index:
        return _sum_first_note(cells, cause)
    return ""


# --- one group: framework/path/dtype/family over the scale grid ----------------------------


def breakdown_row(cells: pd.DataFrame, bits_lost_limit: float | None = None, bisected=None) -> dict:
    """The breakdown of one framework/path/dtype/family (one device, n_rows, n_classes) over its
    scales; `bisected` is its row of the breaks table, if the run has one."""
    cells = cells.sort_values("scale", kind="stable").reset_index(drop=True)
    first = cells.iloc[0]
    framework, path, dtype = first["framework"], first["path"], first["dtype"]
    limit = default_bits_lost_limit(dtype) if bits_lost_limit is None else float(bits_lost_limit)
    scales = cells["scale"].to_numpy(dtype=np.float64)
    max_logit = cells["max_logit"].to_numpy(dtype=np.float64)
    status = cells["status"].to_numpy()
    failed = np.isin(status, metrics.FAILED)
    good = np.isin(status, metrics.GOOD)
    lost = metrics.bits_lost(cells["max_ulp_err"].to_numpy(dtype=np.float64))
    measured = first_index(failed)
    lost_index = first_index(failed | (good & (lost > limit)))  # a failed cell has lost every bit
    flushes = group_flushes(cells, framework, dtype, str(first.get("device", "cpu")))

    def scale_of(index):
        return scales[index] if index is not None else np.nan

    row = {column: first[column] for column in GROUP_COLUMNS if column in cells} | {
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
    brk = measured_break(cells, measured, bisected)
    accumulation = str(bisected.get("accumulation", "") or "") if bisected is not None else ""
    return row | theory_columns(cells, framework, path, dtype, flushes, brk, accumulation)


def _unchecked(cells: pd.DataFrame, path: str, dtype: str, predicted) -> str:
    """Why theory cannot be checked for this group; empty where it can."""
    status = cells["status"]
    if not (~status.isin(NOT_THE_PATHS_FAILURE)).any():
        if (status == metrics.UNSUPPORTED).any():
            message = cells.loc[status == metrics.UNSUPPORTED, "message"].iloc[0] if "message" in cells else ""
            return f"unsupported: {message}" if message else "unsupported"
        return f"inputs overflow {dtype} at every scale"
    if path not in PATH_FAILURES:
        return f"no theory for path {path!r}"
    unchecked = [cause for cause, p in zip(PATH_FAILURES[path], predicted, strict=True) if p is None]
    return "; ".join(f"{cause} needs column {THEORY_QUANTITIES[cause][0]}" for cause in unchecked) + (
        ", absent from this table" if unchecked else ""
    )


def theory_columns(
    cells: pd.DataFrame, framework: str, path: str, dtype: str, flushes: bool, brk: Break, accumulation: str = ""
) -> dict:
    """theory_* columns, the measured break, matches_theory and explanation of one group."""
    columns = {
        "theory_cause": "",
        "theory_quantity": "",
        "theory_threshold": np.nan,
        "theory_scale": np.nan,
        "quantity_before_fail": np.nan,
        "quantity_at_fail": np.nan,
        "grid_steps_off": pd.NA,
        "bisection": brk.bisection,
        "break_scale_lo": brk.scale_lo,
        "break_scale_hi": brk.scale_hi,
        "break_quantity_lo": np.nan,
        "break_quantity_hi": np.nan,
        "matches_theory": pd.NA,
    }
    predicted = predictions(cells, path, dtype, flushes) if path in PATH_FAILURES else []
    why_not = _unchecked(cells, path, dtype, predicted)
    if why_not:
        return columns | {"explanation": why_not}
    chosen = earliest(predicted)
    if brk.index is None:
        cause, early, agrees = chosen, [], chosen is None
    else:
        fitting = [p for p in predicted if fits(p.threshold, brk.lo[p.quantity], brk.hi[p.quantity] + _slack(cells, p))]
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
    known = facts(framework, path, dtype, flushes, accumulation, quantity_of)
    if agrees:
        explanation = explain_agreement(cells, framework, dtype, flushes, brk, cause, known)
    else:
        explanation = explain_disagreement(
            cells, path, brk, shown if brk.index is not None else None, chosen, early, known
        )
    return columns | {
        "theory_cause": cause.cause if cause else NO_BREAK,
        "matches_theory": agrees,
        "explanation": explanation,
    }


# --- the table ------------------------------------------------------------------------------


def _breaks_by_group(breaks: pd.DataFrame | None, keys: list[str]) -> dict:
    if breaks is None or breaks.empty or not set(keys) <= set(breaks):
        return {}
    return {tuple(row[k] for k in keys): row for _, row in breaks.iterrows()}


def breakdown_frame(errors: pd.DataFrame, bits_lost_limit: float | None = None, breaks=None) -> pd.DataFrame:
    """One row per framework/path/dtype/family (and device, n_rows, n_classes where present) of an errors table.

    bits_lost_limit is k of "more than k bits lost"; None means half each dtype's significand bits.
    `breaks` is the run's breaks table (harness.sweep.bisect), whose brackets replace the grid's.
    """
    keys = [column for column in GROUP_COLUMNS if column in errors]
    bisected = _breaks_by_group(breaks, keys)
    groups = errors.groupby(keys, sort=False, dropna=False)
    rows = [
        breakdown_row(cells, bits_lost_limit, bisected.get(key if isinstance(key, tuple) else (key,)))
        for key, cells in groups
    ]
    frame = pd.DataFrame(rows, columns=[c for c in BREAKDOWN_COLUMNS if c in keys or c not in GROUP_COLUMNS])
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
