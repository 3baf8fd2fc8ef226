"""The exact binary cross-entropy over logits and its gradient against mpmath at 256 bits, at the extremes:
logits from +-1e-300 to +-1e4, hard, soft and subnormal targets, pos_weight, and losses down to and below
float64's subnormals. Agreement is asked to 2**-60 relative (the references are built for about 2**-80)."""

import itertools

import mpmath
import numpy as np
import pytest

from harness.losses.binary_cross_entropy.exact import (
    exact_binary_cross_entropy,
    exact_binary_cross_entropy_gradient,
    sigmoid,
    softplus,
)

RELATIVE = mpmath.mpf(2) ** -60
LOGITS = [1e4, -1e4, 745.0, -745.0, 740.0, -740.0, 40.0, -40.0, 1e-300, -1e-300, 0.0, 5e-324, 2.5, -0.3]
TARGETS = [0.0, 1.0, 0.5, 1e-300, 0.9, 5e-324]


def held(value, index) -> mpmath.mpf:
    """(hi + lo) 2**exponent of one entry, exactly."""
    hi, lo, exponent = (np.asarray(part)[index] for part in value)
    return (mpmath.mpf(float(hi)) + mpmath.mpf(float(lo))) * mpmath.mpf(2) ** int(exponent)


def mp_loss(x, t, w):
    x, t, w = (mpmath.mpf(float(v)) for v in (x, t, w))
    return w * t * mpmath.log1p(mpmath.exp(-x)) + (1 - t) * mpmath.log1p(mpmath.exp(x))


def mp_gradient(x, t, w):
    """At 4096 bits: s(x) - t cancels about 1000 bits at x = 1e-300, t = 1/2."""
    with mpmath.workprec(4096):
        x, t, w = (mpmath.mpf(float(v)) for v in (x, t, w))
        return (1 - t) / (1 + mpmath.exp(-x)) - w * t / (1 + mpmath.exp(x))


def assert_relative(got, exact, where):
    if exact == 0:
        assert got == 0, where
    else:
        assert abs(got - exact) <= RELATIVE * abs(exact), (where, float(abs(got - exact) / abs(exact)))


@pytest.mark.parametrize("pos_weight", [1.0, 3.5, 0.25])
def test_loss_and_gradient_at_the_extremes(pos_weight):
    x, t = (np.array(v) for v in zip(*itertools.product(LOGITS, TARGETS), strict=True))
    loss = exact_binary_cross_entropy(x, t, pos_weight=pos_weight)
    gradient = exact_binary_cross_entropy_gradient(x, t, pos_weight=pos_weight)
    with mpmath.workprec(256):
        for i in range(len(x)):
            assert_relative(held(loss, i), mp_loss(x[i], t[i], pos_weight), ("loss", x[i], t[i]))
            assert_relative(held(gradient, i), mp_gradient(x[i], t[i], pos_weight), ("gradient", x[i], t[i]))


def test_subnormal_and_smaller_losses_of_a_confident_right_answer():
    # t = 1, x large: loss log1p(exp(-x)); exp(-740) = 4.2e-322 (subnormal), exp(-800) = 3.7e-348 (below 2**-1075)
    x = np.array([600.0, 740.0, 744.4, 745.2, 800.0, 1e4])
    loss = exact_binary_cross_entropy(x, np.ones_like(x))
    assert loss.exponent[0] == 0 and (loss.exponent[1:] < 0).all()  # exp(-600) = 2**-865.6: above 2**-960
    assert loss.to_float64()[1] == pytest.approx(np.exp(-740.0), rel=1e-3)  # float64's exp is subnormal there
    assert loss.to_float64()[4:].tolist() == [0.0, 0.0]  # rounds to 0 in float64, held exactly here
    with mpmath.workprec(256):
        for i, xi in enumerate(x):
            assert held(loss, i) > 0
            assert_relative(held(loss, i), mpmath.log1p(mpmath.exp(-mpmath.mpf(xi))), xi)


def test_loss_of_a_confident_wrong_answer_is_about_the_logit():
    # t = 0, x = 1e4: softplus(1e4) = 1e4 + log1p(e**-1e4), which rounds to 1e4; t = 1, x = -40: 40 + 4.2e-18
    loss = exact_binary_cross_entropy(np.array([1e4, -40.0]), np.array([0.0, 1.0]))
    assert loss.hi.tolist() == [1e4, 40.0]
    assert loss.lo[1] == pytest.approx(np.log1p(np.exp(-40.0)), rel=1e-15)


