"""Formats and correct rounding from float64."""

import math

import mpmath
import numpy as np
import pytest

from harness.dtypes import DTYPES, round_to


@pytest.mark.parametrize(
    ("dtype", "threshold"), [("float16", 11.09), ("bfloat16", 88.72), ("float32", 88.72), ("float64", 709.78)]
)
def test_exp_overflow_thresholds(dtype, threshold):
    assert DTYPES[dtype].exp_overflow_threshold == pytest.approx(threshold, abs=0.005)


def test_limits_match_numpy_and_ml_dtypes():
    import ml_dtypes

    for name, fmt in DTYPES.items():
        info = ml_dtypes.finfo(fmt.numpy_type) if name == "bfloat16" else np.finfo(fmt.numpy_type)
        assert fmt.max_finite == float(info.max)
        assert fmt.smallest_normal == float(info.smallest_normal)
        assert fmt.smallest_subnormal == float(info.smallest_subnormal)
        assert fmt.precision == info.nmant + 1


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_round_to_agrees_with_numpy_casts(rng, dtype):
    values = rng.standard_normal(20000) * 10.0 ** rng.integers(-50, 50, 20000)
    values = np.concatenate([values, [0.0, -0.0, 65519.99, 65520.0, 1e39, -1e39, 2.0**-25, 3 * 2.0**-26]])
    with np.errstate(over="ignore"):
        expected = values.astype(DTYPES[dtype].numpy_type)
        assert np.array_equal(round_to(values, dtype), expected)


def test_bfloat16_rounds_once_not_through_float32():
    # halfway between 1 and 1 + 2**-7 plus a nudge: correct rounding goes up; float32 first goes to the tie
    assert float(round_to(np.array([1 + 2**-8 + 2**-30]), "bfloat16")[0]) == 1 + 2**-7
    assert float(round_to(np.array([1 + 2**-8]), "bfloat16")[0]) == 1.0  # a true tie goes to even


def test_bfloat16_overflow_and_subnormals():
    fmt = DTYPES["bfloat16"]
    out = round_to(np.array([fmt.max_finite * 1.01, 2.0**-133, 2.0**-134 * 1.01]), "bfloat16").astype(float)
    assert math.isinf(out[0]) and out[1] == 2.0**-133 and out[2] == 2.0**-133


# --- thresholds derived from round-to-nearest ------------------------------------------------

LN2 = math.log(2.0)


@pytest.mark.parametrize(
    ("dtype", "largest", "half_ulp", "about"),
    [
        ("float16", 65504.0, 16.0, 11.0901),  # ln 65520
        ("bfloat16", (2 - 2.0**-7) * 2.0**127, 2.0**119, 88.7209),
        ("float32", (2 - 2.0**-23) * 2.0**127, 2.0**103, 88.7228),
        ("float64", (2 - 2.0**-52) * 2.0**1023, 2.0**970, 709.7827),
    ],
)
def test_exp_overflows_past_ln_of_largest_plus_half_an_ulp(dtype, largest, half_ulp, about):
    fmt = DTYPES[dtype]
    assert fmt.half_ulp_at_max == half_ulp
    with mpmath.workdps(40):
        exact = mpmath.log(mpmath.mpf(largest) + half_ulp)
        assert fmt.exp_overflow_threshold == pytest.approx(float(exact), rel=1e-15)
    assert fmt.exp_overflow_threshold == pytest.approx(about, abs=1e-4)
    assert fmt.exp_overflow_threshold >= math.log(largest)  # equal in float64 for float64 itself


