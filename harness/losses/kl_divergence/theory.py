"""Where the KL divergence paths break, per dtype, from round-to-nearest (harness.dtypes).

Mechanisms (the names path entries declare, the breakdown checks):

- probability underflow: a probability exp(log p) rounds to 0 once log p is at or below
  ln(smallest subnormal / 2) (-103.97 in float32, -745.13 in float64; ln(smallest normal) where
  results flush, -87.34 in float32). A teacher probability of 0 makes p (log p - log q) 0 * -inf =
  NaN in the naive path (F.kl_div, optax and rel_entr take 0 log 0 = 0); a student probability of 0
  under a positive teacher one makes it inf.
- cancellation: KL = sum_j p_j (log p_j - log q_j) is a sum of terms of both signs, and
  cross-entropy minus entropy a difference of two sums of size H + KL and H; rounding each log to
  unit roundoff u leaves a relative error of about u kappa with kappa = (CE + H) / KL (`condition`).
  A student within delta of its teacher has KL ~ T**2 delta**2 Var_p(noise) / (2 T**2) while CE + H
  ~ 2 H: kappa ~ 4 H T**2 / (delta**2 Var), so the result is noise once delta is below
  T sqrt(4 H u / Var) (`noise_below_delta`).
- negative KL: where u kappa passes 1 the computed KL can be below 0 (a sign the exact value never
  has); `status` tells a negative result from a correct one.
- probability clip: Keras's KLDivergence clips p and q to [1e-7, 1] (a probability below 1e-7
  counts as 1e-7).
"""

from __future__ import annotations

import math

import numpy as np

from harness.dtypes import DTYPES
from harness.mechanisms import PROBABILITY_CLIP

PROBABILITY_UNDERFLOW = "probability underflow"
CANCELLATION = "cancellation"
NEGATIVE_KL = "negative KL"
MECHANISMS = (PROBABILITY_UNDERFLOW, CANCELLATION, NEGATIVE_KL, PROBABILITY_CLIP)
KERAS_EPSILON = 1e-7


def probability_underflows_at(dtype: str, flushes_subnormals: bool = False) -> float:
    """The log-probability at or below which exp(log p) rounds to 0: ln(smallest subnormal / 2), or
    ln(smallest normal) where subnormal results flush to zero."""
    fmt = DTYPES[dtype]
    return -(fmt.exp_flush_threshold if flushes_subnormals else fmt.exp_underflow_threshold)


def probability_is_zero_below(dtype: str, exp_underflow: float, quotient_flushes: bool) -> float:
    """The log-probability below which a softmax exp(z - max) / sum returns 0, from the framework's
    measured facts (harness.backends): once its exp returns 0 (-exp_underflow: -103.97 in float32,
    MLX's float32 polynomial -87.68 in float32 and float64), or once the quotient falls below the
    smallest normal where its division flushes (-87.34), whichever comes first."""
    flush = DTYPES[dtype].exp_flush_threshold if quotient_flushes else math.inf
    return -min(exp_underflow, flush)


def condition(log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """kappa = sum_j p_j (|log p_j| + |log q_j|) / KL per row, from exact float64 log-probabilities
    (rows, classes): the relative error of KL per unit of rounding of the logs (inf where KL = 0)."""
    p = np.exp(log_p)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(p > 0, p * (np.abs(log_p) + np.abs(log_q)), 0.0).sum(axis=1)
        kl = np.where(p > 0, p * (log_p - log_q), 0.0).sum(axis=1)
        return scale / kl


def cancellation_bound(kappa, dtype: str) -> np.ndarray:
    """u kappa: the relative error a path that rounds each log to `dtype` can have; past 1, noise."""
    return np.asarray(kappa, dtype=np.float64) * DTYPES[dtype].unit_roundoff


def noise_below_delta(dtype: str, entropy: float, variance: float, temperature: float = 1.0) -> float:
    """The delta below which a near student's KL (student = teacher + delta * noise) is noise in
    `dtype`: where u kappa = 1 with kappa = 4 H T**2 / (delta**2 Var_p(noise)), i.e.
    T sqrt(4 H u / Var)."""
    return temperature * math.sqrt(4.0 * entropy * DTYPES[dtype].unit_roundoff / variance)


def keras_clip_floor() -> float:
    """Keras's floor on each probability before p log(p / q)."""
    return KERAS_EPSILON


def negative_limits(dtype: str, n_classes: int) -> list:
    """Where a computed KL can turn negative: once its rounding error, up to about C u kappa KL for a sum
    of C terms each rounded to u (kappa: the inputs' max_condition), can reach KL itself, i.e. from
    u kappa = 1 / C on; past it the sign is noise, so the first negative row comes at a random scale
    beyond (an open range on max_condition). And at once where a row's exact KL is 0 (teacher and
    student round to the same logits)."""
    from harness.losses.limits import Limit

    u = DTYPES[dtype].unit_roundoff
    why = f"from u kappa = 1 / C on, u = {u:.3g} ({dtype}), C = {n_classes}: the sign is noise"
    return [
        Limit(NEGATIVE_KL, "max_condition", 1.0 / (u * n_classes), upper=math.inf, why=why),
        Limit(NEGATIVE_KL, "min_exact_loss", 0.0, sense=-1, why="an exact KL of 0: any rounding error shows its sign"),
    ]


def limits(framework: str, path: str, dtype: str, facts: dict) -> list:
    """Where each path fails in `dtype`, at the facts the backend measured, for the breakdown
    (harness.outputs.named_breakdown): thresholds on the smallest log-probability of the teacher
    (0 * log 0 = NaN in the naive path) and of the student (a zero q under a positive p: inf in the naive
    path and in SciPy's rel_entr; Keras's q clipped at 1e-7 makes p / q overflow float16), and the range
    of the condition number where a negative KL can appear (in the dtype the path accumulates in: the
    breaks table's `accumulation`, in `facts`)."""
    from harness.losses.limits import Limit

    underflow = float(facts.get("exp_underflow", DTYPES[dtype].exp_underflow_threshold))
    zero = probability_is_zero_below(dtype, underflow, bool(facts.get("quotient_flushes", False)))
    teacher = Limit(PROBABILITY_UNDERFLOW, "min_teacher_log_prob", zero, sense=-1, why="a teacher p of 0: 0 * log 0")
    why = "a student q of 0 makes inf where its p is not 0 too: from there on"
    student = Limit(PROBABILITY_UNDERFLOW, "min_student_log_prob", zero, sense=-1, upper=-math.inf, why=why)
    negative = negative_limits(facts.get("accumulation") or dtype, int(facts.get("n_classes", 2)))
    if path == "naive":
        return [teacher, student, *negative]
    if path == "kl_div" and framework == "numpy":
        return [student, *negative]
    if path == "kl_div" and framework == "tensorflow" and dtype == "float16":
        clip = math.log(float(np.float16(KERAS_EPSILON)))
        why = "Keras clips q at 1e-7; p / q overflows float16 from there on, once p > 65504 q"
        return [Limit(PROBABILITY_CLIP, "min_student_log_prob", clip, sense=-1, upper=-math.inf, why=why), *negative]
    return negative
