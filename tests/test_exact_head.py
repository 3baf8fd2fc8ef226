"""The exact language-model head against mpmath (256 bits, in `workprec` blocks) and Python fractions."""

from fractions import Fraction

import mpmath
import numpy as np
import pytest

from harness.dtypes import round_to
from harness.exact.head import exact_head_gradients, exact_head_loss, exact_logits, slice_bits

DTYPES = ["float16", "bfloat16", "float32", "float64"]
PREC = 256


def held(values, dtype: str) -> np.ndarray:
    """Rounded to dtype, held in float64."""
    return round_to(values, dtype).astype(np.float64)


def mp(x) -> mpmath.mpf:
    return mpmath.mpf(float(x))


def mp_logit(h_row, w_row, bias=0.0):
    """(exact h . w + b, sum of |terms|), exact at 256 bits for inputs of at most 53 bits."""
    terms = [mp(a) * mp(b) for a, b in zip(h_row, w_row, strict=True)] + [mp(bias)]
    return mpmath.fsum(terms), mpmath.fsum(abs(t) for t in terms)


def head(rng, dtype, rows=5, classes=9, d=40, scale=1.0, bias=True):
    h = held(rng.standard_normal((rows, d)) * scale, dtype)
    W = held(rng.standard_normal((classes, d)), dtype)
    b = held(rng.standard_normal(classes), dtype) if bias else None
    return h, W, b


def logit_bound(sum_abs, h_row, w_row):
    """The proved bound: 2**-98 sum|terms| + 2**-102 max|h_i| max|W_j|."""
    return mpmath.mpf(2) ** -98 * sum_abs + mpmath.mpf(2) ** -102 * mp(np.abs(h_row).max()) * mp(np.abs(w_row).max())


def assert_logits_exact(h, W, b=None):
    hi, lo = exact_logits(h, W, b)
    with mpmath.workprec(PREC):
        for i in range(h.shape[0]):
            for j in range(W.shape[0]):
                exact, sum_abs = mp_logit(h[i], W[j], 0.0 if b is None else b[j])
                assert abs(mp(hi[i, j]) + mp(lo[i, j]) - exact) <= logit_bound(sum_abs, h[i], W[j]), (i, j)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
def test_logits_each_dtype(rng, dtype, bias):
    assert_logits_exact(*head(rng, dtype, bias=bias))


def test_logits_of_float32_inputs_are_error_free_splits(rng):
    """float32 rows spanning < 2**38 need at most three slices a side and no tail: only Sum2's
    rounding is left, 5 level sums, so at most gamma_4**2 S < 2**-101 S (not 2**-98 S)."""
    h, W, _ = head(rng, "float32", rows=4, classes=6, d=300)
    hi, lo = exact_logits(h, W)
    with mpmath.workprec(PREC):
        for i in range(4):
            for j in range(6):
                exact, sum_abs = mp_logit(h[i], W[j])
                assert abs(mp(hi[i, j]) + mp(lo[i, j]) - exact) <= mpmath.mpf(2) ** -101 * sum_abs


@pytest.mark.parametrize("dtype", DTYPES)
def test_logits_with_cancellation(rng, dtype):
    """Terms up to 2**20 that cancel to about 2**-30: naive float64 sums would be off by ~2**-30 absolute."""
    h, W, _ = head(rng, dtype, rows=3, classes=4, d=64, bias=False)
    h[:, :32] *= 2.0**20
    h[:, 32:] = -h[:, :32]  # the same terms with both signs ...
    W[:, 32:] = W[:, :32]
    h[:, 31], h[:, 63] = 0.0, 2.0**-30  # ... but one: the pairs' slices cancel too, so no error at all
    hi, lo = exact_logits(h, W)
    expected = np.broadcast_to(2.0**-30 * W[:, 31], hi.shape)
    np.testing.assert_array_equal(hi, expected)
    np.testing.assert_array_equal(lo, 0.0)


def test_logits_of_rows_spanning_2_pow_90(rng):
    """float64 entries of magnitudes 2**0 ... 2**-90 in every row: slices, then a tail product."""
    h = rng.standard_normal((4, 64)) * 2.0 ** -rng.integers(0, 90, (4, 64))
    W = rng.standard_normal((5, 64)) * 2.0 ** -rng.integers(0, 90, (5, 64))
    assert_logits_exact(h, W, rng.standard_normal(5))


def test_slice_bits_keep_four_products_below_2_pow_53():
    for n, beta in [(1, 25), (256, 21), (512, 21), (32000, 18)]:
        assert slice_bits(n) == beta
        assert 4 * n * (2**beta - 1) ** 2 <= 2**53 < 4 * n * (2 ** (beta + 1) - 1) ** 2


