"""The exact reference against an independent mpmath computation, and the seed article."""

import mpmath
import numpy as np
import pytest
from conftest import SEED_LABELS, SEED_LOGITS, dd_value, mp_cross_entropy

from harness.dtypes import round_to
from harness.exact.reference import exact_cross_entropy

TOLERANCE = 2.0**-75  # the reference claims > 20 bits beyond float64 for normal losses ...
FLOOR = mpmath.mpf(2) ** -1094  # ... and 2**-20 units of 2**-1074 for subnormal ones


def assert_matches_mpmath(logits, labels, rows=None):
    hi, lo, exponent = exact_cross_entropy(logits, labels)
    for i in rows if rows is not None else range(len(labels)):
        exact = mp_cross_entropy(logits[i], labels[i])
        error = abs(dd_value(hi[i], lo[i]) * mpmath.mpf(2) ** int(exponent[i]) - exact)
        assert error <= max(TOLERANCE * exact, FLOOR), (i, hi[i], exponent[i], exact)


@pytest.mark.parametrize("scale", [1e-8, 1e-2, 1.0, 30.0, 1e3, 1e5])
@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_random_logits(rng, scale, offset):
    logits = rng.standard_normal((12, 40)) * scale + offset
    labels = rng.integers(0, 40, 12)
    labels[:4] = np.argmax(logits[:4], axis=1)  # confident rows: tiny losses
    assert_matches_mpmath(logits, labels)


@pytest.mark.parametrize("n_classes", [10_000, 32_768])
def test_large_vocabularies(rng, n_classes):
    logits = rng.standard_normal((3, n_classes)) * 4.0
    labels = np.array([0, int(np.argmax(logits[1])), int(np.argmin(logits[2]))])
    assert_matches_mpmath(logits, labels)


def test_dtype_rounded_inputs_each_dtype(rng):
    logits = rng.standard_normal((6, 300)) * 20.0
    labels = rng.integers(0, 300, 6)
    for dtype in ("float16", "bfloat16", "float32", "float64"):
        assert_matches_mpmath(round_to(logits, dtype).astype(np.float64), labels)


def test_ties_and_two_classes():
    logits = np.array([[5.0, 5.0, 1.0], [5.0, 5.0, 1.0], [-3.0, 700.0, 0.0], [0.5, 0.5, 0.5]])
    labels = np.array([0, 1, 1, 2])
    assert_matches_mpmath(logits, labels)
    two = np.array([[0.0, 30.0], [0.0, -30.0]])
    assert_matches_mpmath(two, np.array([1, 0]))


def test_losses_near_float64_underflow_keep_their_digits():
    # p(y) = 1 - e**-700: the loss is about 9.86e-305, far below float64 epsilon
    logits = np.array([[700.0, 0.0], [0.0, -600.0]])
    labels = np.array([0, 0])
    assert_matches_mpmath(logits, labels)
    # held as (hi + lo) 2**exponent: e**-700 = 1.01e-304 is below 2**-960, so it carries one
    _, _, exponent = exact_cross_entropy(logits, labels)
    assert exponent[0] < 0 and exponent[1] == 0


def test_seed_article_values():
    # [12.3, -5.2, 31.4]: losses 19.1 + e, 36.6 + e and e, with e = log1p(exp(-19.1) + exp(-36.6))
    logits = SEED_LOGITS
    hi, lo, exponent = exact_cross_entropy(logits, SEED_LABELS)
    assert not exponent.any()
    assert hi[0] == pytest.approx(19.100000005069617, rel=1e-15)
    assert hi[1] == pytest.approx(36.60000000506962, rel=1e-15)
    assert hi[2] == pytest.approx(5.0696199e-09, rel=1e-7)
    assert_matches_mpmath(logits, SEED_LABELS)


def test_rejects_bad_shapes_and_non_finite():
    with pytest.raises(ValueError):
        exact_cross_entropy(np.zeros((2, 1)), np.zeros(2, dtype=int))
    with pytest.raises(ValueError):
        exact_cross_entropy(np.array([[0.0, np.inf]]), np.zeros(1, dtype=int))


@pytest.mark.parametrize("n_classes", [2, 1000, 131_072])
def test_float64_route_is_20_bits_beyond_float32(rng, n_classes):
    # outputs of <= 24 bits get the float64 evaluation: within 2**-48 of the double-double route
    rows = 4 if n_classes > 1000 else 32
    for scale, offset in [(1e-6, 0.0), (1.0, 0.0), (30.0, 0.0), (1e3, 0.0), (1.0, 1e4)]:
        logits = (rng.standard_normal((rows, n_classes)) * scale + offset).astype(np.float32).astype(np.float64)
        labels = rng.integers(0, n_classes, rows)
        labels[: rows // 4] = np.argmax(logits[: rows // 4], axis=1)
        hi, lo, exponent = exact_cross_entropy(logits, labels)
        fast, zero, fast_exponent = exact_cross_entropy(logits, labels, output_precision=24)
        ordinary = exponent == 0  # losses below 2**-960 take the double-double route on both
        assert not zero[ordinary].any() and (fast_exponent == exponent).all()
        assert (np.abs((fast - hi) - lo) <= 2.0**-48 * hi)[ordinary].all()


def test_row_blocks_give_the_rows_own_values(rng):
    # 40 rows of 5000 classes go in blocks of 13 rows (2**16 // 5000), the last one ragged
    logits = rng.standard_normal((40, 5000)) * 30.0
    logits[3, 1:] = -720.0  # a row whose loss carries an exponent, in the first block
    labels = rng.integers(0, 5000, 40)
    labels[3] = 0
    logits[3, 0] = 0.0
    for precision in (53, 24):
        whole = exact_cross_entropy(logits, labels, precision)
        for i in (0, 3, 12, 13, 39):
            one = exact_cross_entropy(logits[i : i + 1], labels[i : i + 1], precision)
            assert [part[i] for part in whole] == [part[0] for part in one]
    assert whole.exponent[3] < 0
