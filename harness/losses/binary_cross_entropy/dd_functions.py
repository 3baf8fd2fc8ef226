"""Double-double functions beyond `harness.exact.dd`: division, exp of any sign, expm1, log1p of any
sign, the series of the KL and BCE terms, and sums of `ExactValue`s of different exponents.

Built only from dd's error-free transformations (`two_sum`, `two_prod`, `add`, `mul`) and its
`exp` (arguments <= 0, about 2**-90 relative above exp(-665)); nothing here knows a loss. Every
function takes and returns (hi, lo) float64 arrays, or an `ExactValue` where a result may lie
below float64's normal range.
"""

from __future__ import annotations

from fractions import Fraction
from math import factorial

import numpy as np

from harness.exact import dd
from harness.exact.dd import LN2_HI, LN2_LO, ExactValue

SERIES_BELOW = 0.5  # |argument| below this: the power series (up to 30 terms: 0.5**28 / 30! < 2**-136)
_TERMS = 30
_EXP_OVERFLOW = 709.78  # exp(y) overflows float64 beyond about this
ZERO_EXPONENT = np.iinfo(np.int64).min // 4  # binary exponent given to an exact zero (below everything)


def as_dd(value: Fraction) -> tuple[float, float]:
    """A rational as a double-double, to 2**-106 relative."""
    hi = float(value)
    return hi, float(value - Fraction(hi))


def div(ah, al, bh, bl):
    """dd / dd, to about 2**-104 relative: two correction steps of long division."""
    ah, al, bh, bl = (np.asarray(v, dtype=np.float64) for v in (ah, al, bh, bl))
    q1 = ah / bh
    ph, pl = dd.mul(bh, bl, q1, np.zeros_like(q1))
    rh, rl = dd.add(ah, al, -ph, -pl)
    q2 = rh / bh
    ph, pl = dd.mul(bh, bl, q2, np.zeros_like(q2))
    rh, rl = dd.add(rh, rl, -ph, -pl)
    q3 = rh / bh
    qh, ql = dd.fast_two_sum(q1, q2)
    return dd.add(qh, ql, q3, np.zeros_like(q3))


def exp_any(yh, yl):
    """exp of a dd argument of either sign (float64's range: inf past about 709.78, 0 below about
    -745), as dd: y = k ln2 + r with r in (-ln2, 0], exp(r) by dd.exp, then times 2**k exactly."""
    yh, yl = np.asarray(yh, dtype=np.float64), np.asarray(yl, dtype=np.float64)
    positive = yh > 0
    k = np.where(positive, np.ceil(np.where(positive, yh, 0.0) / LN2_HI), 0.0)
    ph, pl = dd.two_prod(k, LN2_HI)
    rh, rl = dd.add(yh, yl, -ph, -(pl + k * LN2_LO))
    rh, rl = np.minimum(rh, 0.0), np.where(rh > 0, 0.0, rl)  # r is at most a rounding above 0
    eh, el = dd.exp(rh, rl)
    with np.errstate(over="ignore"):
        scale = k.astype(np.int64)
        return np.ldexp(eh, scale), np.ldexp(el, scale)


def _terms_needed(largest: float, coefficients) -> int:
    """How many leading terms of sum_k c_k y**k make the first one dropped smaller than 2**-110 c_0."""
    for count in range(1, len(coefficients)):
        if largest**count * abs(coefficients[count][0]) < 2.0**-110 * abs(coefficients[0][0]):
            return count
    return len(coefficients)


def _horner(yh, yl, coefficients):
    """sum_k c_k y**k for dd coefficients c_0, c_1, ...: Horner's rule in dd, over as many terms as
    the largest |y| needs (the first dropped term below 2**-110 of c_0: 3 terms at |y| = 1e-12)."""
    largest = float(np.max(np.abs(yh), initial=0.0))
    coefficients = coefficients[: _terms_needed(largest, coefficients)]
    ph = np.full(np.shape(yh), coefficients[-1][0])
    pl = np.full(np.shape(yh), coefficients[-1][1])
    for ch, cl in reversed(coefficients[:-1]):
        ph, pl = dd.mul(ph, pl, yh, yl)
        ph, pl = dd.add(ph, pl, np.full(np.shape(yh), ch), np.full(np.shape(yh), cl))
    return ph, pl


