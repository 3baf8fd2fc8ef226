"""Every framework and path on the seed article's logits and at the overflow thresholds of theory."""

import numpy as np
import pytest
from conftest import SEED_LABELS, SEED_LOGITS

from harness import backends, paths
from harness.dtypes import DTYPES, round_to
from harness.exact.reference import exact_cross_entropy
from harness.paths import build
from harness.sweep import metrics

TEXTBOOK_PATHS = ("naive", "softmax_log", "log_softmax_nll", "fused")  # the seed article's three ways and more
IMPLEMENTATIONS = [(f, p) for f in backends.FRAMEWORKS for p in TEXTBOOK_PATHS]


def run_path(framework: str, path: str, logits64: np.ndarray, labels: np.ndarray, dtype: str):
    """Round to dtype, run, and return (loss as float64, the dtype name it came back in)."""
    return build.evaluate(framework, build.builtin(framework, path).loss, round_to(logits64, dtype), labels)


def test_every_framework_implements_every_path():
    for framework in backends.FRAMEWORKS:
        assert tuple(paths.implementations_module(framework).PATHS) == paths.paths_of(framework)


@pytest.mark.parametrize(("framework", "path"), IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_seed_article(framework, path, dtype):
    fmt = DTYPES[dtype]
    held = round_to(SEED_LOGITS, dtype).astype(np.float64)
    hi, lo, _ = exact_cross_entropy(held, SEED_LABELS)  # exponent 0: every loss above 2**-960
    loss, returned = run_path(framework, path, SEED_LOGITS, SEED_LABELS, dtype)
    assert returned == dtype
    errors = metrics.ulp_error(loss, hi, lo, fmt)
    # the two large losses (19.1 and 36.6) come out within two ulps on every path, of the dtype the
    # framework's exp really computes in (measured: MLX's float64 exp is float32's)
    exp_bits = DTYPES[backends.exp_dtype(framework, dtype)].precision
    assert errors[:2].max() <= 2.0 * 2.0 ** (fmt.precision - exp_bits)
    if dtype == "float32":
        # the third, exp(-19.1) = 5.07e-9, is below float32's resolution at 31.4: every path returns 0,
        # an error of 5.0696e-9 / 2**-51 = 1.14e7 ulps (float32's ulp at 5.07e-9 is 2**-51)
        assert loss[2] == 0.0
        assert errors[2] == pytest.approx(float(hi[2]) / 2.0**-51, rel=1e-12)
        assert errors[2] == pytest.approx(1.1416e7, rel=1e-4)
    elif exp_bits == 53:
        # in float64 the small loss keeps about 7 digits at most: log(p) near p = 1 cancels
        assert abs(loss[2] - hi[2]) / hi[2] < 1e-6
        assert errors[2] > 1e6


def test_seed_article_numbers():
    # NumPy softmax-then-log in float64 gives the article's numbers exactly
    loss, _ = run_path("numpy", "naive", SEED_LOGITS, SEED_LABELS, "float64")
    assert loss.tolist() == [19.100000005069617, 36.60000000506962, 5.069619958913665e-09]
    # PyTorch's CrossEntropyLoss and LogSoftmax + NLLLoss in float32 print as 19.1000, 36.6000, 0.0000
    for path in ("fused", "log_softmax_nll"):
        loss, _ = run_path("torch", path, SEED_LOGITS, SEED_LABELS, "float32")
        assert [round(v, 4) for v in loss.tolist()] == [19.1, 36.6, 0.0]


def overflow_cases(t: float):
    """Logits around an overflow threshold t: max and lse below; max below and lse = max + ln 2 above;
    max above."""
    return [np.array([[t - 2.0, t - 4.0]]), np.array([[t - 0.2, t - 0.2]]), np.array([[t + 0.6, t - 3.0]])]


@pytest.mark.parametrize("framework", list(backends.FRAMEWORKS))
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_naive_overflows_where_theory_says(framework, dtype):
    """exp overflows past ln(largest finite) of the dtype the framework's exp computes in (measured),
    the unshifted sum once lse passes ln(largest finite) of the dtype it is carried in."""
    t_sum = DTYPES[dtype].exp_overflow_threshold
    t_exp = DTYPES[backends.exp_dtype(framework, dtype)].exp_overflow_threshold
    cases = overflow_cases(t_exp)
    if t_exp != t_sum:  # exp narrower than the sum (MLX float64): between the two, no theory is claimed
        cases = [cases[0], cases[2]]
    for logits in cases:
        held = round_to(logits, dtype).astype(np.float64)
        lse = np.logaddexp.reduce(held, axis=1)[0]
        expect_finite = held.max() < t_exp and lse < t_sum
        for label in (0, 1):
            loss, _ = run_path(framework, "naive", logits, np.array([label]), dtype)
            assert np.isfinite(loss).all() == expect_finite, (logits, label, loss)


@pytest.mark.parametrize("framework", list(backends.FRAMEWORKS))
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("path", ["log_softmax_nll", "fused"])
def test_stable_paths_stay_finite_past_the_thresholds(framework, dtype, path):
    fmt = DTYPES[dtype]
    t = fmt.exp_overflow_threshold
    logits = np.array([[t * 10, t * 9.5, -t], [-t * 20, 0.0, t * 30], [t * 50, t * 50, t * 50]])
    logits = np.minimum(logits, fmt.max_finite / 4)
    loss, _ = run_path(framework, path, logits, np.array([1, 0, 2]), dtype)
    assert np.isfinite(loss).all(), loss


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_jax_naive_breaks_early_through_a_flushed_reciprocal(dtype):
    # XLA divides by multiplying with 1/sum, and flushes subnormals: once the sum passes
    # 1/smallest_normal (lse > -ln(smallest normal): 87.34 in float32, 708.40 in float64) the
    # reciprocal becomes 0 and p = 0, although exp and the sum are still finite.
    fmt = DTYPES[dtype]
    t = fmt.exp_overflow_threshold
    logits = np.array([[t - 1.0, t - 3.0]])  # lse between -ln(smallest normal) and ln(largest finite)
    held = round_to(logits, dtype).astype(np.float64)
    assert -np.log(fmt.smallest_normal) < np.logaddexp.reduce(held, axis=1)[0] < t
    assert np.isinf(run_path("jax", "naive", logits, np.array([0]), dtype)[0]).all()
    for framework in ("numpy", "torch"):
        assert np.isfinite(run_path(framework, "naive", logits, np.array([0]), dtype)[0]).all()
