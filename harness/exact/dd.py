"""Vectorised double-double arithmetic on NumPy float64 arrays.

A double-double (dd) number is an unevaluated sum ``hi + lo`` of two float64 arrays with
``|lo| <= ulp(hi) / 2``: about 106 significant bits. The exact reference needs only ``+``, ``*``,
``exp`` and ``log1p``, each written here with the error-free transformations of Dekker and Knuth
(see Muller et al., *Handbook of Floating-Point Arithmetic*, ch. 4 and 14).

Accuracy: ``add`` and ``mul`` are good to about 2**-104 relative; ``exp`` and ``log1p`` to about
2**-80 (both checked against mpmath in the tests), more than 20 bits beyond float64. Results
below about 2**-969 are good to a few units of 2**-1074 only (float64's absolute resolution),
because ``lo`` underflows there. Values that small are carried instead as an `ExactValue`, a dd
times 2**exponent with an integer exponent array (``scaled_exp``), so nothing underflows.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

_SPLITTER = 134217729.0  # 2**27 + 1, Dekker's splitting constant for float64
_FRACTION_BITS = 12  # exp tables step by 2**-12
_EXP_UNDERFLOW = -745.2  # exp(x) < smallest float64 subnormal / 2 below this


def two_sum(a, b):
    """s + e == a + b exactly, s = fl(a + b)."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def fast_two_sum(a, b):
    """Like two_sum, assuming |a| >= |b| (or a == 0)."""
    s = a + b
    e = b - (s - a)
    return s, e


def _split(a):
    c = _SPLITTER * a
    hi = c - (c - a)
    return hi, a - hi


def two_prod(a, b):
    """p + e == a * b exactly (barring underflow), p = fl(a * b)."""
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


def add(ah, al, bh, bl):
    """dd + dd, the accurate ("IEEE") variant."""
    s, e = two_sum(ah, bh)
    t, f = two_sum(al, bl)
    e = e + t
    s, e = fast_two_sum(s, e)
    e = e + f
    return fast_two_sum(s, e)


def mul(ah, al, bh, bl):
    """dd * dd."""
    p, e = two_prod(ah, bh)
    e = e + (ah * bl + al * bh)
    return fast_two_sum(p, e)


def sum_rows(hi, lo):
    """Sum a (rows, n) dd array along axis 1 by pairwise dd additions: (rows,) dd."""
    while hi.shape[1] > 1:
        if hi.shape[1] % 2:
            pad = np.zeros((hi.shape[0], 1))
            hi = np.concatenate([hi, pad], axis=1)
            lo = np.concatenate([lo, pad], axis=1)
        hi, lo = add(hi[:, 0::2], lo[:, 0::2], hi[:, 1::2], lo[:, 1::2])
    return hi[:, 0], lo[:, 0]


@lru_cache(maxsize=1)
def _exp_tables():
    """exp(i) for integers i in [-746, 0] and exp(f / 2**12) for f in [0, 2**12), as dd.

    Computed once with mpmath at 160 bits, then split into hi + lo float64 pairs.
    """
    import mpmath

    with mpmath.workprec(160):

        def as_dd(values):
            hi = np.array([float(v) for v in values])
            lo = np.array([float(v - mpmath.mpf(h)) for v, h in zip(values, hi, strict=True)])
            return hi, lo

        integers = as_dd([mpmath.exp(i) for i in range(-746, 1)])
        step = mpmath.mpf(2) ** -_FRACTION_BITS
        fractions = as_dd([mpmath.exp(f * step) for f in range(2**_FRACTION_BITS)])
    return integers, fractions


def exp(xh, xl):
    """exp of a dd argument x <= 0, as dd.

    x = i + f/4096 + t with integer i, f in [0, 4096) and -2**-12 < t <= 0 (plus xl): exp(i) and
    exp(f/4096) come from tables, exp(t) from its Taylor series: 1 + t + t**2/2 in dd, the
    terms from t**3/6 on (below 2**-38) in float64.
    """
    xh = np.asarray(xh, dtype=np.float64)
    xl = np.asarray(xl, dtype=np.float64)
    if np.any(xh > 0):
        raise ValueError("dd.exp is defined here for arguments <= 0 only")
    underflow = xh < _EXP_UNDERFLOW
    xh = np.where(underflow, 0.0, xh)
    xl = np.where(underflow, 0.0, xl)
    scaled = np.trunc(xh * 2.0**_FRACTION_BITS)
    a = scaled / 2.0**_FRACTION_BITS  # exact: xh with its bits below 2**-12 dropped
    b = xh - a  # exact: those dropped bits, in (-2**-12, 0]
    i = np.floor(a)
    f = (scaled - i * 2.0**_FRACTION_BITS).astype(np.int64)
    (int_hi, int_lo), (frac_hi, frac_lo) = _exp_tables()
    idx = i.astype(np.int64) + 746
    th, tl = two_sum(b, xl)
    sq_h, sq_l = two_prod(th, th)
    cubic_tail = sq_h * th * (1 / 6 + th * (1 / 24 + th * (1 / 120 + th / 720)))
    eh, el = fast_two_sum(1.0, th)
    eh, el = add(eh, el, 0.5 * sq_h, 0.5 * sq_l + (tl + th * tl + cubic_tail))
    ph, pl = mul(int_hi[idx], int_lo[idx], frac_hi[f], frac_lo[f])
    rh, rl = mul(ph, pl, eh, el)
    return np.where(underflow, 0.0, rh), np.where(underflow, 0.0, rl)


