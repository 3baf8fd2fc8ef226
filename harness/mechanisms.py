"""Failure mechanisms theory predicts, and where each one's threshold lies in a dtype.

One home for the names (path entries declare them, the breakdown and the plots check them) and for
the thresholds, every one derived from the dtype's round-to-nearest (harness.dtypes): sum overflow
(stated in `max_lse`, else `max_logit`), target underflow (`max_exact_loss`), exp overflow
(`max_logit` against the measured `exp_overflow`) and other-class underflow (`max_class_loss`).
Where a probability underflows is measured, not typed (harness.backends): made as a quotient, at
-ln(smallest subnormal / 2), or -ln(smallest normal) where `quotient_flushes`; made by the exp, once
its argument passes the measured `exp_underflow` (`max_target_gap` for a shifting path,
`max_neg_target_logit` for an unshifted one, `max_class_gap` for other classes). Tables from before
those columns take thresholds in `exp_dtype` with `flushes_subnormals` (`legacy_threshold`).
Accuracy mechanisms that never make a path fail are named here too, without a threshold.
The reasoning, mechanism by mechanism: docs/pages/explanation/theory.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.dtypes import DTYPES

SUM_OVERFLOW, TARGET_UNDERFLOW = "sum overflow", "target underflow"
EXP_OVERFLOW = "exp overflow"  # implied by sum overflow (unshifted exps); never declared by a path entry
OTHER_CLASS_UNDERFLOW = "other-class underflow"  # target=dense softmax_log (harness.paths.options)
PROBABILITY_CLIP = "probability clip"  # Keras's from_logits=False route: losses capped at -log(1e-7)
# those that end in inf or nan
FAILURE_MECHANISMS = (SUM_OVERFLOW, TARGET_UNDERFLOW, EXP_OVERFLOW, OTHER_CLASS_UNDERFLOW)

# The errors-table column each failure mechanism's threshold is compared with, then its fallback.
THEORY_QUANTITIES: dict[str, tuple[str, ...]] = {
    SUM_OVERFLOW: ("max_lse", "max_logit"),
    TARGET_UNDERFLOW: ("max_exact_loss",),
    EXP_OVERFLOW: ("max_logit",),
    OTHER_CLASS_UNDERFLOW: ("max_class_loss",),
}
# The quantity a probability made by the exp is stated in, by whether the path shifts (harness.sweep.cells):
# the exp's argument x_y - max_j x_j, or x_y unshifted; then a fallback in a table from before them.
MAX_TARGET_GAP, MAX_NEG_TARGET_LOGIT = "max_target_gap", "max_neg_target_logit"
# other-class underflow's probability made by a shifted exp: its argument x_j - max_k x_k, then the loss
MAX_CLASS_GAP = "max_class_gap"
EXP_UNDERFLOW_QUANTITIES: dict[bool, tuple[str, ...]] = {
    True: (MAX_TARGET_GAP, "max_exact_loss"),  # loss >= gap: the loss, as tables before the gap did
    False: (MAX_NEG_TARGET_LOGIT,),
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
    """A mechanism's threshold from the dtype's rounding alone (`flushes`: subnormal results are 0)."""
    if cause in (SUM_OVERFLOW, EXP_OVERFLOW):
        return overflow_threshold(dtype)
    if cause in (TARGET_UNDERFLOW, OTHER_CLASS_UNDERFLOW):
        return underflow_threshold(dtype, flushes)
    raise ValueError(f"{cause!r} has no failure threshold; failure mechanisms: {', '.join(FAILURE_MECHANISMS)}")


@dataclass(frozen=True)
class ExpFacts:
    """What the backend measured of a framework's exp and division in one dtype (harness.backends)."""

    exp_overflow: float  # the largest input whose exp is finite
    exp_underflow: float  # -x for the most negative input x whose exp is nonzero
    quotient_flushes: bool  # a subnormal quotient comes back as 0


def exp_overflow_applies(dtype: str, facts: ExpFacts, tolerance: float) -> bool:
    """Whether the exp's own overflow comes measurably (by more than `tolerance`) before the sum's."""
    return facts.exp_overflow < overflow_threshold(dtype) * (1 - tolerance)


@dataclass(frozen=True)
class Limit:
    """A threshold theory checks: the mechanism, the errors-table columns it is stated in (the first
    present is taken) and what sets it: 'exp' (the exp's measured range), 'quotient' (a division's
    underflow) or 'dtype' (the dtype's rounding)."""

    cause: str
    quantities: tuple[str, ...]
    threshold: float
    source: str


def measured_limits(cause: str, dtype: str, facts: ExpFacts, shifts: bool, tolerance: float) -> tuple[Limit, ...]:
    """A mechanism's thresholds from the measured facts. `shifts`: the path exponentiates x - max (it
    declares no sum overflow). A target probability is 0 past the quotient's threshold on the loss, or
    past the exp's `exp_underflow` on the exp's argument (max_target_gap shifted, max_neg_target_logit
    not), the latter taken only where it comes more than `tolerance` before the quotient's (not merely
    the last input the dtype holds before it: 92.5 for bfloat16's 92.88); on different quantities,
    either may be passed first. Other-class underflow takes the smaller of the two: the exp's on
    max_class_gap (the largest max_k x_k - x_j; max_class_loss in a table from before it), the
    quotient's on max_class_loss."""
    if cause == SUM_OVERFLOW:
        return (Limit(cause, THEORY_QUANTITIES[cause], overflow_threshold(dtype), "dtype"),)
    if cause == EXP_OVERFLOW:
        return (Limit(cause, THEORY_QUANTITIES[cause], facts.exp_overflow, "exp"),)
    if cause not in (TARGET_UNDERFLOW, OTHER_CLASS_UNDERFLOW):
        raise ValueError(f"{cause!r} has no failure threshold; failure mechanisms: {', '.join(FAILURE_MECHANISMS)}")
    quotient = Limit(cause, THEORY_QUANTITIES[cause], underflow_threshold(dtype, facts.quotient_flushes), "quotient")
    if facts.exp_underflow >= quotient.threshold * (1 - tolerance):
        return (quotient,)
    if cause == OTHER_CLASS_UNDERFLOW:
        exp = Limit(cause, (MAX_CLASS_GAP, *THEORY_QUANTITIES[cause]), facts.exp_underflow, "exp")
        return (exp,) if shifts else (quotient,)
    return (Limit(cause, EXP_UNDERFLOW_QUANTITIES[shifts], facts.exp_underflow, "exp"), quotient)


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
