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
    def exp_overflow_threshold(self) -> float:
        """ln(largest finite): exp(x) overflows to inf above this."""
        return math.log(self.max_finite)


DTYPES: dict[str, FloatFormat] = {
    fmt.name: fmt
    for fmt in (
        FloatFormat("float16", np.float16, 11, -14, 65504.0),
        FloatFormat("bfloat16", ml_dtypes.bfloat16, 8, -126, float(ml_dtypes.finfo(ml_dtypes.bfloat16).max)),
        FloatFormat("float32", np.float32, 24, -126, float(np.finfo(np.float32).max)),
        FloatFormat("float64", np.float64, 53, -1022, float(np.finfo(np.float64).max)),
    )
}


def round_to(values: np.ndarray, dtype: str) -> np.ndarray:
    """Round float64 values to `dtype`, correctly (to nearest, ties to even), in that dtype.

    Done here rather than by a cast because ml_dtypes casts float64 to bfloat16 through
    float32, which rounds twice (1 + 2**-8 + 2**-30 would become 1 instead of 1 + 2**-7).
    """
    fmt = DTYPES[dtype]
    values = np.asarray(values, dtype=np.float64)
    if fmt.precision >= 53:
        return values.astype(fmt.numpy_type)
    _, exponent = np.frexp(values)  # values = m * 2**exponent, 0.5 <= |m| < 1
    quantum_exponent = np.maximum(exponent - fmt.precision, fmt.min_exponent + 1 - fmt.precision)
    quantum = np.ldexp(1.0, quantum_exponent)
    with np.errstate(over="ignore", invalid="ignore"):
        rounded = np.rint(values / quantum) * quantum
        rounded = np.where(np.abs(rounded) > fmt.max_finite, np.copysign(np.inf, values), rounded)
        return np.where(np.isfinite(values), rounded, values).astype(fmt.numpy_type)