_EXPM1 = [as_dd(Fraction(1, factorial(k))) for k in range(1, _TERMS + 1)]  # expm1(y) = y sum y**k/(k+1)!
# chi(u) = exp(-u) - 1 + u = u**2 sum_m (-u)**m / (m+2)!;  phi(u) = 1 + (u - 1) exp(u) = u**2 sum_m (m+1) u**m / (m+2)!
_CHI = [as_dd(Fraction((-1) ** m, factorial(m + 2))) for m in range(_TERMS)]
_PHI = [as_dd(Fraction(m + 1, factorial(m + 2))) for m in range(_TERMS)]


def _branches(small, yh, yl, small_fn, large_fn):
    """small_fn on the elements where `small`, large_fn on the others, each evaluated only where used."""
    hi, lo = np.zeros(yh.shape), np.zeros(yh.shape)
    for where, fn in ((small, small_fn), (~small, large_fn)):
        if where.any():
            hi[where], lo[where] = fn(yh[where], yl[where])
    return hi, lo


def _expm1_series(yh, yl):
    sh, sl = _horner(yh, yl, _EXPM1)
    return dd.mul(sh, sl, yh, yl)


def _expm1_by_exp(yh, yl):
    with np.errstate(over="ignore", invalid="ignore"):
        eh, el = exp_any(yh, yl)
        return dd.add(eh, el, -np.ones_like(eh), np.zeros_like(eh))


def expm1(yh, yl):
    """exp(y) - 1 of a dd argument (y up to about 709), as dd: the series below 1/2, else exp(y) - 1,
    where exp(y) is at least 0.39 away from 1 (at most 2 bits cancel)."""
    yh, yl = np.asarray(yh, dtype=np.float64), np.asarray(yl, dtype=np.float64)
    return _branches(np.abs(yh) < SERIES_BELOW, yh, yl, _expm1_series, _expm1_by_exp)


def _u2_series(coefficients):
    def series(uh, ul):
        ph, pl = _horner(uh, ul, coefficients)
        qh, ql = dd.mul(uh, ul, uh, ul)
        return dd.mul(ph, pl, qh, ql)

    return series


def _chi_by_exp(uh, ul):
    eh, el = expm1(-uh, -ul)
    return dd.add(eh, el, uh, ul)


def chi(uh, ul):
    """exp(-u) - 1 + u >= 0 for dd u >= -1/2 (a KL term over p): the series below 1/2 (no cancellation),
    else expm1(-u) + u, where at most 3 bits cancel."""
    uh, ul = np.asarray(uh, dtype=np.float64), np.asarray(ul, dtype=np.float64)
    return _branches(np.abs(uh) < SERIES_BELOW, uh, ul, _u2_series(_CHI), _chi_by_exp)


def _phi_by_exp(uh, ul):
    eh, el = dd.exp(np.minimum(uh, 0.0), ul)
    mh, ml = dd.add(uh, ul, -np.ones_like(uh), np.zeros_like(uh))
    ph, pl = dd.mul(mh, ml, eh, el)
    return dd.add(ph, pl, np.ones_like(uh), np.zeros_like(uh))


def phi(uh, ul):
    """1 + (u - 1) exp(u) >= 0 for dd u <= 1/2 (a KL term over q): the series below 1/2 (no cancellation),
    else 1 + (u - 1) exp(u), where at most 4 bits cancel."""
    uh, ul = np.asarray(uh, dtype=np.float64), np.asarray(ul, dtype=np.float64)
    return _branches(np.abs(uh) < SERIES_BELOW, uh, ul, _u2_series(_PHI), _phi_by_exp)


