"""The exact loss and gradient at the bottom of float64 (issue 9): label at the argmax, every other
logit 700 or more below it, so the loss exp(s - m) * sum ... is subnormal or below 2**-1075.

Rows are built from a few distinct logits, so that mpmath (at 256 bits, in a `workprec` block)
needs one exp per distinct value, even for 131072 classes.
"""

from collections import Counter

import mpmath
import numpy as np
import pytest

from harness.dtypes import DTYPES
from harness.exact.gradient import exact_gradient
from harness.exact.reference import exact_cross_entropy
from harness.paths import numpy_paths
from harness.sweep import metrics

RELATIVE = 2.0**-75  # normal exact values
FLOAT64_ROUTE = 2.0**-48  # the route for outputs of <= 24 bits (tiny rows go to the double-double one)
SUBNORMAL_UNITS = mpmath.mpf(2) ** -1094  # 2**-20 units of 2**-1074 (0 in float64)
F32, F64 = DTYPES["float32"], DTYPES["float64"]


def mp_softmax_parts(row):
    """(x_j - m per distinct value, its count, sum_j exp(x_j - m)) in mpmath."""
    counts = Counter(float(v) for v in row)
    top = mpmath.mpf(max(counts))
    return counts, top, mpmath.fsum(n * mpmath.exp(mpmath.mpf(v) - top) for v, n in counts.items())


def mp_loss(row, label):
    """lse(x) - x[y] = log1p(sum_{j != y} exp(x_j - x_y)), grouped by distinct value."""
    counts = Counter(float(v) for v in row)
    counts[float(row[label])] -= 1
    xy = mpmath.mpf(float(row[label]))
    return mpmath.log1p(mpmath.fsum(n * mpmath.exp(mpmath.mpf(v) - xy) for v, n in counts.items() if n))


def mp_gradient_entry(row, label, j):
    """softmax(x)[j] - [j == y]; the label's entry as minus the others' probabilities."""
    counts, top, total = mp_softmax_parts(row)
    if j != label:
        return mpmath.exp(mpmath.mpf(float(row[j])) - top) / total
    counts[float(row[label])] -= 1
    rest = mpmath.fsum(n * mpmath.exp(mpmath.mpf(v) - top) for v, n in counts.items() if n)
    return -rest / total


def held(value, index):
    """(hi + lo) 2**exponent of one entry, exactly, in mpmath."""
    hi, lo, exponent = (np.asarray(part)[index] for part in value)
    return (mpmath.mpf(float(hi)) + mpmath.mpf(float(lo))) * mpmath.mpf(2) ** int(exponent)


def assert_close(got, exact, where, relative=RELATIVE):
    error = abs(got - exact)
    if abs(exact) >= mpmath.mpf(2) ** -1022:
        assert error <= relative * abs(exact), (where, float(error / abs(exact)))
    else:
        assert error <= SUBNORMAL_UNITS, (where, float(error / mpmath.mpf(2) ** -1074))


def deep_rows(gap, n_classes, rng, rows=2):
    """Label 0 at the maximum 0; the others at -gap minus small offsets from a handful of values."""
    offsets = np.array([0.0, 2.0**-40, 0.25, 1.5, 3.0])
    x = -gap - offsets[rng.integers(0, len(offsets), (rows, n_classes))]
    x[:, 0] = 0.0
    return x, np.zeros(rows, dtype=int)


def check_rows(x, labels, gradient=True):
    loss = exact_cross_entropy(x, labels)
    fast = exact_cross_entropy(x, labels, output_precision=24)
    grad = exact_gradient(x, labels) if gradient else None
    with mpmath.workprec(256):
        for i, label in enumerate(labels):
            exact = mp_loss(x[i], label)
            assert exact > 0 and held(loss, i) > 0 and held(fast, i) > 0
            assert_close(held(loss, i), exact, ("loss", i))
            assert_close(held(fast, i), exact, ("float64 route", i), FLOAT64_ROUTE)
            if gradient:
                for j in {int(label), int(label) ^ 1, x.shape[1] - 1}:
                    assert_close(held(grad, (i, j)), mp_gradient_entry(x[i], label, j), ("gradient", i, j))


def test_the_audit_row():
    # [0, -716 x 999], label 0: loss 999 e**-716 = 1.108e-308, at float64's normal/subnormal edge
    x = np.full((1, 1000), -716.0)
    x[0, 0] = 0.0
    check_rows(x, np.array([0]))
    loss = exact_cross_entropy(x, np.array([0]))
    with mpmath.workprec(256):
        assert float(held(loss, 0)) == pytest.approx(999 * np.exp(-716.0), rel=1e-13)


