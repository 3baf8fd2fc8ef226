"""Where the binary cross-entropy paths break, per dtype, from round-to-nearest (harness.dtypes).

Mechanisms (the names path entries declare, the breakdown checks):

- sigmoid rounds to 1: 1 - sigmoid(x) = 1 / (1 + e**x) is at most half the spacing below 1,
  2**-(p+1), from x = ln(2**(p+1) - 1) on (17.33 in float32, 37.43 in float64) for a correctly
  rounded sigmoid; computed as 1 / (1 + exp(-x)), once 1 + exp(-x) rounds to 1, from x = p ln 2
  (16.64, 36.74). Then log(1 - s) = -inf: the naive loss is NaN for t = 1 (0 * -inf) and inf for
  t < 1; the clamped and clipped routes cap it.
- sigmoid rounds to 0: sigmoid(x) ~ e**x is at most half the smallest subnormal from
  x = ln(smallest subnormal / 2) on (-103.97 in float32, -745.13 in float64), or below the smallest
  normal where results flush (-87.34); computed as 1 / (1 + exp(-x)) it is 0 sooner, once exp(-x)
  overflows (x below -88.72 in float32, -709.78 in float64: exp overflow).
- log clamp: F.binary_cross_entropy and MLX's probability route clamp each log at -100, so a term
  is at most 100 (`LOG_CLAMP_CAP`): a loss above 100 is capped, and one whose sigmoid rounded to
  0 or 1 reads 100 (t = 1 or 0) whatever its exact value.
- probability clip: Keras clips probabilities to [1e-7, 1 - 1e-7] in the input dtype, capping
  -log s at -ln(fl(1e-7)) = 16.118 and -log(1 - s) at -ln(1 - fl(1 - 1e-7)): 15.942 in float32,
  16.118 in float64, inf where 1 - 1e-7 rounds to 1 (float16, bfloat16).
- softplus threshold: F.softplus returns x itself above 20, tf.math.softplus above
  -(ln eps + 2) (13.94 in float32, 34.04 in float64), so softplus(x) - t x is (1 - t) x: 0 for t = 1,
  whatever the exact loss log1p(e**-x).
- cancellation: softplus(x) - x (t = 1, x > 0) and x - logsigmoid(x) (t = 0, x < 0, PyTorch's
  fused form (1 - t) x - logsigmoid(x)) subtract two numbers within e**-|x| of each other: the loss
  is exactly 0 once x + e**-|x| rounds to x (`absorbed_from`: 14.56 in float32, 33.27 in float64).

Measured on the CPU (NumPy 2.4, PyTorch 2.13, JAX 0.10.2, MLX 0.32.4, TensorFlow 2.21), float32 and
float64, and tested: the naive loss is NaN from p ln 2 (NumPy, PyTorch, JAX, TensorFlow) and from
ln(2**(p+1) - 1) (MLX); inf below -88.72 / -709.78 (NumPy, PyTorch: exp(-x) overflows), -87.34 /
-708.40 (JAX, TensorFlow: the quotient flushes), -88.0 in both (MLX: its exp overflows from 88.0).
"""

from __future__ import annotations

import math

import numpy as np

from harness.dtypes import DTYPES, round_to
from harness.mechanisms import EXP_OVERFLOW, PROBABILITY_CLIP

SIGMOID_ROUNDS_TO_ONE = "sigmoid rounds to 1"
SIGMOID_ROUNDS_TO_ZERO = "sigmoid rounds to 0"
LOG_CLAMP = "log clamp"
SOFTPLUS_THRESHOLD = "softplus threshold"
CANCELLATION = "cancellation"
MECHANISMS = (
    SIGMOID_ROUNDS_TO_ONE,
    SIGMOID_ROUNDS_TO_ZERO,
    EXP_OVERFLOW,
    LOG_CLAMP,
    PROBABILITY_CLIP,
    SOFTPLUS_THRESHOLD,
    CANCELLATION,
)

LOG_CLAMP_CAP = 100.0  # F.binary_cross_entropy and mlx's with_logits=False: log clamped at -100
KERAS_EPSILON = 1e-7  # keras.config.epsilon(): the probability clip
TORCH_SOFTPLUS_THRESHOLD = 20.0  # F.softplus(x, beta=1, threshold=20) returns x above it


def sigmoid_rounds_to_one(dtype: str) -> float:
    """x from which a correctly rounded sigmoid(x) is 1: ln(2**(p+1) - 1) (the tie goes to 1, even)."""
    return math.log(2.0 ** (DTYPES[dtype].precision + 1) - 1)


def one_plus_exp_rounds_to_one(dtype: str) -> float:
    """x from which 1 / (1 + exp(-x)) is 1: 1 + exp(-x) rounds to 1 once exp(-x) <= 2**-p (half an
    ulp of 1, tie to 1), x >= p ln 2."""
    return DTYPES[dtype].precision * math.log(2.0)


