"""The edge cases of experiment edge_cases: invalid or extreme inputs, their exact answers, and the
outcome vocabulary that says what a framework made of them.

Each case changes one row of a small standard-normal input (the edge row, `EDGE_ROW`, the first:
see harness.paths.edge_cases) in float64, before the input is rounded to each dtype, so every
framework sees the same bits, labels included (out-of-range labels are passed as the raw integers).
The exact answers come from the references (harness.exact.options), which know masked (-inf)
logits: +inf for a -inf at the label, NaN (undefined) for a row of -inf or a NaN logit; a label
outside [0, n_classes) has no exact loss, and a mean over no kept rows none either.

Outcomes (loss and gradient alike): `exact` (within half the dtype's significand bits of the exact
value, or the infinity it rounds to), `wrong` (a number, or inf, that is not), `number` (a finite
number where no exact value exists: silently returned), `inf`, `nan`, `error` (raised),
`unsupported` (not called; the message says why).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.dtypes import FloatFormat
from harness.errors import ConfigError
from harness.exact.dd import ExactValue
from harness.exact.options import LossOptions, exact_option_gradient, exact_reduced, exact_row_losses, row_weights
from harness.paths.edge_cases import EDGE_ROW
from harness.paths.options import IGNORE_INDEX, CellOptions
from harness.sweep import metrics
from harness.sweep.edge_catalogue import CASES_BY_NAME, EDGE_CASES, EXACT, NUMBER, OUTCOMES, WRONG, EdgeCase  # noqa: F401 (edge_runner and tests import them from here)
from harness.sweep.option_inputs import option_inputs


def case_options(case: EdgeCase) -> CellOptions | None:
    """The loss options the case runs with (through the option layer), or None: the bare loss."""
    return CellOptions(reduction="mean", ignore_fraction=1.0) if case.reduction == "mean" else None


EDGE_LABEL, OTHER_CLASS = 0, 1  # the edge row's label, and the class other than it that a case changes


def edge_input(case: EdgeCase, z: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The float64 logits and the labels of a case: (z, labels) with the edge row's label set to
    class 0 (so a label of -1, read as the last class where indices wrap, is another class) and
    the edge row changed (copies)."""
    x, y = np.array(z, dtype=np.float64), np.array(labels, dtype=np.int64)
    row, n_classes, other = EDGE_ROW, x.shape[1], OTHER_CLASS
    y[row] = EDGE_LABEL
    if case.name == "neg_inf_other":
        x[row, other] = -np.inf
    elif case.name == "neg_inf_label":
        x[row, y[row]] = -np.inf
    elif case.name == "all_neg_inf":
        x[row] = -np.inf
    elif case.name == "nan_logit":
        x[row, other] = np.nan
    elif case.name == "label_n_classes":
        y[row] = n_classes
    elif case.name == "label_minus_one":
        y[row] = -1
    return x, y


def shown_label(case: EdgeCase, labels: np.ndarray) -> int:
    """The edge row's label as the framework is asked to read it (the ignore index where ignored)."""
    return IGNORE_INDEX if case_options(case) is not None else int(labels[EDGE_ROW])


@dataclass(frozen=True)
class EdgeExact:
    """The exact loss (per row; one value for a mean) and gradient d(sum or mean)/d(logits) of a case's
    dtype-rounded input, NaN where undefined."""

    loss: ExactValue
    gradient: ExactValue


def _undefined_like(shape) -> ExactValue:
    return ExactValue(np.full(shape, np.nan), np.zeros(shape), np.zeros(shape, dtype=np.int64))


def exact_values(case: EdgeCase, held: np.ndarray, labels: np.ndarray, fmt: FloatFormat, seed: int) -> EdgeExact:
    """The references on the rounded logits `held`: rows whose label is out of range have none (NaN)."""
    n_rows, n_classes = held.shape
    if case_options(case) is not None:
        kept = option_inputs(labels, n_classes, case_options(case), seed).kept
        options = LossOptions(ignored=~kept)
        safe = np.where(kept, labels, 0)
        rows = exact_row_losses(held, safe, options, fmt.precision)
        value = exact_reduced(rows, row_weights(safe, options), kept, "mean")
        gradient = exact_option_gradient(held, safe, options, "mean", None, fmt.precision)
        return EdgeExact(
            value if value is not None else _undefined_like(1),
            gradient if gradient is not None else _undefined_like(held.shape),
        )
    in_range = (labels >= 0) & (labels < n_classes)
    options = LossOptions(ignored=~in_range)
    safe = np.where(in_range, labels, 0)
    loss = exact_row_losses(held, safe, options, fmt.precision)
    gradient = exact_option_gradient(held, safe, options, "none", None, fmt.precision)
    loss.hi[~in_range] = np.nan  # the reference reads an ignored row as 0; out of range has no loss
    gradient.hi[~in_range] = np.nan
    return EdgeExact(loss, gradient)


