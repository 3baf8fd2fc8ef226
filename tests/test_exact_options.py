"""The exact references for the loss as trained (harness.exact.options) against mpmath at 3400 bits,
Fractions for the weighted mean, and the plain reference for the index target."""

from fractions import Fraction

import mpmath
import numpy as np
import pytest
from conftest import SEED_ROW

from harness.exact.dd import ExactValue
from harness.exact.options import (
    LossOptions,
    exact_option_gradient,
    exact_reduced,
    exact_row_losses,
    row_weights,
)
from harness.exact.options_dd import capped
from harness.exact.reference import exact_cross_entropy

TOLERANCE = 2.0**-75
BITS = 3400  # 1 - p_k of a row whose loss is 1e-300 keeps 2000 bits
NEG_INF = -np.inf


def value(ev: ExactValue, index) -> mpmath.mpf:
    hi, lo, exponent = (float(ev.hi[index]), float(ev.lo[index]), int(ev.exponent[index]))
    if not np.isfinite(hi):
        return mpmath.mpf(hi)
    return (mpmath.mpf(hi) + mpmath.mpf(lo)) * mpmath.mpf(2) ** exponent


def mp_targets(label, classes, e, dense_row=None):
    if dense_row is not None:
        return [mpmath.mpf(float(t)) for t in dense_row]
    e = mpmath.mpf(e)
    return [(1 - e if j == label else 0) + e / classes for j in range(classes)]


def mp_parts(row, c):
    """x' (soft-capped), m, L = lse - m, p of one row, at BITS."""
    x = [mpmath.mpf(float(v)) for v in row]
    if c is not None:
        x = [c * mpmath.tanh(v / c) for v in x]
    m = max(x)
    big = x.index(m)
    rest = mpmath.fsum(mpmath.exp(v - m) for j, v in enumerate(x) if j != big)
    log_term = mpmath.log1p(rest)
    return x, m, log_term, [mpmath.exp(v - m - log_term) for v in x]


def mp_loss(row, label, e=0.0, z=0.0, c=None, dense_row=None):
    with mpmath.workprec(BITS):
        x, m, log_term, _ = mp_parts(row, c)
        t = mp_targets(label, len(x), e, dense_row)
        total = mpmath.fsum(tj * ((m - xj) + log_term) for tj, xj in zip(t, x, strict=True) if tj != 0)
        return total + z * (m + log_term) ** 2


def mp_gradient(row, label, e=0.0, z=0.0, c=None, scale=1.0, dense_row=None):
    with mpmath.workprec(BITS):
        x, m, log_term, p = mp_parts(row, c)
        t = mp_targets(label, len(x), e, dense_row)
        factor = mpmath.fsum(t) + 2 * z * (m + log_term)
        g = [scale * (pj * factor - tj) for pj, tj in zip(p, t, strict=True)]
        if c is not None:
            g = [gj / mpmath.cosh(mpmath.mpf(float(v)) / c) ** 2 for gj, v in zip(g, row, strict=True)]
        return g


def assert_close(computed, exact, tolerance=TOLERANCE):
    if exact == 0 or not mpmath.isfinite(exact):
        assert computed == exact, (computed, exact)
        return
    assert abs(computed - exact) <= tolerance * abs(exact), (float(computed), float(exact))


ROWS = np.array(
    [
        [*SEED_ROW, 0.0],  # the seed article's row
        [3.0, 3.0, 3.0, -1.0],  # ties with the argmax
        [700.0, 0.0, -20.0, 1.5],  # label at the argmax: loss exp(-698.5) ~ 5e-304
        [-1e-3, 2e-3, 5e-4, -7e-3],  # nearly uniform
        [-400.0, -401.5, -399.25, -420.0],  # lse far from 0
    ]
)
LABELS = np.array([0, 2, 0, 3, 1])
CASES = {  # name: (e, z, c)
    "plain": (0.0, 0.0, None),
    "smoothing": (0.1, 0.0, None),
    "smoothing close to 1": (0.999, 0.0, None),
    "z_loss": (0.0, 1e-4, None),
    "z_loss large": (0.0, 50.0, None),
    "softcap": (0.0, 0.0, 30.0),
    "softcap far below |x|": (0.0, 0.0, 0.5),
    "all": (0.1, 1e-4, 30.0),
}


@pytest.mark.parametrize("name", CASES)
def test_row_losses_match_mpmath(name):
    e, z, c = CASES[name]
    loss = exact_row_losses(ROWS, LABELS, LossOptions(label_smoothing=e, z_loss=z, softcap=c))
    for i, (row, label) in enumerate(zip(ROWS, LABELS, strict=True)):
        assert_close(value(loss, i), mp_loss(row, label, e, z, c))