def sigmoid_rounds_to_zero(dtype: str, flushes_subnormals: bool = False) -> float:
    """x at or below which a correctly rounded sigmoid(x) is 0: sigmoid(x) at most h = smallest
    subnormal / 2 (h = smallest normal where subnormal results flush to zero), x <= ln(h / (1 - h))."""
    fmt = DTYPES[dtype]
    exponent = fmt.min_exponent if flushes_subnormals else fmt.min_exponent - fmt.precision  # h = 2**exponent
    return exponent * math.log(2.0) - math.log1p(-math.ldexp(1.0, exponent))  # x <= ln(h / (1 - h))


def exp_minus_x_overflows(dtype: str) -> float:
    """x below which exp(-x) is inf, so 1 / (1 + exp(-x)) is 0: -ln(largest finite + half an ulp)."""
    return -DTYPES[dtype].exp_overflow_threshold


def keras_clip_caps(dtype: str) -> tuple[float, float]:
    """The largest -log(s) and -log(1 - s) after Keras's clip to [1e-7, 1 - 1e-7] in `dtype`:
    -ln(fl(1e-7)) and -ln(1 - fl(1 - 1e-7)) (1 - fl(...) is exact; inf where fl(1 - 1e-7) = 1)."""
    low = float(round_to(np.array([KERAS_EPSILON]), dtype)[0])
    high = float(round_to(np.array([1.0 - KERAS_EPSILON]), dtype)[0])
    return -math.log(low), (math.inf if high == 1.0 else -math.log(1.0 - high))


def softplus_returns_x_above(framework: str, dtype: str) -> float | None:
    """Where the framework's softplus returns x itself (None: it has no threshold): PyTorch's 20,
    TensorFlow's -(ln eps + 2) with eps = 2**(1 - p) of float32 or float64 (measured for those two)."""
    if framework == "torch":
        return TORCH_SOFTPLUS_THRESHOLD
    if framework == "tensorflow" and dtype in ("float32", "float64"):
        return -(math.log(2.0 ** (1 - DTYPES[dtype].precision)) + 2.0)
    return None


def absorbed_from(dtype: str) -> float:
    """The smallest x > 0 from which x + e**-x rounds to x (e**-x at most half an ulp of x): there
    softplus(x) - x and x - logsigmoid(x)'s mirror cancel to exactly 0. In the binade [2**e, 2**(e+1))
    half an ulp is 2**(e - p), so x >= (p - e) ln 2 must hold inside it; the first binade where it does."""
    p = DTYPES[dtype].precision
    for e in range(-4, 12):
        x = max(2.0**e, (p - e) * math.log(2.0))
        if x < 2.0 ** (e + 1):
            return x
    raise ValueError(f"no absorption threshold found for {dtype}")


# Where each framework's sigmoid rounds to 1 (measured, float32 and float64): MLX's where a correctly
# rounded sigmoid does; NumPy's (scipy.special.expit), PyTorch's, JAX's and TensorFlow's where
# 1 + exp(-x) rounds to 1.
ROUNDED_SIGMOID = ("mlx",)


def sigmoid_is_one_from(framework: str, dtype: str) -> float:
    """Where the framework's sigmoid(x) returns 1 (so the naive loss is NaN for t = 1)."""
    if framework in ROUNDED_SIGMOID:
        return sigmoid_rounds_to_one(dtype)
    return one_plus_exp_rounds_to_one(dtype)


def sigmoid_is_zero_below(dtype: str, exp_overflow: float, quotient_flushes: bool) -> float:
    """Where 1 / (1 + exp(-x)) returns 0 (so log sigmoid is -inf), from the framework's measured facts
    (harness.backends): once exp(-x) is inf (x below -exp_overflow: -88.72 in float32, MLX's -88.0),
    or once the quotient is below what the division keeps, whichever comes first."""
    return max(-exp_overflow, sigmoid_rounds_to_zero(dtype, quotient_flushes))


def log_clamp_reads_cap(framework: str, dtype: str, exp_overflow: float, quotient_flushes: bool) -> tuple[float, float]:
    """Where the clamped probability route (PyTorch, MLX) returns exactly 100: t = 1 below
    max(-100, where sigmoid returns 0), the exact loss being about -x; t = 0 from where sigmoid
    returns 1 (16.64 in float32 for PyTorch, while the exact loss there is 16.64)."""
    zero = sigmoid_is_zero_below(dtype, exp_overflow, quotient_flushes)
    return max(-LOG_CLAMP_CAP, zero), sigmoid_is_one_from(framework, dtype)


def softplus_loss_is_zero_from(framework: str, dtype: str) -> float:
    """Where softplus(x) - x (the softplus path at t = 1, and MLX's fused form) is exactly 0 for every
    larger x: the framework's softplus threshold, or absorption, whichever comes first. Measured: exact
    for NumPy, JAX and MLX; PyTorch's float32 softplus and TensorFlow's (log1p(exp(x)) below its
    threshold) are off by up to an ulp of x: PyTorch's float32 loss is 0 from 14.52 with isolated ulps
    up to 14.65, TensorFlow's float32 one has isolated zeros from 13.23 (5% before its threshold), and
    its float64 one is 0 from 32.93, 1% before absorption's 33.27."""
    threshold = softplus_returns_x_above(framework, dtype)
    return min(absorbed_from(dtype), math.inf if threshold is None else threshold)