def test_hand_values():
    # x = 0: s = 1/2, loss w t ln 2 + (1 - t) ln 2, gradient (1 - t)/2 - w t/2
    loss = exact_binary_cross_entropy(np.zeros(3), np.array([1.0, 0.0, 0.25]), pos_weight=3.0)
    assert loss.to_float64() == pytest.approx([3 * np.log(2), np.log(2), (0.75 + 0.75) * np.log(2)], rel=1e-15)
    gradient = exact_binary_cross_entropy_gradient(np.zeros(3), np.array([1.0, 0.0, 0.25]), pos_weight=3.0)
    assert gradient.to_float64().tolist() == [-1.5, 0.5, 0.0]  # (0.75 - 0.75)/2 = 0 exactly


def test_unit_weight_is_softplus_minus_t_x_and_gradient_sigmoid_minus_t(rng):
    x = rng.standard_normal(200) * 8
    t = rng.uniform(0, 1, 200)
    loss = exact_binary_cross_entropy(x, t).to_float64()
    assert loss == pytest.approx(np.logaddexp(0, x) - t * x, rel=1e-12, abs=1e-13)
    gradient = exact_binary_cross_entropy_gradient(x, t).to_float64()
    assert gradient == pytest.approx(1 / (1 + np.exp(-x)) - t, rel=1e-10, abs=1e-15)


def test_gradient_where_the_target_is_the_probability(rng):
    # t = sigmoid(x) rounded to float64: s(x) - t is a few units of 2**-53 of t, or less: 30+ bits cancel
    x = rng.uniform(-5, 5, 40)
    t = 1 / (1 + np.exp(-x))
    gradient = exact_binary_cross_entropy_gradient(x, t)
    with mpmath.workprec(256):
        for i in range(len(x)):
            exact = mp_gradient(x[i], t[i], 1.0)
            assert abs(exact) < 2.0**-50 * t[i]
            assert_relative(held(gradient, i), exact, x[i])


def test_softplus_and_sigmoid_keep_their_relative_accuracy_below_float64():
    z = np.array([-800.0, -745.0, -40.0, 0.0, 40.0])
    sp, s = softplus(z), sigmoid(z)
    with mpmath.workprec(256):
        for i, zi in enumerate(z):
            zi = mpmath.mpf(zi)
            assert_relative(held(sp, i), mpmath.log1p(mpmath.exp(zi)), ("softplus", zi))
            assert_relative(held(s, i), 1 / (1 + mpmath.exp(-zi)), ("sigmoid", zi))


@pytest.mark.parametrize(
    ("targets", "message"), [([1.5], "targets must lie in"), ([-0.1], "targets must lie in"), ([np.nan], "targets")]
)
def test_bad_targets_are_refused(targets, message):
    with pytest.raises(ValueError, match=message):
        exact_binary_cross_entropy(np.zeros(1), np.array(targets))


def test_non_finite_logits_are_refused():
    with pytest.raises(ValueError, match="finite logits"):
        exact_binary_cross_entropy(np.array([np.inf]), np.ones(1))


def test_float64_route_for_outputs_of_24_bits_agrees_to_2_to_the_minus_48(rng):
    x = np.concatenate([rng.standard_normal(2000) * 30, LOGITS])
    t = np.concatenate([rng.uniform(0, 1, 1000), rng.integers(0, 2, 1000), np.resize(TARGETS, len(LOGITS))])
    for pos_weight in (None, 3.5):
        fast = exact_binary_cross_entropy(x, t, 24, pos_weight=pos_weight)
        exact = exact_binary_cross_entropy(x, t, pos_weight=pos_weight)
        with mpmath.workprec(256):
            for i in range(len(x)):
                e, f = held(exact, i), held(fast, i)
                assert abs(f - e) <= mpmath.mpf(2) ** -48 * abs(e), (x[i], t[i])
        held_small = fast.exponent != 0  # losses below 2**-960 come from the double-double route
        assert (fast.hi[held_small] == exact.hi[held_small]).all()
