"""Exact reductions of per-row losses: w_i loss_i per kept row, their sum, the weighted mean.

Sums of non-negative values are exact in slices (Rump's ExtractScalar, `_sliced_sum`): a few
passes over the values, relative error below 2**-100 for any number of rows (10**7 in about a
second). Values below 2**-960 (an `ExactValue` exponent < 0) are scaled, not lost.
"""

from __future__ import annotations

import numpy as np

from harness.exact import dd
from harness.exact.dd import ExactValue
from harness.exact.head import _exact_value
from harness.exact.options_dd import _as_dd, _div, _times

REDUCTIONS = ("none", "mean", "sum")


def _sum(value: ExactValue) -> ExactValue:
    """The sum of non-negative ExactValues (n,), as (1,), to 2**-100 relative: each hi and lo scaled
    by one power of two (the largest below 1), then summed exactly in slices (`_sliced_sum`)."""
    hi = value.hi
    if hi.size == 0:
        return ExactValue.of(np.zeros(1), np.zeros(1))
    if not np.all(np.isfinite(hi)):
        bad = np.nan if np.isnan(hi).any() else np.inf
        return ExactValue.of(np.array([bad]), np.zeros(1))
    with np.errstate(under="ignore"):
        if value.exponent.any():
            nonzero = hi != 0
            top = int(dd.binary_exponent(value)[nonzero].max()) + 1 if nonzero.any() else 0
            shift = value.exponent - top
        else:  # one shift for all (the float64 route's rows, and most others)
            top = int(np.frexp(np.abs(hi).max())[1])
            shift = -top
        values = np.ldexp(hi, shift)
        if value.lo.any():
            values = np.concatenate([values, np.ldexp(value.lo, shift)])
        sh, sl = _sliced_sum(values)
    return _exact_value(np.array([sh]), np.array([sl]), np.array([top]))


def _sliced_sum(values) -> tuple[float, float]:
    """sum(values) for |values| < 1 as a dd pair, error below 2**-101 max|values|, in a few passes.

    Rump's ExtractScalar: with sigma = 2**k, k = ceil(log2 n) + 2, q = (sigma + v) - sigma is v
    rounded to a multiple of ulp(sigma), exactly, and so is v - q; the n slices q sum exactly in
    float64 in any order (a multiple of ulp(sigma) below sigma). Each pass takes 53 - k bits off
    every value; after the last the n leftovers, each below 2**-102 / n, are dropped.
    """
    k = int(np.ceil(np.log2(len(values)))) + 2
    parts, rest, bound = [], np.array(values, dtype=np.float64), 0  # |rest| < 2**bound
    q = np.empty_like(rest)
    while bound + k > -102:
        sigma = 2.0 ** (bound + k)
        np.add(rest, sigma, out=q)
        q -= sigma
        parts.append(float(q.sum()))
        rest -= q
        bound += k - 53
    hi, lo = 0.0, 0.0
    for part in parts:
        hi, lo = dd.add(hi, lo, part, 0.0)
    return float(hi), float(lo)


def weighted(value: ExactValue, w) -> ExactValue:
    """w * value: w hi exactly by two_prod, plus w lo; rows with an exponent or a product below
    2**-960 (where two_prod's low part may underflow) by `_times`; inf and NaN times w as they are."""
    p, e = dd.two_prod(w, value.hi)
    hi, lo = dd.fast_two_sum(p, e + w * value.lo)
    exponent = np.zeros(len(hi), dtype=np.int64)
    finite = np.isfinite(value.hi)
    hi, lo = np.where(finite, hi, value.hi * w), np.where(finite, lo, 0.0)
    slow = finite & ((value.exponent != 0) | ((np.abs(hi) < dd.HELD_FROM) & (hi != 0)))
    if slow.any():
        small = _times(ExactValue(*(part[slow] for part in value)), ExactValue.of(w[slow], np.zeros(slow.sum())))
        hi[slow], lo[slow], exponent[slow] = small
    return ExactValue(hi, lo, exponent)


def exact_reduced(row_losses: ExactValue, weights, kept, reduction: str) -> ExactValue | None:
    """The exact reduced loss: w_i loss_i per kept row (none, 0 elsewhere), their sum, or that sum
    divided by sum_i w_i over the kept rows (mean; None, undefined, when that is 0). weights (rows,)
    or None (w = 1), e.g. `row_weights`; sums good to 2**-100 relative (non-negative terms)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not one of {', '.join(REDUCTIONS)}")
    kept = np.asarray(kept, bool)
    if weights is not None and np.all((np.asarray(weights) == 1) | ~kept):
        weights = None  # unit weights (no class weights): nothing to multiply, the divisor a count
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        rows = row_losses
        if weights is not None:
            w = np.where(kept, np.asarray(weights, dtype=np.float64), 0.0)
            rows = weighted(row_losses, w)
        if not kept.all():
            rows = ExactValue(*(np.where(kept, part, 0) for part in rows))
        if reduction == "none":
            return rows
        total = _sum(rows)
        if reduction == "sum":
            return total
        if weights is None:
            divisor = ExactValue.of(np.array([float(kept.sum())]), np.zeros(1))
        else:
            divisor = _sum(ExactValue.of(w, np.zeros_like(w)))
        if divisor.hi[0] == 0:
            return None
        if not np.isfinite(total.hi[0]):  # inf / W = inf, NaN stays NaN
            return total
        mantissa, binade = np.frexp(total.hi)
        qh, ql = _div(mantissa, np.ldexp(total.lo, -binade), *_as_dd(divisor))
        return _exact_value(qh, ql, total.exponent + binade)