_SERIES_BELOW = 2.0**-20


def log1p(th, tl):
    """log(1 + t) of a dd argument t >= 0, as dd.

    Below 2**-20 by its series (t - t**2/2 + ...), else by one Newton step from float64's
    log1p: l = l0 + ((1 + t) exp(-l0) - 1), whose neglected term is of order 2**-106.
    """
    th = np.asarray(th, dtype=np.float64)
    tl = np.asarray(tl, dtype=np.float64)
    small = th < _SERIES_BELOW
    # series branch: t - t^2/2 + t^3/3 - t^4/4 + t^5/5, with t^2 exact in dd
    sq_h, sq_l = two_prod(th, th)
    sq_l = sq_l + 2.0 * th * tl
    rest = sq_h * th * (1 / 3 - th * (1 / 4 - th / 5))
    sh, sl = add(th, tl, -0.5 * sq_h, -0.5 * sq_l + rest)
    # Newton branch
    safe_t = np.where(small, 1.0, th)
    l0 = np.log1p(safe_t)
    eh, el = exp(-l0, np.zeros_like(l0))
    uh, ul = two_sum(1.0, safe_t)
    uh, ul = fast_two_sum(uh, ul + np.where(small, 0.0, tl))
    ph, pl = mul(uh, ul, eh, el)
    rh, rl = add(ph, pl, -1.0, 0.0)
    nh, nl = fast_two_sum(l0, rh + rl)
    return np.where(small, sh, nh), np.where(small, sl, nl)


LN2_HI, LN2_LO = 0.6931471805599453, 2.3190468138462996e-17  # ln 2 as a dd, to 2**-107
HELD_FROM = 2.0**-960  # values at least this large keep exponent 0: hi + lo holds them to 2**-106
_SCALED_EXP_FROM = -665.0  # exp(-665) = 2**-959.4: from here up exp's dd holds the value
_SCALED_EXP_FLOOR = -(2.0**40)  # exp of anything below is held as exp(-2**40), far under 2**-1075


class ExactValue(NamedTuple):
    """Elementwise exact = (hi + lo) * 2**exponent, exponent an int64 array.

    exponent is 0 wherever the value is at least 2**-960 (``HELD_FROM``), where hi + lo alone
    holds it; only smaller values, which float64 cannot hold to 2**-75, carry a negative one.
    """

    hi: np.ndarray
    lo: np.ndarray
    exponent: np.ndarray

    @classmethod
    def of(cls, hi, lo) -> ExactValue:
        """An ordinary dd, exponent 0."""
        return cls(hi, lo, np.zeros(np.shape(hi), dtype=np.int64))

    def to_float64(self) -> np.ndarray:
        """The float64 value (0 below 2**-1075); off by at most one unit of 2**-1074 below 2**-1022."""
        return np.ldexp(self.hi, self.exponent)


def normalized(hi, lo, exponent) -> ExactValue:
    """The same values with exponent 0 wherever they are at least 2**-960 (exact shifts)."""
    exponent = np.asarray(exponent, dtype=np.int64)
    held = (hi != 0) & (np.frexp(hi)[1] + exponent > np.log2(HELD_FROM))
    shift = np.where(held, exponent, 0)
    return ExactValue(np.ldexp(hi, shift), np.ldexp(lo, shift), exponent - shift)


def scaled_exp(xh, xl) -> ExactValue:
    """exp of a finite dd argument x <= 0 as an ExactValue: nothing underflows.

    Arguments from -665 up (exp above 2**-959) take ``exp`` directly, exponent 0. Below, x is
    split as k ln2 + r with k = ceil(xh / ln2) + 1, so r lies in (-2 ln2, -ln2] and exp(r) in
    (1/4, 1/2] comes from ``exp``; r = x - k ln2 is formed in dd (error about 2**-104 |x|, so
    2**-94 relative for |x| < 1000). Arguments below -2**40 are held as exp(-2**40).
    """
    xh = np.asarray(xh, dtype=np.float64)
    xl = np.asarray(xl, dtype=np.float64)
    deep = xh < _SCALED_EXP_FROM
    eh, el = exp(np.where(deep, 0.0, xh), np.where(deep, 0.0, xl))
    exponent = np.zeros(xh.shape, dtype=np.int64)
    if deep.any():
        eh[deep], el[deep], exponent[deep] = _reduced_exp(xh[deep], xl[deep])
    return ExactValue(eh, el, exponent)


def _reduced_exp(xh, xl) -> ExactValue:
    xh = np.maximum(xh, _SCALED_EXP_FLOOR)
    xl = np.where(xh == _SCALED_EXP_FLOOR, 0.0, xl)
    k = np.ceil(xh / LN2_HI) + 1.0
    ph, pl = two_prod(k, LN2_HI)
    rh, rl = add(xh, xl, -ph, -(pl + k * LN2_LO))
    eh, el = exp(rh, rl)
    return normalized(eh, el, k.astype(np.int64))


def binary_exponent(value: ExactValue) -> np.ndarray:
    """floor(log2 |hi|) + exponent, as int64 (hi != 0); the binade of the value up to lo's rounding."""
    return np.frexp(value.hi)[1].astype(np.int64) - 1 + value.exponent