def test_medium_logits_against_fractions(rng):
    """64 x 2000 x 256, float64 inputs (53 bits: several slices); a few entries in exact rationals."""
    h, W, b = head(rng, "float64", rows=64, classes=2000, d=256)
    h[3] *= 2.0**-40  # a row far below the others
    hi, lo = exact_logits(h, W, b)
    for i, j in [(0, 0), (3, 1999), (17, 512), (63, 1000)]:
        exact = sum((Fraction(x) * Fraction(y) for x, y in zip(h[i], W[j], strict=True)), Fraction(b[j]))
        sum_abs = sum(abs(Fraction(x) * Fraction(y)) for x, y in zip(h[i], W[j], strict=True)) + abs(Fraction(b[j]))
        bound = Fraction(2) ** -98 * sum_abs + Fraction(2) ** -102 * Fraction(np.abs(h[i]).max() * np.abs(W[j]).max())
        assert abs(Fraction(hi[i, j]) + Fraction(lo[i, j]) - exact) <= bound, (i, j)


# --- the loss -----------------------------------------------------------------------------------


def mp_loss_rows(h, W, b, labels):
    """lse(z) - z[y] of the exact logits, as log1p(sum_{j != y} exp(z_j - z_y)) when y is the argmax."""
    losses = []
    for i, label in enumerate(labels):
        z = [mp_logit(h[i], W[j], 0.0 if b is None else b[j])[0] for j in range(W.shape[0])]
        top = max(z)
        if z[label] == top:
            losses.append(mpmath.log1p(mpmath.fsum(mpmath.exp(v - top) for j, v in enumerate(z) if j != label)))
        else:
            losses.append(mpmath.log(mpmath.fsum(mpmath.exp(v - top) for v in z)) + top - z[label])
    return losses


def loss_case(rng, dtype, scale, bias=True):
    h, W, b = head(rng, dtype, rows=6, classes=12, d=24, scale=scale, bias=bias)
    labels = rng.integers(0, 12, 6)
    z = h @ W.T
    labels[:3] = np.argmax(z[:3], axis=1)  # confident rows at large scales: tiny losses
    return h, W, b, labels


@pytest.mark.parametrize("dtype", ["bfloat16", "float32", "float64"])
@pytest.mark.parametrize("scale", [0.01, 1.0, 40.0])
def test_loss_against_mpmath(rng, dtype, scale):
    h, W, b, labels = loss_case(rng, dtype, scale)
    hi, lo, exponent = exact_head_loss(h, W, b, labels)
    with mpmath.workprec(PREC):
        for i, exact in enumerate(mp_loss_rows(h, W, b, labels)):
            value = (mp(hi[i]) + mp(lo[i])) * mpmath.mpf(2) ** int(exponent[i])
            assert abs(value - exact) <= mpmath.mpf(2) ** -75 * exact, (i, value, exact)


