"""The exact binary cross-entropy over logits and its gradient, in double-double.

Per element, with s = sigmoid(x), targets t in [0, 1] and PyTorch's `pos_weight` w (1 by default):

    loss = -(w t log s + (1 - t) log(1 - s)) = w t softplus(-x) + (1 - t) softplus(x)

(log s = -softplus(-x), log(1 - s) = -softplus(x)); with w = 1 it is softplus(x) - t x. Both
terms are non-negative, so the sum never cancels. softplus(z) is z + log1p(exp(-z)) for z > 0
and log1p(exp(z)) for z <= 0, where exp(z) is a scaled dd (`dd.scaled_exp`) and is itself the
answer below 2**-80: so a loss log1p(exp(-x)) of a confident right answer keeps its relative
accuracy down to the subnormals and below 2**-1075 (an `ExactValue` with a negative exponent),
and the loss of a confident wrong answer (about |x|) is exact to 2**-100. The coefficients are
exact: 1 - t by two_sum, w t by two_prod of w and t's significand (a subnormal t keeps every bit).

The gradient d loss / dx = (1 - t) s(x) - w t s(-x), which is s(x) - t for w = 1 (PyTorch's
formula with pos_weight: (1 - t + w t) s(x) - w t). The two terms are formed as ExactValues
(s(-x) = exp(-x) / (1 + exp(-x)) keeps its size however small). Where they nearly cancel, which
happens for t near 1 / (1 + w) and x near 0, the same value is formed as
(1 - t - w t) / 2 + h(x) (1 - t + w t) with h(x) = s(x) - 1/2 = tanh(x / 2) / 2 in dd (x / 4
below 2**-30), whichever of the two forms has the smaller terms; an element where both still
lose more than 30 bits (x near logit(t)) is computed by mpmath at 320 bits.

Accuracy: the loss to about 2**-80 relative, the gradient to about 2**-70 relative (tests check
2**-60 against mpmath at 256 bits at the extremes); for outputs of at most 24 bits the loss takes a
float64 route good to 2**-48 (`exact_binary_cross_entropy`).
"""

from __future__ import annotations

import numpy as np

from harness.exact import dd
from harness.exact.dd import ExactValue
from harness.losses.binary_cross_entropy import dd_functions as ddf

FLOAT64_ROUTE_UP_TO = 24  # significand bits of the output for which the float64 route suffices
LOG1P_IS_ARGUMENT_BELOW = -80  # log1p(e) = e (1 - e/2 + ...): e itself within 2**-81 below 2**-80
_TANH_SERIES_BELOW = 2.0**-30  # h(x) = x/4 - x**3/48 + ...: the cubic term within 2**-63 of x/4
_CANCELLED_BITS = 30  # both gradient forms lose more than this: mpmath
_MPMATH_BITS = 320
_MPMATH_MAX_BITS = 8192


