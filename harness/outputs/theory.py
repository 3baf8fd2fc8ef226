"""Theory on a combination's grid of scales: which mechanisms its path entry declares, where each
threshold is passed, and where the path was measured to break (harness.outputs.breakdown's parts).

Thresholds come from harness.mechanisms: from the facts the backend measured of the framework's exp
and division (the errors table's `exp_overflow`, `exp_underflow`, `quotient_flushes`); in a table
from before those columns, in the dtype its exp really computes in (the measured `exp_dtype`) with
the measured `flushes_subnormals`. The mechanisms come from the table's `mechanisms` column, written
from the path entries."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.dtypes import DTYPES
from harness.losses.limits import TOLERANCE  # a threshold within 1% of the measured break agrees with it
from harness.mechanisms import (
    EXP_OVERFLOW,
    MAX_CLASS_GAP,
    MAX_NEG_TARGET_LOGIT,
    MAX_TARGET_GAP,
    SUM_OVERFLOW,
    THEORY_QUANTITIES,
    ExpFacts,
    Limit,
    exp_overflow_applies,
    failure_mechanisms,
    measured_limits,
    threshold,
)
from harness.sweep import metrics
from harness.sweep.journal import OPTION_COLUMNS, OPTION_DEFAULTS

NO_BREAK = "none"
MEASURABLY = TOLERANCE / 2  # a measured exp range this far inside the dtype's own sets a threshold of its own

QUANTITIES = ("max_logit", "max_lse", "max_exact_loss", "max_class_loss", MAX_CLASS_GAP, MAX_TARGET_GAP)
QUANTITIES += (MAX_NEG_TARGET_LOGIT,)
EXP_FACT_COLUMNS = ("exp_overflow", "exp_underflow", "quotient_flushes")

# Only for reading errors tables written before the measured `flushes_subnormals` column (every run
# since records it, measured by the backend): (framework, dtype, device) whose computed results flush
# subnormals to zero, as measured on CPU with JAX 0.10.2 (jitted, x64 enabled). NumPy and PyTorch
# keep subnormals in every dtype. Never consulted for a table that has the column.
FLUSHES_SUBNORMALS: frozenset[tuple[str, str, str]] = frozenset(
    {("jax", "bfloat16", "cpu"), ("jax", "float32", "cpu"), ("jax", "float64", "cpu")}
)

# those present; a run from before the loss options has none of OPTION_COLUMNS
GROUP_COLUMNS = ("framework", "path", "dtype", "family", "device", "n_rows", "n_classes") + OPTION_COLUMNS
NOT_THE_PATHS_FAILURE = (metrics.INPUT_INF, metrics.UNSUPPORTED)


# --- thresholds -----------------------------------------------------------------------------


def flushes_subnormals(framework: str, dtype: str, device: str = "cpu") -> bool:
    """The fallback table: only for errors tables from before the measured `flushes_subnormals` column."""
    return (framework, dtype, device) in FLUSHES_SUBNORMALS


def group_mechanisms(cells: pd.DataFrame) -> tuple[str, ...] | None:
    """The failure mechanisms the group's path entry declares (the errors table's `mechanisms`
    column, written from the entries); None where the table says nothing: no theory."""
    return failure_mechanisms(cells["mechanisms"].iloc[0]) if "mechanisms" in cells else None


def theory_dtype(cells: pd.DataFrame, dtype: str) -> str:
    """The dtype thresholds are taken in: the one the framework's exp really computes in (the measured
    `exp_dtype` column: MLX's float64 exp is float32's), else the cells' dtype."""
    measured = cells["exp_dtype"].dropna() if "exp_dtype" in cells else ()
    measured = [d for d in measured if d in DTYPES]
    return measured[0] if measured else dtype


def group_exp_facts(cells: pd.DataFrame) -> ExpFacts | None:
    """The measured exp range and division flushing of the group's framework and dtype (the errors
    table's columns); None in a table from before them, or where the path never ran."""
    if not set(EXP_FACT_COLUMNS) <= set(cells):
        return None
    columns = [cells[c].to_numpy() for c in EXP_FACT_COLUMNS]
    first = first_index(np.logical_and.reduce([~pd.isna(column) for column in columns]))
    if first is None:
        return None
    over, under, flushes = (column[first] for column in columns)
    return ExpFacts(float(over), float(under), bool(flushes))


def group_flushes(cells: pd.DataFrame, framework: str, dtype: str, device: str) -> bool:
    """The errors table's measured `flushes_subnormals` where it has it, else the fallback table."""
    measured = cells["flushes_subnormals"].to_numpy() if "flushes_subnormals" in cells else np.array([])
    first = first_index(~pd.isna(measured))
    return bool(measured[first]) if first is not None else flushes_subnormals(framework, dtype, device)