def test_loss_below_float64_range(rng):
    """A label at the argmax, the other logits 799 and 801 (1599, 1601) below: losses near 2**-1153
    (2**-2307), held with an exponent."""
    h = np.array([[1.0, 0.0], [2.0, 0.0]])
    W = np.array([[800.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    labels = np.array([0, 0])
    hi, lo, exponent = exact_head_loss(h, W, None, labels)
    assert exponent[0] < 0 and exponent[1] < exponent[0]
    with mpmath.workprec(PREC):
        for i, exact in enumerate(mp_loss_rows(h, W, None, labels)):
            value = (mp(hi[i]) + mp(lo[i])) * mpmath.mpf(2) ** int(exponent[i])
            assert abs(value - exact) <= mpmath.mpf(2) ** -75 * exact


@pytest.mark.parametrize("scale", [0.01, 1.0, 40.0])
def test_loss_for_float32_outputs_within_2_pow_45(rng, scale):
    h, W, b, labels = loss_case(rng, "float32", scale)
    hi, lo, exponent = exact_head_loss(h, W, b, labels, output_precision=24)
    with mpmath.workprec(PREC):
        for i, exact in enumerate(mp_loss_rows(h, W, b, labels)):
            value = (mp(hi[i]) + mp(lo[i])) * mpmath.mpf(2) ** int(exponent[i])
            assert abs(value - exact) <= mpmath.mpf(2) ** -45 * exact, (i, value, exact)


# --- the gradients ------------------------------------------------------------------------------


def mp_gradients(h, W, b, labels, upstream):
    """G = upstream (softmax - onehot) of the exact logits; G @ W, G.T @ h, G.sum(0)."""
    g = []
    for i, label in enumerate(labels):
        z = [mp_logit(h[i], W[j], 0.0 if b is None else b[j])[0] for j in range(W.shape[0])]
        top = max(z)
        e = [mpmath.exp(v - top) for v in z]
        total = mpmath.fsum(e)
        row = [v / total for v in e]
        row[label] = -mpmath.fsum(v for j, v in enumerate(row) if j != label)
        g.append([mp(upstream[i]) * v for v in row])
    rows, classes, d = h.shape[0], W.shape[0], h.shape[1]
    d_h = [[mpmath.fsum(g[i][j] * mp(W[j, t]) for j in range(classes)) for t in range(d)] for i in range(rows)]
    d_W = [[mpmath.fsum(g[i][j] * mp(h[i, t]) for i in range(rows)) for t in range(d)] for j in range(classes)]
    d_b = [mpmath.fsum(g[i][j] for i in range(rows)) for j in range(classes)]
    return d_h, d_W, d_b


def assert_rows_within(value, exact, tolerance=2.0**-75):
    """Every entry within tolerance of its row's largest exact entry."""
    for row_value, row_exact in zip(zip(*value, strict=True), exact, strict=True):
        largest = max(abs(v) for v in row_exact)
        for (hi, lo, exponent), v in zip(zip(*row_value, strict=True), row_exact, strict=True):
            computed = (mp(hi) + mp(lo)) * mpmath.mpf(2) ** int(exponent)
            assert abs(computed - v) <= mpmath.mpf(tolerance) * largest, (computed, v, largest)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("scale", [1.0, 40.0])
def test_gradients_against_mpmath(rng, dtype, scale):
    h, W, b, labels = loss_case(rng, dtype, scale)
    upstream = np.array([1.0, 0.5, -3.0, 1e-3, 2.0**-200, 7.0])
    grads = exact_head_gradients(h, W, b, labels, upstream)
    with mpmath.workprec(PREC):
        d_h, d_W, d_b = mp_gradients(h, W, b, labels, upstream)
        assert_rows_within(grads.h, d_h)
        assert_rows_within(grads.W, d_W)
        assert_rows_within(tuple(part[None, :] for part in grads.b), [d_b])


def test_gradients_without_bias_or_upstream(rng):
    h, W, _, labels = loss_case(rng, "bfloat16", 1.0, bias=False)
    grads = exact_head_gradients(h, W, None, labels)
    assert grads.b is None
    with mpmath.workprec(PREC):
        d_h, d_W, _ = mp_gradients(h, W, None, labels, np.ones(len(labels)))
        assert_rows_within(grads.h, d_h)
        assert_rows_within(grads.W, d_W)


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("h_shape", "w_shape", "b_shape", "words"),
    [
        ((4, 8), (10, 7), None, "h (4, 8), W (10, 7)"),
        ((4,), (10, 8), None, "h (4,), W (10, 8)"),
        ((4, 8), (10, 8), (9,), "b (9,)"),
    ],
)
def test_bad_shapes_fail_in_one_line(h_shape, w_shape, b_shape, words):
    b = None if b_shape is None else np.zeros(b_shape)
    with pytest.raises(ValueError, match=r"^[^\n]*$") as error:
        exact_logits(np.zeros(h_shape), np.zeros(w_shape), b)
    assert words in str(error.value)


def test_bad_labels_and_upstream_fail_in_one_line():
    h, W = np.zeros((4, 8)), np.zeros((10, 8))
    with pytest.raises(ValueError, match=r"labels \(3,\)"):
        exact_head_loss(h, W, None, np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match=r"\[0, 10\), got int64 \[0, 1, 2, 10\]"):
        exact_head_loss(h, W, None, np.array([0, 1, 2, 10]))
    with pytest.raises(ValueError, match=r"upstream \(5,\)"):
        exact_head_gradients(h, W, None, np.zeros(4, dtype=int), np.ones(5))


# --- the gradients for outputs of at most 24 bits ------------------------------------------------


def mp_g(h, W, b, labels, upstream):
    """G = upstream (softmax - onehot) of the exact logits, as mpmath rows."""
    g = []
    for i, label in enumerate(labels):
        z = [mp_logit(h[i], W[j], 0.0 if b is None else b[j])[0] for j in range(W.shape[0])]
        top = max(z)
        e = [mpmath.exp(v - top) for v in z]
        row = [v / mpmath.fsum(e) for v in e]
        row[label] = -mpmath.fsum(v for j, v in enumerate(row) if j != label)
        g.append([mp(upstream[i]) * v for v in row])
    return g


def assert_within_coarse_bound(value, exact, g_abs_other, scale):
    """|computed - exact| <= (2**-46 + 2**-98) (|G| @ |other|) + 2**-50 scale per entry (module
    docstring: G to 2**-46 of each entry; products to 2**-98 S + 2**-52 2**(a + c), and
    2**(a + c) <= 4 max|G| max|other| = 4 scale)."""
    worst = mpmath.mpf(0)
    for i, row in enumerate(exact):
        for t, v in enumerate(row):
            computed = (mp(value.hi[i, t]) + mp(value.lo[i, t])) * mpmath.mpf(2) ** int(value.exponent[i, t])
            two = mpmath.mpf(2)
            bound = (two**-46 + two**-98) * g_abs_other[i][t] + two**-50 * scale[i][t]
            assert abs(computed - v) <= bound, (i, t, computed, v, bound)
            worst = max(worst, abs(computed - v) / scale[i][t])
    return worst


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("scale", [1.0, 40.0])
def test_gradients_for_24_bit_outputs_within_their_bound(rng, dtype, scale):
    """The float64 G and the 52-bit floor: within the bound against mpmath, and coarser than the
    double-double route's 2**-75 somewhere (so it is the route being measured)."""
    h, W, b, labels = loss_case(rng, dtype, scale)
    h, W = np.tile(h, (1, 8)), np.tile(W, (1, 8))  # d = 192: slices and tails on both sides
    upstream = np.array([1.0, 0.5, -3.0, 1e-3, 2.0**-200, 7.0])
    grads = exact_head_gradients(h, W, b, labels, upstream, output_precision=24)
    with mpmath.workprec(PREC):
        g = mp_g(h, W, b, labels, upstream)
        rows, classes, d = h.shape[0], W.shape[0], h.shape[1]
        w_abs, h_abs = [[mp(abs(v)) for v in row] for row in W], [[mp(abs(v)) for v in row] for row in h]
        d_h = [[mpmath.fsum(g[i][j] * mp(W[j, t]) for j in range(classes)) for t in range(d)] for i in range(rows)]
        d_W = [[mpmath.fsum(g[i][j] * mp(h[i, t]) for i in range(rows)) for t in range(d)] for j in range(classes)]
        gw = [[mpmath.fsum(abs(g[i][j]) * w_abs[j][t] for j in range(classes)) for t in range(d)] for i in range(rows)]
        gh = [[mpmath.fsum(abs(g[i][j]) * h_abs[i][t] for i in range(rows)) for t in range(d)] for j in range(classes)]
        g_row = [max(abs(v) for v in row) for row in g]
        g_col = [max(abs(g[i][j]) for i in range(rows)) for j in range(classes)]
        w_col = [max(w_abs[j][t] for j in range(classes)) for t in range(d)]
        h_col = [max(h_abs[i][t] for i in range(rows)) for t in range(d)]
        worst_h = assert_within_coarse_bound(grads.h, d_h, gw, [[gi * wt for wt in w_col] for gi in g_row])
        worst_w = assert_within_coarse_bound(grads.W, d_W, gh, [[gj * ht for ht in h_col] for gj in g_col])
        assert max(worst_h, worst_w) > mpmath.mpf(2) ** -75
        for j in range(classes):
            exact = mpmath.fsum(g[i][j] for i in range(rows))
            computed = (mp(grads.b.hi[j]) + mp(grads.b.lo[j])) * mpmath.mpf(2) ** int(grads.b.exponent[j])
            assert abs(computed - exact) <= mpmath.mpf(2) ** -45 * mpmath.fsum(abs(g[i][j]) for i in range(rows))


def test_gradients_for_24_bit_outputs_of_confident_rows(rng):
    """A label at the argmax with the other logits 700-800 below (T < 2**-900): that row's G is
    the double-double one, each entry near 2**-1010 and below, to 2**-75 of the row's largest."""
    h = np.array([[1.0, 0.0], [0.5, 0.25]])
    W = np.array([[800.0, 0.0], [0.0, 1.0], [0.0, -1.0], [100.0, 3.0]])
    labels = np.array([0, 2])
    coarse = exact_head_gradients(h, W, None, labels, output_precision=24)
    fine = exact_head_gradients(h, W, None, labels)
    np.testing.assert_array_equal(coarse.h.exponent[0], fine.h.exponent[0])
    assert coarse.h.exponent[0].max() < -900
    with mpmath.workprec(PREC):
        d_h, d_W, _ = mp_gradients(h, W, None, labels, np.ones(2))
        assert_rows_within(tuple(part[:1] for part in coarse.h), d_h[:1])


@pytest.mark.parametrize("output_precision", [24, 53])
def test_shared_logits_give_the_same_values(rng, output_precision):
    h, W, b, labels = loss_case(rng, "bfloat16", 1.0)
    logits = exact_logits(h, W, b)
    loss = exact_head_loss(h, W, b, labels, output_precision, logits=logits)
    pairs = [(loss, exact_head_loss(h, W, b, labels, output_precision))]
    shared = exact_head_gradients(h, W, b, labels, None, output_precision, logits=logits)
    pairs += zip(shared, exact_head_gradients(h, W, b, labels, None, output_precision), strict=True)
    for ours, theirs in pairs:
        for a, c in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(a, c)
