"""The ulp metric and cell metrics on cases checked by hand."""

import numpy as np
import pytest

from harness.dtypes import DTYPES
from harness.sweep import metrics

F16, F32, F64 = DTYPES["float16"], DTYPES["float32"], DTYPES["float64"]


def ulps(computed, hi, lo, fmt):
    return float(metrics.ulp_error(np.array([computed]), np.array([hi]), np.array([lo]), fmt)[0])


def test_exact_hit_is_zero_ulps():
    assert ulps(1.5, 1.5, 0.0, F16) == 0.0
    assert ulps(19.1, 19.1, 0.0, F64) == 0.0


def test_half_ulp_in_float16():
    # exact 1 + 2**-11 lies halfway between float16 neighbours 1 and 1 + 2**-10
    assert ulps(1.0, 1 + 2**-11, 0.0, F16) == 0.5
    assert ulps(1 + 2**-10, 1 + 2**-11, 0.0, F16) == 0.5


def test_sub_ulp_float64_error_uses_the_low_word():
    # exact = 1 + 2**-60 held as (1, 2**-60); computed 1: error 2**-60 = 2**-8 ulp of float64 at 1
    assert ulps(1.0, 1.0, 2.0**-60, F64) == 2.0**-8


def test_ulp_just_below_a_power_of_two():
    # exact = 2 - 2**-60 is below 2, where float64's ulp is 2**-52, not 2**-51
    assert metrics.ulp(np.array([2.0]), np.array([-(2.0**-60)]), F64)[0] == 2.0**-52
    assert metrics.ulp(np.array([2.0]), np.array([2.0**-60]), F64)[0] == 2.0**-51


def test_subnormal_and_zero_exact_values_use_the_subnormal_spacing():
    assert metrics.ulp(np.array([2.0**-20]), np.array([0.0]), F16)[0] == 2.0**-24
    assert metrics.ulp(np.array([0.0]), np.array([0.0]), F16)[0] == 2.0**-24
    assert metrics.ulp(np.array([1e-45]), np.array([0.0]), F32)[0] == 2.0**-149
    # the seed article's third loss in float16: exact 5.02e-9 returned as 0
    assert ulps(0.0, 5.0223e-9, 0.0, F16) == pytest.approx(5.0223e-9 / 2.0**-24)


def test_relative_error():
    rel = metrics.rel_error(np.array([1.1, 0.0]), np.array([1.0, 0.0]), np.array([0.0, 0.0]))
    assert rel[0] == pytest.approx(0.1) and rel[1] == 0.0


def test_cell_metrics_ignores_nonfinite_rows_and_sets_status():
    hi = np.array([1.0, 2.0, 3.0, 4.0])
    lo = np.zeros(4)
    cell = metrics.cell_metrics(np.array([1.0, 2.0 + 2**-51, np.inf, 4.0]), hi, lo, F64)
    assert cell["status"] == "inf" and cell["n_nonfinite"] == 1
    assert cell["max_abs_err"] == 2.0**-51 and cell["max_ulp_err"] == 1.0  # one ulp of float64 at 2
    assert cell["median_ulp_err"] == 0.0
    assert metrics.cell_metrics(np.array([np.nan, np.inf, 1.0, 1.0]), hi, lo, F64)["status"] == "nan"
    all_bad = metrics.cell_metrics(np.array([np.nan] * 4), hi, lo, F64)
    assert all_bad["n_nonfinite"] == 4 and np.isnan(all_bad["max_ulp_err"])


def test_lse_bound_by_hand():
    # x = [0, 0], y = 0: y_lse = ln 2, n = 2, min x = 0, loss = ln 2
    # bound = u (|ln2 + 2 - 0| + ln2 + ln2) = u (2 + 3 ln 2)
    logits = np.array([[0.0, 0.0]])
    bound = metrics.lse_bound(logits, np.array([0]), np.array([np.log(2)]), F32)
    assert bound[0] == pytest.approx(2.0**-24 * (2 + 3 * np.log(2)))


