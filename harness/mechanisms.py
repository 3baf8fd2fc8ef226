"""Failure mechanisms theory predicts, and where each one's threshold lies in a dtype.

One home for the names (path entries declare them, the breakdown and the plots check them) and
for the thresholds, every one derived from the dtype's round-to-nearest (harness.dtypes):

- sum overflow: exp(x_j) rounds to inf once x_j passes ln(largest finite + half an ulp), and an
  unshifted sum of exponentials once lse(x) passes it, which comes first since lse(x) >= max(x).
  Stated in the errors table's `max_lse` (else `max_logit`, a lower bound on it).
- target underflow: the target probability exp(-loss) rounds to zero, and -log gives inf, once the
  loss passes -ln(smallest subnormal / 2), or -ln(smallest normal) where results flush to zero.
  Stated in `max_exact_loss`.

The dtype a threshold is taken in is the one the framework's exp really computes in, where it
differs (the errors table's measured `exp_dtype`: MLX's float64 exp is float32's). Accuracy
mechanisms that never make a path fail (a probability clip caps a loss instead) are named here too
but have no failure threshold.
"""

from __future__ import annotations

from harness.dtypes import DTYPES

SUM_OVERFLOW, TARGET_UNDERFLOW = "sum overflow", "target underflow"
PROBABILITY_CLIP = "probability clip"  # Keras's from_logits=False route: losses capped at -log(1e-7)
FAILURE_MECHANISMS = (SUM_OVERFLOW, TARGET_UNDERFLOW)  # those that end in inf or nan

# The errors-table column each failure mechanism's threshold is compared with, then its fallback.
THEORY_QUANTITIES: dict[str, tuple[str, ...]] = {
    SUM_OVERFLOW: ("max_lse", "max_logit"),
    TARGET_UNDERFLOW: ("max_exact_loss",),
}
SEPARATOR = "; "  # how the errors table's `mechanisms` column joins a path's mechanisms


def overflow_threshold(dtype: str) -> float:
    """ln(largest finite + half an ulp): exp rounds to inf beyond it, and an unshifted sum once lse(x) does."""
    return DTYPES[dtype].exp_overflow_threshold


def underflow_threshold(dtype: str, flushes_subnormals: bool = False) -> float:
    """-ln(smallest subnormal / 2), or -ln(smallest normal) when subnormals flush to zero:
    a loss beyond it means the target probability exp(-loss) rounds to zero."""
    fmt = DTYPES[dtype]
    return fmt.exp_flush_threshold if flushes_subnormals else fmt.exp_underflow_threshold


def threshold(cause: str, dtype: str, flushes: bool) -> float:
    if cause == SUM_OVERFLOW:
        return overflow_threshold(dtype)
    if cause == TARGET_UNDERFLOW:
        return underflow_threshold(dtype, flushes)
    raise ValueError(f"{cause!r} has no failure threshold; failure mechanisms: {', '.join(FAILURE_MECHANISMS)}")


def joined(mechanisms) -> str:
    """A path's mechanisms as the errors table's `mechanisms` column holds them."""
    return SEPARATOR.join(mechanisms)


def failure_mechanisms(column_value) -> tuple[str, ...] | None:
    """The failure mechanisms in an errors-table `mechanisms` value, in order; None where the table
    says nothing of the path (a custom path, or a table from before the column): no theory."""
    if column_value is None or (isinstance(column_value, float) and column_value != column_value):
        return None
    named = [name for name in str(column_value).split(SEPARATOR) if name]
    return tuple(name for name in named if name in FAILURE_MECHANISMS)