@pytest.mark.parametrize(
    ("dtype", "subnormal_exponent", "normal_exponent", "about", "flush_about"),
    [
        ("float16", -24, -14, 17.33, 9.704),
        ("bfloat16", -133, -126, 92.88, 87.34),
        ("float32", -149, -126, 103.97, 87.34),
        ("float64", -1074, -1022, 745.13, 708.40),
    ],
)
def test_exp_underflows_past_minus_ln_half_the_smallest_subnormal(
    dtype, subnormal_exponent, normal_exponent, about, flush_about
):
    fmt = DTYPES[dtype]
    assert fmt.exp_underflow_threshold == pytest.approx((1 - subnormal_exponent) * LN2, rel=1e-15)
    assert fmt.exp_underflow_threshold == pytest.approx(about, abs=0.005)
    assert fmt.exp_flush_threshold == pytest.approx(-normal_exponent * LN2, rel=1e-15)
    assert fmt.exp_flush_threshold == pytest.approx(flush_about, abs=0.005)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_exp_rounds_to_inf_and_to_zero_at_the_thresholds(dtype):
    """exp in float64 (good to 2**-52, far inside the margins), rounded once to the dtype,
    is finite just below each threshold and inf, resp. 0, just above it."""
    fmt = DTYPES[dtype]
    big, small = fmt.exp_overflow_threshold, fmt.exp_underflow_threshold
    margin = 1e-9 if dtype == "float64" else 1e-6
    x = np.array([big - margin, big + margin, -(small - margin), -(small + margin)])
    with np.errstate(over="ignore", under="ignore"):
        values = round_to(np.exp(x), dtype).astype(np.float64)
    assert np.isfinite(values[0]) and np.isinf(values[1]) and values[2] > 0 and values[3] == 0


def test_rounds_to_inf_at_the_tie_and_just_below_it():
    f16, f64 = DTYPES["float16"], DTYPES["float64"]
    # float16: 65520 = 65504 + 16 is the tie between 65504 and inf, which goes to inf (even)
    hi = np.array([65519.99, 65520.0, 65520.0, 65520.0, -65520.0, 1e6, np.inf])
    lo = np.array([0.0, 0.0, -1e-12, 1e-12, 0.0, 0.0, 0.0])
    assert f16.rounds_to_inf(hi, lo).tolist() == [False, True, False, True, True, True, True]
    # where the low word is 0 it agrees with rounding hi; elsewhere only the pair can tell (65520 - 1e-12)
    plain = lo == 0
    assert np.array_equal(f16.rounds_to_inf(hi[plain]), np.isinf(round_to(hi[plain], "float16")))
    # float64: largest + half an ulp (2**970) is not a float64; the low word decides
    top = np.full(3, f64.max_finite)
    assert f64.rounds_to_inf(top, np.array([2.0**970, 2.0**969, -(2.0**970)])).tolist() == [True, False, False]


def test_rounds_to_zero_at_half_the_smallest_subnormal():
    f16, f64 = DTYPES["float16"], DTYPES["float64"]
    # float16: 2**-25 is the tie between 0 and 2**-24, which goes to 0 (even)
    hi = np.array([2.0**-25, 2.0**-25, 2.0**-25, 2.0**-24, 0.0, -(2.0**-26)])
    lo = np.array([0.0, 1e-30, -1e-30, 0.0, 0.0, 0.0])
    assert f16.rounds_to_zero(hi, lo).tolist() == [True, False, True, False, True, True]
    # float64, with values held as (hi + lo) 2**exponent below its range
    values = np.array([1.0, 1.0, 1.0, 1.5, 2.0**-1074])
    assert f64.rounds_to_zero(values, 0.0, np.array([-1075, -1074, -1076, -1075, 0])).tolist() == [
        True,
        False,
        True,
        False,
        False,
    ]


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_round_to_agrees_with_rounding_by_the_spacing(rng, dtype):
    """The fast roundings (NumPy casts; bfloat16 on the bits) against dividing by the spacing,
    on random values over every binade and on exact ties and their neighbours."""
    from harness.dtypes import round_by_quantum

    fmt = DTYPES[dtype]
    values = rng.standard_normal(20000) * 10.0 ** rng.integers(-330, 300, 20000)
    kept = rng.integers(2 ** (fmt.precision - 1), 2**fmt.precision, 5000).astype(np.float64)
    ties = np.ldexp(kept + 0.5, rng.integers(fmt.min_exponent - 12, 130, 5000) - fmt.precision + 1)
    values = np.concatenate([values, ties, np.nextafter(ties, np.inf), np.nextafter(ties, -np.inf), -ties])
    values = np.concatenate([values, [0.0, np.inf, -np.inf, fmt.max_finite, fmt.max_finite + fmt.half_ulp_at_max]])
    with np.errstate(over="ignore"):
        assert np.array_equal(round_to(values, dtype).astype(np.float64), round_by_quantum(values, fmt))