def test_cell_metrics_reports_the_bound_in_ulps_and_the_fraction_within():
    hi, lo = np.array([1.0, 1.0]), np.zeros(2)
    cell = metrics.cell_metrics(np.array([1.0, 1.0 + 2**-40]), hi, lo, F64, bound=np.array([2.0**-45, 2.0**-45]))
    assert cell["bound_ulp"] == 2.0**7  # 2**-45 in ulps of 1 (2**-52)
    assert cell["frac_within_bound"] == 0.5


# --- statuses: a correctly rounded inf or 0 is not a failure --------------------------------


def test_a_correctly_rounded_inf_is_exact_overflow_not_inf():
    # float16: the adversarial loss at scale 1e4 is 70208 > 65520 = largest + half an ulp
    hi, lo = np.array([70208.0, 3.0]), np.zeros(2)
    cell = metrics.cell_metrics(np.array([np.inf, 3.0]), hi, lo, F16)
    assert cell["status"] == metrics.EXACT_OVERFLOW and cell["n_nonfinite"] == 1 and cell["max_ulp_err"] == 0.0
    # 65519 rounds to 65504, not to inf: an inf there is the path's failure
    assert metrics.cell_metrics(np.array([np.inf, 3.0]), np.array([65519.0, 3.0]), lo, F16)["status"] == metrics.INF
    # the wrong sign is a failure too, and NaN stays NaN
    assert metrics.output_status(np.array([-np.inf, 3.0]), hi, lo, F16) == metrics.INF
    assert metrics.output_status(np.array([np.inf, np.nan]), hi, lo, F16) == metrics.NAN
    # without the exact values the old rule stands
    assert metrics.output_status(np.array([np.inf, 3.0])) == metrics.INF


def test_a_correctly_rounded_zero_is_exact_underflow():
    # float16: 2**-26 rounds to 0 (below 2**-25, half the smallest subnormal); 2**-24 does not
    lo = np.zeros(3)
    hi = np.array([2.0**-26, 5.0, 0.0])
    assert metrics.cell_metrics(np.array([0.0, 5.0, 0.0]), hi, lo, F16)["status"] == metrics.EXACT_UNDERFLOW
    wrong = metrics.cell_metrics(np.array([0.0, 5.0, 0.0]), np.array([2.0**-24, 5.0, 0.0]), lo, F16)
    assert wrong["status"] == metrics.OK and wrong["max_ulp_err"] == 1.0  # a wrong 0 shows in the errors
    # an exact 0 computed as 0 underflowed nothing
    assert metrics.output_status(np.array([0.0, 5.0]), np.array([0.0, 5.0]), np.zeros(2), F16) == metrics.OK
    # float64: an exact loss of 2**-1076, held as 1 * 2**-1076, rounds to 0
    assert metrics.output_status(np.array([0.0]), np.array([1.0]), np.zeros(1), F64, np.array([-1076])) == (
        metrics.EXACT_UNDERFLOW
    )
    assert metrics.output_status(np.array([0.0]), np.array([1.0]), np.zeros(1), F64, np.array([-1074])) == metrics.OK


def test_gradient_statuses_take_a_row_as_the_unit():
    # a row of zeros where every exact entry rounds to 0 in float16; a single zero entry is ordinary
    hi = np.array([[2.0**-30, -(2.0**-30)], [0.25, -(2.0**-30)]])
    lo = np.zeros_like(hi)
    assert metrics.gradient_metrics(np.array([[0.0, 0.0], [0.25, 0.0]]), hi, lo, F16)["status"] == (
        metrics.EXACT_UNDERFLOW
    )
    assert metrics.gradient_metrics(np.array([[0.0, 0.0], [0.25, 0.0]]), hi * 2.0**20, lo, F16)["status"] == metrics.OK
    assert metrics.gradient_metrics(np.array([[np.inf, 0.0], [0.25, 0.0]]), hi, lo, F16)["status"] == metrics.INF
    assert set(metrics.GOOD) == {"ok", "exact_overflow", "exact_underflow"} and not set(metrics.GOOD) & set(
        metrics.FAILED
    )