# --- outcomes: pure functions of a returned value and the exact one --------------------------------


def half_bits_lost(ulp_err: float, fmt: FloatFormat) -> bool:
    """More than half the dtype's significand bits lost (the breakdown's default limit)."""
    return bool(metrics.bits_lost(ulp_err) > fmt.precision / 2)


def loss_outcome(value: float, hi: float, lo: float, fmt: FloatFormat, exponent: int = 0) -> str:
    """What one returned loss is against the exact (hi + lo) 2**exponent (hi NaN: undefined)."""
    if np.isnan(value):
        return metrics.NAN
    if np.isnan(hi):
        return metrics.INF if np.isinf(value) else NUMBER
    if np.isinf(value):
        rounds_there = bool(fmt.rounds_to_inf(hi, lo)) and np.sign(hi) == np.sign(value)
        return EXACT if rounds_there else metrics.INF
    if np.isinf(hi):
        return WRONG
    ulp_err = float(metrics.ulp_error(np.array([value]), np.array([hi]), np.array([lo]), fmt, exponent)[0])
    return WRONG if half_bits_lost(ulp_err, fmt) else EXACT


def gradient_outcome(row: np.ndarray, hi: np.ndarray, lo: np.ndarray, fmt: FloatFormat, exponent=0) -> str:
    """What one returned gradient row is against the exact row (any NaN in it: undefined). `exact`:
    every entry within 2**-(p/2) of the row's largest exact entry (half the bits of the scale)."""
    row = np.asarray(row, dtype=np.float64)
    if np.isnan(row).any():
        return metrics.NAN
    if np.isnan(hi).any():
        return metrics.INF if np.isinf(row).any() else NUMBER
    if np.isinf(row).any():
        return metrics.INF
    return WRONG if gradient_row_error(row, hi, lo, fmt, exponent) > 2.0 ** (-fmt.precision / 2) else EXACT


def gradient_row_error(row: np.ndarray, hi: np.ndarray, lo: np.ndarray, fmt: FloatFormat, exponent=0) -> float:
    """Largest entry error over the row's largest exact entry (grad_errors' max_row_rel_err); NaN
    where the row is not finite or has no exact value."""
    row = np.asarray(row, dtype=np.float64)
    if np.isnan(hi).any() or not np.isfinite(row).all():
        return float("nan")
    exponent = np.broadcast_to(np.asarray(exponent, dtype=np.int64), np.shape(hi))
    found = metrics.gradient_metrics(row[None, :], hi[None, :], lo[None, :], fmt, exponent[None, :])
    return float(found["max_row_rel_err"])


def worst(outcomes) -> str:
    """The worst of several outcomes, in OUTCOMES order ('' for none)."""
    found = [o for o in outcomes if o]
    return max(found, key=OUTCOMES.index) if found else ""


def edge_shape(sweep) -> tuple[list[int], list[int]]:
    """The sweep's row and class counts as lists (each setting is one integer or several)."""
    return [int(n) for n in np.atleast_1d(sweep.n_rows)], [int(n) for n in np.atleast_1d(sweep.n_classes)]


def check_settings(sweep) -> None:
    """edge_cases=true runs one n_rows x n_classes input of logits through the built-in paths."""
    if not sweep.edge_cases:
        return
    n_rows, n_classes = edge_shape(sweep)
    if len(n_rows) > 1 or len(n_classes) > 1:
        raise ConfigError(f"edge_cases takes one n_rows and one n_classes, got n_rows={n_rows}, n_classes={n_classes}")
    if n_rows[0] < 2:
        raise ConfigError(f"edge_cases needs n_rows >= 2 (the edge row and a finite one), got {n_rows[0]}")
    if sweep.custom_paths:
        raise ConfigError("edge_cases runs the built-in paths only; drop custom_paths (custom_paths=[])")