def test_confident_row_keeps_its_tiny_loss():
    """exp(-698.5) ~ 5e-304: the label at the argmax keeps 2**-75 however small, like the reference."""
    loss = exact_row_losses(ROWS[2:3], LABELS[2:3], LossOptions())
    assert 5e-304 < loss.to_float64()[0] < 6e-304  # exp(1.5 - 700)
    plain = exact_cross_entropy(ROWS, LABELS)
    ours = exact_row_losses(ROWS, LABELS, LossOptions())
    for i in range(len(ROWS)):
        assert_close(value(ours, i), value(plain, i), 2.0**-90)


def test_masked_logits():
    """-inf adds exp(-inf) = 0 with target 0; at the label, or with e > 0, the exact loss is +inf."""
    row = np.array([[2.0, NEG_INF, -1.0, NEG_INF, 0.5]])
    kept = exact_row_losses(row, np.array([0]), LossOptions())
    finite = np.array([[2.0, -1.0, 0.5]])
    assert_close(value(kept, 0), mp_loss(finite[0], 0))
    assert exact_row_losses(row, np.array([1]), LossOptions()).hi[0] == np.inf
    assert exact_row_losses(row, np.array([0]), LossOptions(label_smoothing=0.1)).hi[0] == np.inf
    capped_loss = exact_row_losses(row, np.array([1]), LossOptions(softcap=30.0))  # -inf -> -30
    assert_close(value(capped_loss, 0), mp_loss([2.0, -1e300, -1.0, -1e300, 0.5], 1, c=30.0))
    alone = exact_row_losses(np.array([[NEG_INF, 4.0, NEG_INF]]), np.array([1]), LossOptions())
    assert alone.hi[0] == 0.0 and alone.lo[0] == 0.0
    undefined = exact_row_losses(np.array([[NEG_INF, NEG_INF], [np.nan, 1.0]]), np.array([0, 1]), LossOptions())
    assert np.isnan(undefined.hi).all()


def test_dense_targets():
    """A one-hot dense target equals the index target; a smoothed one the formula; 0 x -inf = 0."""
    onehot = np.eye(4)[LABELS]
    index = exact_row_losses(ROWS, LABELS, LossOptions())
    dense = exact_row_losses(ROWS, LABELS, LossOptions(target="dense", dense_targets=onehot))
    for part_index, part_dense in zip(index, dense, strict=True):
        np.testing.assert_array_equal(part_index, part_dense)
    t = np.array([[0.25, 0.0, 0.625, 0.125]] * len(ROWS))
    dense = exact_row_losses(ROWS, LABELS, LossOptions(target="dense", dense_targets=t, z_loss=1e-3))
    for i, row in enumerate(ROWS):
        assert_close(value(dense, i), mp_loss(row, 0, z=1e-3, dense_row=t[i]))
    masked = np.array([[1.0, NEG_INF, 3.0, 0.0]])
    zero_there = exact_row_losses(masked, None, LossOptions(target="dense", dense_targets=t[:1]))
    assert_close(value(zero_there, 0), mp_loss([1.0, -1e300, 3.0, 0.0], 0, dense_row=t[0]))


@pytest.mark.parametrize("name", CASES)
def test_gradient_matches_mpmath(name):
    """Each entry within 2**-75 of its row's largest, through the soft-cap, for a non-uniform upstream."""
    e, z, c = CASES[name]
    upstream = np.array([1.0, -0.5, 3.0, 0.25, 2.0])
    g = exact_option_gradient(ROWS, LABELS, LossOptions(label_smoothing=e, z_loss=z, softcap=c), "none", upstream)
    for i, (row, label) in enumerate(zip(ROWS, LABELS, strict=True)):
        exact = mp_gradient(row, label, e, z, c, upstream[i])
        largest = max(abs(v) for v in exact)
        for j, entry in enumerate(exact):
            assert abs(value(g, (i, j)) - entry) <= TOLERANCE * largest, (i, j, float(entry))


def test_confident_gradient_to_its_own_digits():
    """Label at the argmax, e = 0: -(1 - p_k) ~ -1e-300 to 2**-75 of itself."""
    g = exact_option_gradient(ROWS[2:3], LABELS[2:3], LossOptions(), "sum")
    exact = mp_gradient(ROWS[2], LABELS[2])
    for j, entry in enumerate(exact):
        assert_close(value(g, (0, j)), entry)