# --- exact values held as (hi + lo) 2**exponent, below float64's range ---------------------------


def scaled(hi, exponent):
    return np.array([hi]), np.array([0.0]), np.array([exponent])


def test_a_computed_zero_against_an_exact_value_below_2_to_the_minus_1075():
    hi, lo, k = scaled(1.5, -1100)  # exact 1.5 * 2**-1100, float64 would hold 0
    zero = np.array([0.0])
    assert metrics.rel_error(zero, hi, lo, k)[0] == 1.0
    assert metrics.abs_error(zero, hi, lo, k)[0] == 0.0  # 2**-1099.4 rounds to 0 in float64
    assert metrics.ulp_error(zero, hi, lo, F64, k)[0] == 1.5 * 2.0**-26  # in units of 2**-1074
    assert metrics.ulp_error(zero, hi, lo, F32, k)[0] == 1.5 * 2.0**-951  # in units of 2**-149
    assert metrics.exponent_of(hi, lo, k)[0] == -1100
    assert metrics.ulp(hi, lo, F64, k)[0] == 2.0**-1074


def test_subnormal_exact_values_are_measured_to_fractions_of_2_to_the_minus_1074():
    smallest = 2.0**-1074
    hi, lo, k = scaled(1.0, -1076)  # a quarter of the smallest subnormal
    assert metrics.ulp_error(np.array([smallest]), hi, lo, F64, k)[0] == 0.75
    hi, lo, k = scaled(3.0, -1075)  # 1.5 units: halfway between 1 and 2 units
    assert metrics.ulp_error(np.array([smallest]), hi, lo, F64, k)[0] == 0.5
    assert metrics.ulp_error(np.array([2 * smallest]), hi, lo, F64, k)[0] == 0.5


def test_a_computed_value_far_above_a_tiny_exact_one():
    hi, lo, k = scaled(1.0, -1100)
    one = np.array([1.0])
    assert metrics.abs_error(one, hi, lo, k)[0] == 1.0
    assert metrics.ulp_error(one, hi, lo, F32, k)[0] == 2.0**149


def test_bound_ulp_is_finite_on_a_tiny_exact_loss():
    # an absolute bound of 1e-10 over float64's 2**-1074 is 2e313 ulps: beyond float64, reads as its largest
    hi, lo, k = scaled(1.0, -1100)
    cell = metrics.cell_metrics(np.array([0.0]), hi, lo, F64, bound=np.array([1e-10]), exponent=k)
    assert cell["bound_ulp"] == np.finfo(np.float64).max
    assert cell["max_rel_err"] == 1.0 and cell["frac_within_bound"] == 1.0


def test_gradient_row_relative_error_of_a_row_of_tiny_entries():
    # exact row (-1, 0.5, 0.5) * 2**-1100, computed as zeros: each error over the largest entry
    hi = np.array([[-1.0, 0.5, 0.5]])
    grad = metrics.gradient_metrics(np.zeros((1, 3)), hi, np.zeros((1, 3)), F64, np.full((1, 3), -1100))
    assert grad["max_row_rel_err"] == 1.0 and grad["max_abs_err"] == 0.0
    assert grad["max_ulp_err"] == 2.0**-26


def test_a_row_whose_exact_gradient_is_zero_reads_zero_when_hit_and_inf_when_missed():
    """An ignored row's exact gradient is all zeros: 0/0 must not turn the cell's max into NaN."""
    fmt = DTYPES["float32"]
    hi = np.array([[0.25, -0.5, 0.25], [0.0, 0.0, 0.0]])
    lo = np.zeros_like(hi)
    hit = metrics.gradient_metrics(np.array([[0.25, -0.5, 0.25 + 2**-20], [0.0, 0.0, 0.0]]), hi, lo, fmt)
    assert hit["max_row_rel_err"] == 2**-20 / 0.5  # row 0: its error over its largest exact entry
    missed = metrics.gradient_metrics(np.array([[0.25, -0.5, 0.25], [0.0, 1e-30, 0.0]]), hi, lo, fmt)
    assert missed["max_row_rel_err"] == np.inf
