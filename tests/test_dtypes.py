"""Formats and correct rounding from float64."""

import math

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
