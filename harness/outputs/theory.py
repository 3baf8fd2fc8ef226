"""Theory on a combination's grid of scales: which mechanisms its path entry declares, where each
threshold is passed, and where the path was measured to break (harness.outputs.breakdown's parts).

Thresholds come from harness.mechanisms in the dtype the framework's exp really computes in (the
errors table's measured `exp_dtype`), with subnormal flushing as the errors table's measured
`flushes_subnormals` says; the mechanisms from the table's `mechanisms` column, written from the
path entries."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.dtypes import DTYPES
from harness.mechanisms import THEORY_QUANTITIES, failure_mechanisms, threshold
from harness.sweep import metrics
from harness.sweep.journal import OPTION_COLUMNS

NO_BREAK = "none"
TOLERANCE = 0.01  # a threshold within 1% of the measured break quantity agrees with it

QUANTITIES = ("max_logit", "max_lse", "max_exact_loss")

# Fallback for errors tables without the measured `flushes_subnormals` column (runs before it):
# (framework, dtype, device) whose computed results flush subnormals to zero, as measured on CPU
# with JAX 0.10.2 (jitted, x64 enabled). NumPy and PyTorch keep subnormals in every dtype.
FLUSHES_SUBNORMALS: frozenset[tuple[str, str, str]] = frozenset(
    {("jax", "bfloat16", "cpu"), ("jax", "float32", "cpu"), ("jax", "float64", "cpu")}
)

# those present; a run from before the loss options has none of OPTION_COLUMNS
GROUP_COLUMNS = ("framework", "path", "dtype", "family", "device", "n_rows", "n_classes") + OPTION_COLUMNS
NOT_THE_PATHS_FAILURE = (metrics.INPUT_INF, metrics.UNSUPPORTED)


# --- thresholds -----------------------------------------------------------------------------


def flushes_subnormals(framework: str, dtype: str, device: str = "cpu") -> bool:
    """The fallback table, for errors tables without the measured column."""
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


def predictions(cells: pd.DataFrame, mechanisms, dtype: str, flushes: bool) -> list[Prediction | None]:
    """One prediction per mechanism the path is exposed to (None where its quantity is absent)."""
    return [predict(cells, cause, dtype, flushes) for cause in mechanisms or ()]


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


def lower_bound_slack(cells: pd.DataFrame, p: Prediction) -> float:
    """ln(n_classes) where the quantity is max_logit, a lower bound on the log-sum-exp by at most that."""
    return math.log(cells["n_classes"].iloc[0]) if p.quantity == "max_logit" and "n_classes" in cells else 0.0


def passed_before(limit: float, lo: float) -> bool:
    """Whether the quantity was already more than TOLERANCE past `limit` at the last good scale."""
    return bool(np.isfinite(lo) and lo > limit + TOLERANCE * abs(limit))
