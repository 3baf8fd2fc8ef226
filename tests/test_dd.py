"""Double-double exp and log1p against mpmath at 256 bits: more than 20 bits beyond float64."""

import mpmath
import numpy as np
from conftest import dd_value, rel_diff  # noqa: F401

from harness.exact import dd

BITS_BEYOND_FLOAT64 = 2.0**-75  # 22 bits past float64's 2**-53


def test_two_sum_and_two_prod_are_exact(rng):
    a = rng.standard_normal(1000) * 10.0 ** rng.integers(-10, 10, 1000)
    b = rng.standard_normal(1000) * 10.0 ** rng.integers(-10, 10, 1000)
    s, e = dd.two_sum(a, b)
    p, f = dd.two_prod(a, b)
    with mpmath.workprec(400):
        for i in range(0, 1000, 37):
            assert mpmath.mpf(s[i]) + mpmath.mpf(e[i]) == mpmath.mpf(a[i]) + mpmath.mpf(b[i])
            assert mpmath.mpf(p[i]) + mpmath.mpf(f[i]) == mpmath.mpf(a[i]) * mpmath.mpf(b[i])


def test_exp_matches_mpmath(rng):
    hi = np.concatenate(
        [-rng.uniform(0, 745, 400), -rng.uniform(0, 2**-12, 100), -(10.0 ** rng.uniform(-300, 0, 100)), [0.0, -708.0]]
    )
    lo = hi * rng.uniform(-1, 1, hi.size) * 2**-54
    eh, el = dd.exp(hi, lo)
    for h, l, rh, rl in zip(hi, lo, eh, el, strict=True):
        exact = mpmath.exp(dd_value(h, l))
        # below 2**-969 the low word underflows: a few units of 2**-1074 is what is left
        assert abs(dd_value(rh, rl) - exact) <= max(BITS_BEYOND_FLOAT64 * exact, 2.0**-1072)


def test_exp_underflows_to_zero_and_rejects_positive_arguments():
    eh, el = dd.exp(np.array([-746.0, -np.inf]), np.zeros(2))
    assert eh.tolist() == [0.0, 0.0] and el.tolist() == [0.0, 0.0]
    try:
        dd.exp(np.array([1.0]), np.zeros(1))
    except ValueError:
        return
    raise AssertionError("dd.exp accepted a positive argument")


def test_log1p_matches_mpmath_across_both_branches(rng):
    hi = np.concatenate([10.0 ** rng.uniform(-300, 6, 400), [2**-20, 2**-20 * (1 - 2**-52), 1.0, 0.0]])
    lo = hi * rng.uniform(-1, 1, hi.size) * 2**-54
    lh, ll = dd.log1p(hi, lo)
    for h, l, rh, rl in zip(hi, lo, lh, ll, strict=True):
        exact = mpmath.log1p(dd_value(h, l))
        assert rel_diff(dd_value(rh, rl), exact) < BITS_BEYOND_FLOAT64


def test_sum_rows_of_odd_width_is_exact_for_exact_terms():
    hi = np.array([[1.0, 2.0**-60, 2.0**-60, 3.0, 2.0**-70]])
    sh, sl = dd.sum_rows(hi, np.zeros_like(hi))
    assert dd_value(sh[0], sl[0]) == 4 + mpmath.mpf(2) ** -59 + mpmath.mpf(2) ** -70