def _checked(logits, targets, pos_weight):
    x = np.asarray(logits, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    w = np.asarray(1.0 if pos_weight is None else pos_weight, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("the exact binary cross-entropy needs finite logits")
    if not np.all((t >= 0) & (t <= 1)):
        raise ValueError("targets must lie in [0, 1]")
    if not np.all(np.isfinite(w) & (w >= 0)):
        raise ValueError("pos_weight must be finite and non-negative")
    return np.broadcast_arrays(x, t, w)


def softplus(z) -> ExactValue:
    """log(1 + exp(z)) of finite float64 z, as an ExactValue (relative accuracy at every size)."""
    z = np.asarray(z, dtype=np.float64)
    positive = z > 0
    e = dd.scaled_exp(-np.abs(z), np.zeros_like(z))  # exp(-|z|) <= 1, scaled where tiny
    tiny = dd.binary_exponent(e) < LOG1P_IS_ARGUMENT_BELOW
    flat_h = np.where(tiny, 0.0, e.to_float64())  # e >= 2**-80 here: exponent 0
    flat_l = np.where(tiny, 0.0, e.lo)
    lh, ll = dd.log1p(flat_h, flat_l)
    big_h, big_l = dd.add(z, np.zeros_like(z), np.where(tiny, e.to_float64(), lh), np.where(tiny, 0.0, ll))
    small = ~positive & tiny  # log1p(exp(z)) = exp(z) to 2**-81
    hi = np.where(positive, big_h, np.where(tiny, e.hi, lh))
    lo = np.where(positive, big_l, np.where(tiny, e.lo, ll))
    exponent = np.where(small, e.exponent, 0)
    return ExactValue(hi, lo, exponent)


def _coefficients(t, w):
    """(w t as an ExactValue, 1 - t as a dd): both exact."""
    mantissa, exponent = np.frexp(t)
    ph, pl = dd.two_prod(w, mantissa)  # exact: mantissa has 53 bits and no exponent to lose
    weighted = dd.normalized(ph, pl, exponent.astype(np.int64))
    return weighted, dd.two_sum(np.ones_like(t), -t)


def exact_binary_cross_entropy(logits, targets, output_precision: int = 53, *, pos_weight=None) -> ExactValue:
    """w t softplus(-x) + (1 - t) softplus(x) per element (broadcast), as an ExactValue.

    For outputs of at most 24 significand bits the same sum is evaluated in float64 (lo = 0):
    softplus(z) = max(z, 0) + log1p(exp(-|z|)), each term non-negative, so the relative error stays
    within a few units of 2**-53 (checked against the double-double route in the tests), more than
    20 bits beyond float32's; elements whose loss is below 2**-960 take the double-double route.
    """
    x, t, w = _checked(logits, targets, pos_weight)
    with np.errstate(under="ignore", over="ignore", invalid="ignore"):
        if output_precision <= FLOAT64_ROUTE_UP_TO:
            return _float64_route(x, t, w)
        return _double_double_route(x, t, w)


def _double_double_route(x, t, w) -> ExactValue:
    weighted, (rest_h, rest_l) = _coefficients(t, w)
    positive_part = ddf.product(weighted, softplus(-x))
    negative_part = ddf.times(softplus(x), rest_h, rest_l)
    return _added(positive_part, negative_part)


def _softplus64(z):
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def _float64_route(x, t, w) -> ExactValue:
    loss = w * t * _softplus64(-x) + (1.0 - t) * _softplus64(x)
    value = ExactValue.of(loss, np.zeros_like(loss))
    tiny = loss < dd.HELD_FROM
    if tiny.any():
        exact = _double_double_route(x[tiny], t[tiny], w[tiny])
        value = ExactValue(*(np.array(part, copy=True) for part in value))
        for part, held in zip(value, exact, strict=True):
            part[tiny] = held
    return value


def _added(a: ExactValue, b: ExactValue) -> ExactValue:
    stacked = ExactValue(*(np.stack([pa, pb], axis=-1) for pa, pb in zip(a, b, strict=True)))
    return ddf.sum_last_axis(stacked)


def sigmoid(x) -> ExactValue:
    """1 / (1 + exp(-x)) of finite float64 x, as an ExactValue (x < 0: exp(x) / (1 + exp(x)), so a
    probability below float64's range keeps its relative accuracy)."""
    x = np.asarray(x, dtype=np.float64)
    e = dd.scaled_exp(-np.abs(x), np.zeros_like(x))
    flat_h, flat_l = e.to_float64(), np.ldexp(e.lo, e.exponent)
    one = np.ones_like(x)
    dh, dl = dd.add(one, np.zeros_like(x), flat_h, flat_l)
    rh, rl = ddf.div(one, np.zeros_like(x), dh, dl)  # 1 / (1 + exp(-|x|))
    small = ddf.times(e, rh, rl)  # exp(-|x|) / (1 + exp(-|x|))
    large = x >= 0
    return ExactValue(np.where(large, rh, small.hi), np.where(large, rl, small.lo), np.where(large, 0, small.exponent))


def half_tanh(x) -> ExactValue:
    """h(x) = sigmoid(x) - 1/2 = tanh(x/2)/2 without cancellation: -expm1(-|x|) / (2 (1 + exp(-|x|)))
    with x's sign, and x/4 (1 - x**2/12) below 2**-30 (held exactly where x is subnormal)."""
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    tiny = a < _TANH_SERIES_BELOW
    safe = np.where(tiny, 1.0, a)
    mh, ml = ddf.expm1(-safe, np.zeros_like(x))
    eh, el = dd.exp(-safe, np.zeros_like(x))
    dh, dl = dd.add(np.ones_like(x), np.zeros_like(x), eh, el)
    qh, ql = ddf.div(-mh, -ml, 2.0 * dh, 2.0 * dl)
    quarter = ddf.held_exactly(x)
    quarter = ExactValue(quarter.hi, quarter.lo, quarter.exponent - 2)  # x / 4, exactly
    series = ddf.times(quarter, *dd.two_sum(np.ones_like(x), -x * x / 12.0))
    sign = np.sign(x)
    return ExactValue(
        np.where(tiny, series.hi, sign * qh), np.where(tiny, series.lo, sign * ql), np.where(tiny, series.exponent, 0)
    )


def exact_binary_cross_entropy_gradient(logits, targets, *, pos_weight=None) -> ExactValue:
    """d loss / dx = (1 - t) sigmoid(x) - w t sigmoid(-x) per element (broadcast), as an ExactValue."""
    x, t, w = _checked(logits, targets, pos_weight)
    with np.errstate(under="ignore", over="ignore", invalid="ignore"):
        weighted, (rest_h, rest_l) = _coefficients(t, w)
        first = ddf.times(sigmoid(x), rest_h, rest_l)
        second = ddf.product(weighted, sigmoid(-x))
        by_terms = _added(first, ddf.negated(second))
        terms_scale = np.maximum(ddf.binary_exponents(first), ddf.binary_exponents(second))

        w_flat = weighted.to_float64()  # the second form needs w t only near 1 / (1 + w): ordinary sizes
        w_lo = np.ldexp(weighted.lo, weighted.exponent)
        sh, sl = dd.add(rest_h, rest_l, -w_flat, -w_lo)
        constant = ExactValue.of(0.5 * sh, 0.5 * sl)  # (1 - t - w t) / 2
        ch, cl = dd.add(rest_h, rest_l, w_flat, w_lo)  # 1 - t + w t
        varying = ddf.times(half_tanh(x), ch, cl)
        by_half = _added(constant, varying)
        half_scale = np.maximum(ddf.binary_exponents(constant), ddf.binary_exponents(varying))

        use_half = half_scale < terms_scale
        chosen = ExactValue(*(np.where(use_half, ph, pt) for ph, pt in zip(by_half, by_terms, strict=True)))
        scale = np.minimum(half_scale, terms_scale)
        cancelled = (chosen.hi != 0) & (ddf.binary_exponents(chosen) < scale - _CANCELLED_BITS)
        cancelled |= (chosen.hi == 0) & (scale > ddf.ZERO_EXPONENT)
        if cancelled.any():
            chosen = _by_mpmath(chosen, cancelled, x, t, w)
        return chosen


def _by_mpmath(value: ExactValue, where, x, t, w) -> ExactValue:
    """The gradient at the marked elements by mpmath, in precision doubled from 320 bits until two
    precisions agree to 2**-80 relative (cancellation takes as many bits as it cancels)."""

    hi, lo, exponent = (np.array(part, copy=True) for part in value)
    for index in zip(*np.nonzero(where), strict=True):
        hi[index], lo[index], exponent[index] = _to_exact(_mp_gradient(*(float(a[index]) for a in (x, t, w))))
    return ExactValue(hi, lo, exponent)


def _mp_gradient(x: float, t: float, w: float):
    import mpmath

    previous = None
    bits = _MPMATH_BITS
    while True:
        with mpmath.workprec(bits):
            xm, tm, wm = mpmath.mpf(x), mpmath.mpf(t), mpmath.mpf(w)
            g = (1 - tm) / (1 + mpmath.exp(-xm)) - wm * tm / (1 + mpmath.exp(xm))
        if previous is not None and (g == previous or abs(g - previous) <= abs(g) * mpmath.mpf(2) ** -80):
            return g
        if bits > _MPMATH_MAX_BITS:
            return g
        previous, bits = g, 2 * bits


def _to_exact(g) -> tuple[float, float, int]:
    """An mpmath number as (hi, lo, exponent) with hi in [1/2, 1) (0 stays 0), normalized as dd does."""
    import mpmath

    if g == 0:
        return 0.0, 0.0, 0
    mantissa, exponent = mpmath.frexp(g)
    hi = float(mantissa)
    lo = float(mantissa - hi)
    held = dd.normalized(np.array([hi]), np.array([lo]), np.array([int(exponent)]))
    return float(held.hi[0]), float(held.lo[0]), int(held.exponent[0])
