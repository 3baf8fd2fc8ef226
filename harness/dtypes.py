"""The floating-point formats under test, described once: names, NumPy types and limits."""

from __future__ import annotations

import math
from dataclasses import dataclass

import ml_dtypes
import numpy as np


@dataclass(frozen=True)
class FloatFormat:
    """An IEEE-style binary format: `precision` significand bits (hidden bit included)."""

    name: str
    numpy_type: type
    precision: int
    min_exponent: int  # exponent of the smallest normal number, 2**min_exponent
    max_finite: float

    @property
    def smallest_normal(self) -> float:
        return 2.0**self.min_exponent

    @property
    def smallest_subnormal(self) -> float:
        return 2.0 ** (self.min_exponent - self.precision + 1)

    @property
    def unit_roundoff(self) -> float:
        return 2.0**-self.precision

    @property
    def half_ulp_at_max(self) -> float:
        """Half the spacing at the largest finite value: 16 in float16 (65504 + 16 rounds to inf)."""
        return math.ldexp(1.0, math.frexp(self.max_finite)[1] - 1 - self.precision)

    @property
    def exp_overflow_threshold(self) -> float:
        """ln(largest finite + half an ulp): to nearest, exp(x) rounds to inf from here on
        (the tie goes to the even neighbour, which is inf), and stays finite just below."""
        return math.log(self.max_finite) + math.log1p(self.half_ulp_at_max / self.max_finite)

    @property
    def exp_underflow_threshold(self) -> float:
        """-ln(smallest subnormal / 2): to nearest, exp(-x) rounds to 0 from here on (the tie
        goes to even, 0) under gradual underflow."""
        return -math.log(self.smallest_subnormal) + math.log(2.0)

    @property
    def exp_flush_threshold(self) -> float:
        """-ln(smallest normal): exp(-x) becomes 0 beyond it where subnormal results flush to zero."""
        return -math.log(self.smallest_normal)

    def rounds_to_inf(self, hi, lo=0.0) -> np.ndarray:
        """Whether each exact value hi + lo (a double-double) rounds to +-inf in this format:
        |hi + lo| >= largest finite + half an ulp. Infinite hi counts as rounding to inf."""
        hi, lo = np.asarray(hi, dtype=np.float64), np.asarray(lo, dtype=np.float64)
        sign = np.where(hi < 0, -1.0, 1.0)
        with np.errstate(invalid="ignore", over="ignore"):
            # (|hi| - max) - half: exact near the boundary, and of the right sign far from it;
            # the low word only decides where that difference is 0 (|lo| < half an ulp of hi).
            gap = (np.abs(hi) - self.max_finite) - self.half_ulp_at_max
            return np.isinf(hi) | (gap + sign * lo >= 0)

    def rounds_to_zero(self, hi, lo=0.0, exponent=0) -> np.ndarray:
        """Whether each exact value (hi + lo) * 2**exponent rounds to (signed) 0 in this format:
        |value| <= smallest subnormal / 2 (the tie goes to even, 0). Compared 2**64 higher,
        where float64 holds half of its own smallest subnormal too."""
        hi, lo = np.asarray(hi, dtype=np.float64), np.asarray(lo, dtype=np.float64)
        exponent = np.asarray(exponent, dtype=np.int64)
        sign = np.where(hi < 0, -1.0, 1.0)
        with np.errstate(invalid="ignore", over="ignore"):  # a value 2**-1100 below: half_subnormal is inf
            half_subnormal = np.ldexp(1.0, self.min_exponent - self.precision + 64 - exponent)
            gap = np.ldexp(np.abs(hi), 64) - half_subnormal
            return (hi == 0) | (gap + sign * np.ldexp(lo, 64) <= 0)


DTYPES: dict[str, FloatFormat] = {
    fmt.name: fmt
    for fmt in (
        FloatFormat("float16", np.float16, 11, -14, 65504.0),
        FloatFormat("bfloat16", ml_dtypes.bfloat16, 8, -126, float(ml_dtypes.finfo(ml_dtypes.bfloat16).max)),
        FloatFormat("float32", np.float32, 24, -126, float(np.finfo(np.float32).max)),
        FloatFormat("float64", np.float64, 53, -1022, float(np.finfo(np.float64).max)),
    )
}


NUMPY_ROUNDS_ONCE = ("float16", "float32", "float64")  # NumPy's casts from float64 round correctly


def round_to(values: np.ndarray, dtype: str) -> np.ndarray:
    """Round float64 values to `dtype`, correctly (to nearest, ties to even), in that dtype.

    NumPy's own casts do this for float16 and float32. bfloat16 is rounded here on the bits,
    because ml_dtypes casts float64 to bfloat16 through float32, which rounds twice
    (1 + 2**-8 + 2**-30 would become 1 instead of 1 + 2**-7).
    """
    fmt = DTYPES[dtype]
    values = np.asarray(values, dtype=np.float64)
    if values.size > _BLOCK_ENTRIES and dtype not in NUMPY_ROUNDS_ONCE:  # bounded temporaries
        flat = np.ascontiguousarray(values).reshape(-1)
        out = np.empty(flat.shape, dtype=fmt.numpy_type)
        for start in range(0, flat.size, _BLOCK_ENTRIES):
            out[start : start + _BLOCK_ENTRIES] = round_to(flat[start : start + _BLOCK_ENTRIES], dtype)
        return out.reshape(values.shape)
    if dtype in NUMPY_ROUNDS_ONCE:
        with np.errstate(over="ignore"):
            return values.astype(fmt.numpy_type)
    with np.errstate(over="ignore"):
        rounded = _round_significand(values, fmt.precision)
        subnormal = np.abs(values) < fmt.smallest_normal
        if subnormal.any():
            rounded[subnormal] = round_by_quantum(values[subnormal], fmt)
        return rounded.astype(fmt.numpy_type)  # exact now: inf past the largest finite


_BLOCK_ENTRIES = 2**20  # bfloat16 rounds on the bits: 4 uint64 temporaries per entry, a block at a time


def _round_significand(values: np.ndarray, precision: int) -> np.ndarray:
    """Float64 values rounded to `precision` significand bits, to nearest even, on the bit
    pattern: add half the dropped unit (less one, plus the last kept bit), then clear the dropped
    bits. A carry moves into the exponent, as it should. Right for float64's normal numbers."""
    drop = np.uint64(53 - precision)
    bits = np.ascontiguousarray(values).view(np.uint64)
    last_kept = (bits >> drop) & np.uint64(1)
    half_less_one = (np.uint64(1) << (drop - np.uint64(1))) - np.uint64(1)
    rounded = ((bits + half_less_one + last_kept) >> drop) << drop
    return np.where(np.isfinite(values), rounded.view(np.float64), values)


def round_by_quantum(values: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    """The same rounding by dividing by the format's spacing at each value (any range, slower)."""
    _, exponent = np.frexp(values)  # values = m * 2**exponent, 0.5 <= |m| < 1
    quantum_exponent = np.maximum(exponent - fmt.precision, fmt.min_exponent + 1 - fmt.precision)
    quantum = np.ldexp(1.0, quantum_exponent)
    with np.errstate(over="ignore", invalid="ignore"):
        rounded = np.rint(values / quantum) * quantum
        rounded = np.where(np.abs(rounded) > fmt.max_finite, np.copysign(np.inf, values), rounded)
        return np.where(np.isfinite(values), rounded, values)
