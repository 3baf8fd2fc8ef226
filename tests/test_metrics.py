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