def test_reductions_by_hand():
    """Weighted mean and sum over kept rows, in Fractions from the dd row losses."""
    weights = np.array([0.5, 2.0, 1.25, 3.0])
    ignored = np.array([False, True, False, False, False])
    options = LossOptions(label_smoothing=0.1, class_weights=weights, ignored=ignored)
    rows = exact_row_losses(ROWS, LABELS, options)
    w = row_weights(LABELS, options)
    assert w.tolist() == [0.5, 0.0, 0.5, 3.0, 2.0]
    kept = ~ignored
    as_fraction = [Fraction(float(h)) + Fraction(float(lo)) for h, lo in zip(rows.hi, rows.lo, strict=True)]
    total = sum(Fraction(float(wi)) * v for wi, v, k in zip(w, as_fraction, kept, strict=True) if k)
    mean = total / sum(Fraction(float(wi)) for wi, k in zip(w, kept, strict=True) if k)
    for reduction, exact in (("sum", total), ("mean", mean)):
        got = exact_reduced(rows, w, kept, reduction)
        got = Fraction(float(got.hi[0])) + Fraction(float(got.lo[0]))
        assert abs(got - exact) <= Fraction(2) ** -100 * exact
    none = exact_reduced(rows, w, kept, "none")
    assert none.hi[1] == 0.0 and none.hi[3] == 3.0 * rows.hi[3]


def test_sum_of_identical_rows_is_exact():
    n = 10**6
    one = 2.0 / 3.0
    rows = ExactValue.of(np.full(n, one), np.zeros(n))
    total = exact_reduced(rows, None, np.ones(n, bool), "sum")
    assert Fraction(float(total.hi[0])) + Fraction(float(total.lo[0])) == n * Fraction(one)
    mean = exact_reduced(rows, None, np.ones(n, bool), "mean")
    assert mean.hi[0] == one and mean.lo[0] == 0.0


def test_mean_over_no_kept_rows_is_undefined():
    rows = exact_row_losses(ROWS, LABELS, LossOptions(ignored=np.ones(5, bool)))
    assert exact_reduced(rows, None, np.zeros(5, bool), "mean") is None
    assert exact_reduced(rows, None, np.zeros(5, bool), "sum").hi[0] == 0.0
    assert exact_option_gradient(ROWS, LABELS, LossOptions(ignored=np.ones(5, bool)), "mean") is None


def test_mean_gradient_and_ignored_rows():
    """The weighted mean's gradient is w[y_i] / sum(w) times the row's; ignored rows get 0."""
    weights = np.array([0.5, 2.0, 1.25, 3.0])
    ignored = np.array([False, True, False, False, False])
    options = LossOptions(class_weights=weights, ignored=ignored, z_loss=1e-4)
    g = exact_option_gradient(ROWS, LABELS, options, "mean")
    w = row_weights(LABELS, options)
    for i, (row, label) in enumerate(zip(ROWS, LABELS, strict=True)):
        exact = mp_gradient(row, label, z=1e-4, scale=mpmath.mpf(float(w[i])) / 6)
        largest = max(abs(v) for v in exact)
        for j, entry in enumerate(exact):
            assert abs(value(g, (i, j)) - entry) <= TOLERANCE * max(largest, 1e-300), (i, j)
    assert not g.hi[1].any()


def test_softcap_is_c_tanh():
    x = np.array([-np.inf, -1e6, -3.0, 0.0, 1e-9, 29.0, 1e300])
    hi, lo = capped(x, 30.0)
    with mpmath.workprec(200):
        for v, h, lo_part in zip(x, hi, lo, strict=True):
            exact = 30 * mpmath.tanh(mpmath.mpf(v) / 30)
            assert abs(mpmath.mpf(h) + mpmath.mpf(lo_part) - exact) <= 2.0**-85


@pytest.mark.parametrize(
    "options",
    [{"label_smoothing": 1.0}, {"label_smoothing": -0.1}, {"softcap": 0.0}, {"z_loss": -1.0}, {"target": "soft"}],
)
def test_bad_options_fail_in_one_line(options):
    with pytest.raises(ValueError, match=next(iter(options))):
        LossOptions(**options)


def random_cells(rows=64, classes=300, seed=5):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, classes)) * 4).astype(np.float32).astype(np.float64)
    labels = rng.integers(0, classes, rows)
    x[:8, :] *= 60  # confident rows; two with the label at the argmax, one far beyond 700
    labels[:2] = np.argmax(x[:2], axis=1)
    x[2, labels[2]] = x[2].max() + 800.0
    x[10, 5:40] = NEG_INF  # a masked vocabulary
    labels[10] = 3
    return x, labels


FLOAT64_CASES = {
    "plain": {},
    "all": {"label_smoothing": 0.1, "z_loss": 1e-4, "softcap": 30.0},
    "dense": {"target": "dense", "z_loss": 1e-4},
}


