"""The double-double functions the BCE and KL references are built from, against mpmath at 256 bits:
division, exp of either sign, expm1 and log1p of either sign, the KL terms chi and phi, and sums of
ExactValues of different exponents."""

import mpmath
import numpy as np

from harness.exact.dd import ExactValue
from harness.losses.binary_cross_entropy import dd_functions as ddf

RELATIVE = mpmath.mpf(2) ** -84  # dd.exp is good to about 2**-90; chi's expm1(-u) + u cancels up to 3 bits
ABSOLUTE = mpmath.mpf(2) ** -1070  # below 2**-969 a double-double's low word underflows


def value(hi, lo, i):
    return mpmath.mpf(float(hi[i])) + mpmath.mpf(float(lo[i]))


def assert_relative(got, exact, where):
    assert abs(got - exact) <= max(RELATIVE * abs(exact), ABSOLUTE), (where, float(abs(got - exact) / abs(exact)))


def test_division(rng):
    ah, bh = rng.standard_normal(200) * 10.0 ** rng.integers(-20, 20, 200), rng.standard_normal(200) * 1e3
    al, bl = ah * 2.0**-60, bh * -(2.0**-58)
    qh, ql = ddf.div(ah, al, bh, bl)
    with mpmath.workprec(256):
        for i in range(200):
            assert_relative(value(qh, ql, i), value(ah, al, i) / value(bh, bl, i), i)


def test_exp_of_either_sign_expm1_and_log1p(rng):
    y = np.concatenate([rng.uniform(-700, 700, 200), rng.uniform(-0.1, 0.1, 100), 10.0 ** rng.uniform(-300, -1, 50)])
    y = np.concatenate([y, -y[-50:]])
    lo = y * 2.0**-70
    eh, el = ddf.exp_any(y, lo)
    mh, ml = ddf.expm1(y, lo)
    t = np.concatenate(
        [rng.uniform(-0.99, 3, 200), 10.0 ** rng.uniform(-300, -1, 50), -(10.0 ** rng.uniform(-300, -1, 50))]
    )
    lh, ll = ddf.log1p(t, t * 2.0**-70)
    with mpmath.workprec(256):
        for i in range(len(y)):
            exact_y = value(y, lo, i)
            assert_relative(value(eh, el, i), mpmath.exp(exact_y), ("exp", y[i]))
            assert_relative(value(mh, ml, i), mpmath.expm1(exact_y), ("expm1", y[i]))
        for i in range(len(t)):
            assert_relative(
                value(lh, ll, i), mpmath.log1p(mpmath.mpf(t[i]) * (1 + mpmath.mpf(2) ** -70)), ("log1p", t[i])
            )


def test_chi_and_phi_keep_relative_accuracy_for_tiny_arguments(rng):
    u = np.concatenate([10.0 ** rng.uniform(-15, 1, 200), rng.uniform(0.05, 0.6, 200), [1e-300, 2.0**-30, 0.5, 30.0]])
    ch, cl = ddf.chi(u, np.zeros_like(u))
    ph, pl = ddf.phi(-u, np.zeros_like(u))
    with mpmath.workprec(256):
        for i in range(len(u)):
            x = mpmath.mpf(u[i])
            assert_relative(value(ch, cl, i), mpmath.expm1(-x) + x, ("chi", u[i]))
            assert_relative(value(ph, pl, i), 1 + (-x - 1) * mpmath.exp(-x), ("phi", -u[i]))


def test_sum_of_values_of_different_exponents():
    # 3 * 2**-1100 + 2**-1100 (below float64) and 1 + 2**-1000 * 2**-100 (the small one far below the last bit)
    values = ExactValue(np.array([[0.75, 0.25], [1.0, 0.5]]), np.zeros((2, 2)), np.array([[-1098, -1098], [0, -1099]]))
    total = ddf.sum_last_axis(values)
    assert total.exponent[0] < 0 and np.ldexp(total.hi[0], total.exponent[0] + 1098) == 1.0
    assert total.exponent[1] == 0 and total.hi[1] == 1.0