_LOG1P_SERIES_BELOW = 1.0 / 32  # |t| below this: t sum (-t)**k / (k + 1), up to 40 terms (32**-39 / 40 < 2**-200)
_LOG1P = [as_dd(Fraction((-1) ** k, k + 1)) for k in range(40)]


def _log1p_series(th, tl):
    sh, sl = _horner(th, tl, _LOG1P)
    return dd.mul(sh, sl, th, tl)


def _log1p_by_newton(th, tl):
    """One Newton step from float64's log1p: l0 + ((1 + t) exp(-l0) - 1); |l| > 1/45 here, so exp's
    2**-90 stays within 2**-84 of the result."""
    l0 = np.log1p(th)
    eh, el = exp_any(-l0, np.zeros_like(l0))
    uh, ul = dd.two_sum(np.ones_like(th), th)
    uh, ul = dd.fast_two_sum(uh, ul + tl)
    ph, pl = dd.mul(uh, ul, eh, el)
    rh, rl = dd.add(ph, pl, -np.ones_like(ph), np.zeros_like(ph))
    return dd.fast_two_sum(l0, rh + rl)


def log1p(th, tl):
    """log(1 + t) of a dd argument t > -1 of either sign, as dd: the series below 1/32 in magnitude,
    else one Newton step from float64's log1p."""
    th, tl = np.asarray(th, dtype=np.float64), np.asarray(tl, dtype=np.float64)
    return _branches(np.abs(th) < _LOG1P_SERIES_BELOW, th, tl, _log1p_series, _log1p_by_newton)


def held_exactly(values) -> ExactValue:
    """float64 values as ExactValues, exactly: subnormals too (significand and exponent by frexp)."""
    mantissa, exponent = np.frexp(np.asarray(values, dtype=np.float64))
    return dd.normalized(mantissa, np.zeros_like(mantissa), exponent.astype(np.int64))


def times(value: ExactValue, ch, cl) -> ExactValue:
    """An ExactValue times a dd (of ordinary size): the exponent is kept, then normalized."""
    hi, lo = dd.mul(value.hi, value.lo, np.asarray(ch, dtype=np.float64), np.asarray(cl, dtype=np.float64))
    return dd.normalized(hi, lo, value.exponent)


def product(a: ExactValue, b: ExactValue) -> ExactValue:
    """The product of two ExactValues (exponents add)."""
    hi, lo = dd.mul(a.hi, a.lo, b.hi, b.lo)
    return dd.normalized(hi, lo, a.exponent + b.exponent)


def negated(value: ExactValue) -> ExactValue:
    return ExactValue(-value.hi, -value.lo, value.exponent)


def binary_exponents(value: ExactValue) -> np.ndarray:
    """floor(log2 |value|) up to lo's rounding; exact zeros get a binary exponent below every other."""
    return np.where(value.hi == 0, ZERO_EXPONENT, dd.binary_exponent(value))


def sum_last_axis(values: ExactValue) -> ExactValue:
    """Sum ExactValues of shape (..., n) along the last axis: each is brought to the scale of the
    largest of its row (2**E), summed pairwise in dd, and the sum carries exponent E, so a sum
    below float64's range keeps its relative accuracy. A term more than about 2**1000 below the
    row's largest is dropped (it underflows), far below the sum's last bit."""
    exponents = binary_exponents(values)
    top = exponents.max(axis=-1)
    top = np.where(top == ZERO_EXPONENT, 0, top)
    shift = np.maximum(values.exponent - top[..., None], -2000)
    with np.errstate(under="ignore"):
        hi = np.ldexp(values.hi, shift)
        lo = np.ldexp(values.lo, shift)
    shape = hi.shape
    sh, sl = dd.sum_rows(hi.reshape(-1, shape[-1]), lo.reshape(-1, shape[-1]))
    return dd.normalized(sh.reshape(shape[:-1]), sl.reshape(shape[:-1]), top)