def thresholds(dtype: str, flushes_subnormals: bool = False) -> dict[str, float]:
    """Every threshold of one dtype by name (for tables and the breakdown)."""
    clip_one, clip_zero = keras_clip_caps(dtype)
    return {
        "sigmoid_rounds_to_one": sigmoid_rounds_to_one(dtype),
        "one_plus_exp_rounds_to_one": one_plus_exp_rounds_to_one(dtype),
        "sigmoid_rounds_to_zero": sigmoid_rounds_to_zero(dtype, flushes_subnormals),
        "exp_minus_x_overflows": exp_minus_x_overflows(dtype),
        "log_clamp_cap": LOG_CLAMP_CAP,
        "keras_clip_cap_t1": clip_one,
        "keras_clip_cap_t0": clip_zero,
        "absorbed_from": absorbed_from(dtype),
    }


# Where the sigmoid of a 16-bit dtype returns 1, measured on the CPU: NumPy, PyTorch and MLX compute it in
# float32 and round (ln(2**(p+1) - 1): correct rounding), JAX in the dtype itself as 1 / (1 + exp(-x))
# (p ln 2); TensorFlow's half-precision and float64 sigmoids return 1 at inputs between the two, which
# differ by family (7.62 and 7.67 in float16, 5.86 and 6.24 in bfloat16, 37.06 in float64).
IN_DTYPE_SIGMOID = ("jax",)
SOFTPLUS_BELOW_X = ("tensorflow",)  # its softplus is log1p(exp(x)) below its threshold, up to an ulp of x off
BETWEEN = ("tensorflow",)


def sigmoid_one_limit(framework: str, dtype: str):
    """The Limit on max_logit where the framework's sigmoid returns 1 in `dtype`: a threshold, or for
    TensorFlow outside float32 the range from p ln 2 to ln(2**(p+1) - 1)."""
    from harness.losses.limits import Limit

    half = dtype in ("float16", "bfloat16")
    if framework in BETWEEN and dtype != "float32":
        low, high = one_plus_exp_rounds_to_one(dtype), sigmoid_rounds_to_one(dtype)
        why = "between where 1 + exp(-x) rounds to 1 and where a correctly rounded sigmoid is 1"
        return Limit(SIGMOID_ROUNDS_TO_ONE, "max_logit", low, upper=high, why=why)
    if half and framework not in IN_DTYPE_SIGMOID:
        why = "computed in float32, rounded"
        return Limit(SIGMOID_ROUNDS_TO_ONE, "max_logit", sigmoid_rounds_to_one(dtype), why=why)
    if framework in ROUNDED_SIGMOID:
        return Limit(SIGMOID_ROUNDS_TO_ONE, "max_logit", sigmoid_rounds_to_one(dtype), why="correctly rounded")
    return Limit(SIGMOID_ROUNDS_TO_ONE, "max_logit", one_plus_exp_rounds_to_one(dtype), why="1 + exp(-x) rounds to 1")


def limits(framework: str, path: str, dtype: str, facts: dict) -> list:
    """Where each path fails (inf or nan) in `dtype`, at the facts the backend measured (exp_overflow,
    quotient_flushes): thresholds on max_logit (sigmoid rounds to 1) and min_logit (to 0), for the
    breakdown (harness.outputs.named_breakdown). The fused, log-sigmoid and softplus paths and the clamped
    probability route never fail: they lose accuracy (cancellation, the cap, the threshold) instead."""
    from dataclasses import replace

    from harness.losses.limits import Limit

    one = sigmoid_one_limit(framework, dtype)
    if path == "naive":
        overflow = float(facts.get("exp_overflow", DTYPES[dtype].exp_overflow_threshold))
        zero = sigmoid_is_zero_below(dtype, overflow, bool(facts.get("quotient_flushes", False)))
        return [one, Limit(SIGMOID_ROUNDS_TO_ZERO, "min_logit", zero, sense=-1)]
    if path == "probs" and framework == "tensorflow" and math.isinf(keras_clip_caps(dtype)[1]):
        return [replace(one, cause=PROBABILITY_CLIP, why="1 - 1e-7 rounds to 1: the clip keeps sigmoid's 1")]
    if path == "softplus" and framework in SOFTPLUS_BELOW_X:
        # softplus(x) - x for t = 1 is below 0 where the softplus rounds an ulp below x: possible once
        # exp(-x) is within two ulps of x (ln 4 before absorption), at inputs rounding decides
        why = "log1p(exp(x)) can round an ulp below x once exp(-x) is within two ulps of x"
        return [Limit(CANCELLATION, "max_logit", absorbed_from(dtype) - math.log(4.0), upper=math.inf, why=why)]
    return []