@pytest.mark.parametrize("name", FLOAT64_CASES)
def test_float64_route_within_its_bound(name):
    """Outputs of <= 24 bits: the float64 route agrees with the double-double one to 2**-44."""
    x, labels = random_cells()
    options = LossOptions(**FLOAT64_CASES[name])
    if options.target == "dense":
        t = np.random.default_rng(1).random(x.shape)
        t[10, 5:40] = 0.0
        options = LossOptions(**FLOAT64_CASES[name], dense_targets=t / t.sum(axis=1, keepdims=True))
    exact_value = exact_row_losses(x, labels, options)
    exact = exact_value.to_float64()
    fast = exact_row_losses(x, labels, options, output_precision=24).to_float64()
    assert np.all(np.isfinite(exact)) and exact_value.hi[2] > 0  # exp(-800): 0 in float64
    np.testing.assert_allclose(fast, exact, rtol=2.0**-44, atol=0)
    upstream = np.linspace(-1, 2, len(labels))
    g_exact = exact_option_gradient(x, labels, options, "none", upstream).to_float64()
    g_fast = exact_option_gradient(x, labels, options, "none", upstream, output_precision=24).to_float64()
    largest = np.abs(g_exact).max(axis=1, keepdims=True)
    assert np.all(np.abs(g_fast - g_exact) <= 2.0**-44 * largest)


def exact_fraction(ev: ExactValue, i: int) -> Fraction:
    return (Fraction(float(ev.hi[i])) + Fraction(float(ev.lo[i]))) * Fraction(2) ** int(ev.exponent[i])


def test_sum_over_magnitudes_and_below_float64():
    """Values spread over 2**-60..2**60 with low parts, and values below 2**-1075 (exponent < 0):
    the sum to 2**-100 of itself, by Fractions."""
    rng = np.random.default_rng(3)
    hi = np.ldexp(rng.random(4000), rng.integers(-60, 60, 4000))
    lo = hi * rng.uniform(-(2.0**-53), 2.0**-53, 4000)
    for rows in (ExactValue.of(hi, lo), ExactValue(hi, lo, np.full(4000, -1200))):
        total = exact_reduced(rows, None, np.ones(4000, bool), "sum")
        exact = sum(exact_fraction(rows, i) for i in range(4000))
        assert abs(exact_fraction(total, 0) - exact) <= Fraction(2) ** -100 * exact


def test_infinite_and_undefined_rows_in_reductions():
    rows = ExactValue.of(np.array([1.5, np.inf, 2.0, np.nan]), np.zeros(4))
    weights = np.array([2.0, 0.5, 1.0, 3.0])
    assert exact_reduced(rows, weights, np.array([1, 1, 1, 0], bool), "mean").hi[0] == np.inf
    assert np.isnan(exact_reduced(rows, weights, np.ones(4, bool), "sum").hi[0])
    none = exact_reduced(rows, weights, np.array([1, 1, 1, 0], bool), "none")
    assert none.hi.tolist() == [3.0, np.inf, 2.0, 0.0]
    mean = exact_reduced(rows, weights, np.array([1, 0, 1, 0], bool), "mean")
    assert mean.hi[0] == 5.0 / 3.0 and exact_fraction(mean, 0) - Fraction(5, 3) < Fraction(2) ** -100


def test_gradient_of_masked_and_dense_rows():
    """A masked class (target 0) has gradient 0 and the rest is the unmasked row's; a -inf at the
    label (an infinite loss) has an undefined gradient, NaN. Dense targets against mpmath."""
    row = np.array([[2.0, NEG_INF, -1.0, 0.5]])
    g = exact_option_gradient(row, np.array([0]), LossOptions(), "sum")
    exact = mp_gradient([2.0, -1.0, 0.5], 0)
    assert g.hi[0, 1] == 0.0
    for j, entry in zip((0, 2, 3), exact, strict=True):
        assert_close(value(g, (0, j)), entry)
    assert np.isnan(exact_option_gradient(row, np.array([1]), LossOptions(), "sum").hi).all()
    t = np.array([[0.25, 0.0, 0.625, 0.125]] * len(ROWS))
    options = LossOptions(target="dense", dense_targets=t, z_loss=1e-3, softcap=20.0)
    g = exact_option_gradient(ROWS, LABELS, options, "sum")
    for i, row in enumerate(ROWS):
        exact = mp_gradient(row, 0, z=1e-3, c=20.0, dense_row=t[i])
        largest = max(abs(v) for v in exact)
        for j, entry in enumerate(exact):
            assert abs(value(g, (i, j)) - entry) <= TOLERANCE * largest


def test_unit_weights_are_the_count():
    """row_weights without class weights (1 kept, 0 ignored) give the plain mean over kept rows."""
    ignored = np.array([False, True, False, True, False])
    options = LossOptions(label_smoothing=0.1, ignored=ignored)
    rows = exact_row_losses(ROWS, LABELS, options)
    mean = exact_reduced(rows, row_weights(LABELS, options), ~ignored, "mean")
    by_hand = sum(exact_fraction(rows, i) for i in (0, 2, 4)) / 3
    assert abs(exact_fraction(mean, 0) - by_hand) <= Fraction(2) ** -100 * by_hand