def object_strings(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with its string columns as NumPy objects, in consolidated blocks (the same values): the
    reports select from a table once per group, and each selection over Arrow-backed strings costs a
    column's worth of slicing and conversion."""
    strings = {c: object for c, dtype in frame.dtypes.items() if isinstance(dtype, pd.StringDtype)}
    return frame.astype(strings).copy() if strings else frame


# --- bits lost ------------------------------------------------------------------------------


def default_bits_lost_limit(dtype: str) -> float:
    """k: half the dtype's significand bits (hidden bit included), e.g. 5.5 for float16."""
    return DTYPES[dtype].precision / 2


def bits_lost_limits(errors: pd.DataFrame, bits_lost_limit: float | None = None) -> dict[str, float]:
    """k of "more than k bits lost" per dtype of `errors`: the run's, else half the dtype's significand bits."""
    return {
        d: default_bits_lost_limit(d) if bits_lost_limit is None else bits_lost_limit for d in errors["dtype"].unique()
    }


# --- theory on the grid ---------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    """Where one mechanism's threshold is first passed: `index` into the grid, None if never."""

    cause: str
    quantity: str  # the column compared with the threshold
    threshold: float
    index: int | None
    values: np.ndarray  # the quantity per grid cell (NaN where the path did not run)
    source: str = "dtype"  # what sets the threshold: the dtype's rounding, or a measured 'exp' or 'quotient'


def first_index(mask) -> int | None:
    hits = np.flatnonzero(np.asarray(mask, dtype=bool))
    return int(hits[0]) if hits.size else None


def predict(cells: pd.DataFrame, limit: Limit) -> Prediction | None:
    """Where the cells (sorted by scale) first pass `limit`; None if no column holds its quantity."""
    quantity = next((c for c in limit.quantities if c in cells and cells[c].notna().any()), None)
    if quantity is None:
        return None
    ran = ~metrics.status_in(cells["status"], NOT_THE_PATHS_FAILURE)
    values = np.where(ran, cells[quantity].to_numpy(dtype=np.float64), np.nan)
    with np.errstate(invalid="ignore"):
        index = first_index(values > limit.threshold)
    return Prediction(limit.cause, quantity, limit.threshold, index, values, limit.source)


def theory_causes(mechanisms, dtype: str, measured: ExpFacts | None) -> tuple[str, ...]:
    """The mechanisms theory checks: those the path declares, and exp overflow where the path
    exponentiates unshifted logits and the framework's exp overflows measurably before the sum."""
    declared = tuple(mechanisms or ())
    implied = measured is not None and SUM_OVERFLOW in declared and exp_overflow_applies(dtype, measured, MEASURABLY)
    return declared + ((EXP_OVERFLOW,) if implied else ())


def theory_limits(mechanisms, dtype: str, flushes: bool, measured: ExpFacts | None = None) -> list[Limit]:
    """The thresholds theory checks, per cause of theory_causes: from the measured exp and division
    facts (a target probability has two, the exp's and the quotient's), else (a table before them)
    the dtype's with `flushes`."""
    causes = theory_causes(mechanisms, dtype, measured)
    if measured is None:
        return [Limit(c, THEORY_QUANTITIES[c], threshold(c, dtype, flushes), "dtype") for c in causes]
    shifts = SUM_OVERFLOW not in causes
    return [limit for c in causes for limit in measured_limits(c, dtype, measured, shifts, MEASURABLY)]


def predictions(
    cells: pd.DataFrame, mechanisms, dtype: str, flushes: bool, measured: ExpFacts | None = None
) -> list[Prediction]:
    """One prediction per limit of theory_limits whose quantity the table holds (a cause none of whose
    quantities it holds has none: harness.outputs.breakdown says so)."""
    found = (predict(cells, limit) for limit in theory_limits(mechanisms, dtype, flushes, measured))
    return [p for p in found if p is not None]


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


OPTION_CELLS_NOTE = "grid only: option cells are not bisected"


def has_options(first) -> bool:
    """Whether a group's cells carry a loss option (harness.sweep.bisect.plain_cells leaves them out)."""
    for column, plain in OPTION_DEFAULTS.items():
        value = first.get(column, plain)
        missing = value is None or (isinstance(value, float) and value != value)
        if (plain is None and not missing) or (plain is not None and not missing and value != plain):
            return True
    return False


def unbisected_note(first, breaks_table: bool) -> str:
    """Why a group's break is the grid's: option cells are never bisected; a plain group lacks a row."""
    if has_options(first):
        return OPTION_CELLS_NOTE
    return "grid only: no row in the breaks table" if breaks_table else "grid only: no breaks table"


def measured_break(cells: pd.DataFrame, index: int | None, bisected, note: str = "grid only: no breaks table") -> Break:
    """The break from the breaks-table row `bisected` (None where it has none: `note` says why) or the grid."""
    note = note if bisected is None else str(bisected["bisection"])
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


def lower_bound_slack(cells: pd.DataFrame, p: Prediction) -> float:
    """ln(n_classes) where sum overflow is stated in max_logit, a lower bound on the log-sum-exp by at most that."""
    lower_bound = p.cause == SUM_OVERFLOW and p.quantity == "max_logit"
    return math.log(cells["n_classes"].iloc[0]) if lower_bound and "n_classes" in cells else 0.0


def passed_before(limit: float, lo: float) -> bool:
    """Whether the quantity was already more than TOLERANCE past `limit` at the last good scale."""
    return bool(np.isfinite(lo) and lo > limit + TOLERANCE * abs(limit))


def unmatched(bisection: str, scale_lo, scale_hi) -> dict:
    """A breakdown row's theory columns before theory is read: the measured bracket, nothing matched."""
    return {
        "theory_cause": "",
        "theory_quantity": "",
        "theory_threshold": np.nan,
        "theory_scale": np.nan,
        "quantity_before_fail": np.nan,
        "quantity_at_fail": np.nan,
        "grid_steps_off": pd.NA,
        "bisection": bisection,
        "break_scale_lo": scale_lo,
        "break_scale_hi": scale_hi,
        "break_quantity_lo": np.nan,
        "break_quantity_hi": np.nan,
        "matches_theory": pd.NA,
    }