def test_log1p_lse_in_float64_is_hundreds_of_ulps_off_on_the_audit_row():
    # log1p_lse computes exp(-716), a subnormal with 16 significant bits, then multiplies by 999
    x = np.full((1, 1000), -716.0)
    x[0, 0] = 0.0
    labels = np.array([0])
    computed = numpy_paths.log1p_lse(x, labels)
    hi, lo, exponent = exact_cross_entropy(x, labels)
    ulps = metrics.ulp_error(computed, hi, lo, F64, exponent)[0]
    assert 300 < ulps < 600  # about 450: the error of exp(-716) rounded to 2**-1074, times 999
    cell = metrics.cell_metrics(computed, hi, lo, F64, metrics.lse_bound(x, labels, hi, F64), exponent)
    assert cell["max_ulp_err"] == ulps and np.isfinite(cell["bound_ulp"])


@pytest.mark.parametrize("gap", [700.0, 708.39, 716.0, 730.5, 745.13, 745.2, 750.0, 760.0])
def test_gaps_700_to_760(gap):
    rng = np.random.default_rng(int(gap * 100))
    check_rows(*deep_rows(gap, 1000, rng))
    check_rows(*deep_rows(gap, 2, rng))


@pytest.mark.parametrize("n_classes", [2, 3, 17, 1000, 4096, 131_072])
def test_class_counts(n_classes):
    rng = np.random.default_rng(n_classes)
    for gap in (700.0, 745.0, 760.0):
        check_rows(*deep_rows(gap, n_classes, rng, rows=1), gradient=n_classes <= 4096)


def test_several_near_maximal_logits():
    rng = np.random.default_rng(7)
    x, labels = deep_rows(716.0, 64, rng, rows=6)
    x[0, 1] = 0.0  # a tie at the top, label the first of the two: loss log 2 + ...
    x[1, 1] = -(2.0**-52)  # a near tie
    x[2, 1:4] = [-1e-10, -3e-5, -0.5]  # several near the top
    x[3, 0], x[3, 5] = -(2.0**-40), 0.0  # label just below the maximum
    x[4, 1:3] = [-716.0 + 2.0**-30, -716.0 - 2.0**-30]  # near ties deep down
    labels[5], x[5, 0], x[5, 9] = 9, 0.0, 0.0  # a tie, label the second of the two
    check_rows(x, labels)


def test_a_loss_below_2_to_the_minus_1075_is_still_positive():
    # gap 800: loss 999 e**-800 = 3.7e-345, far below float64's smallest subnormal
    x = np.full((2, 1000), -800.0)
    x[:, 0] = 0.0
    labels = np.array([0, 0])
    check_rows(x, labels)
    for precision, fmt in ((53, F64), (24, F32)):
        hi, lo, exponent = exact_cross_entropy(x, labels, precision)
        assert exponent[0] < -1075 and hi[0] > 0
        zero = np.zeros(2)
        assert metrics.rel_error(zero, hi, lo, exponent).tolist() == [1.0, 1.0]
        with mpmath.workprec(256):
            in_ulps = float(held((hi, lo, exponent), 0) / mpmath.mpf(2) ** (fmt.min_exponent - fmt.precision + 1))
        assert metrics.ulp_error(zero, hi, lo, fmt, exponent)[0] == pytest.approx(in_ulps, rel=1e-15)
        cell = metrics.cell_metrics(zero, hi, lo, fmt, metrics.lse_bound(x, labels, hi, fmt), exponent)
        assert cell["max_rel_err"] == 1.0 and 0 < cell["max_ulp_err"] < 1e-20  # 3.7e-345 / 4.9e-324 in float64
        assert np.isfinite(cell["bound_ulp"]) and cell["bound_ulp"] > 0


def test_logits_far_beyond_exp_s_range_stay_positive():
    # gap 1e300: exp(-1e300) is held as exp(-2**40), a positive stand-in; the label off the argmax is ordinary
    x = np.array([[0.0, -1e300, -1e300], [0.0, -1e300, 5.0]])
    hi, lo, exponent = exact_cross_entropy(x, np.array([0, 1]))
    assert hi[0] > 0 and exponent[0] < -(2**40)
    assert hi[1] == 1e300 + 5.0 and exponent[1] == 0
    grad = exact_gradient(x, np.array([0, 1]))
    assert (grad.hi[:, 1:] != 0).all() and np.isfinite(grad.hi).all()
