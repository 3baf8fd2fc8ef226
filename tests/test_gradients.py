"""Gradients of the summed loss: the exact reference against mpmath, every path against the seed
article's softmax - onehot, and NumPy's hand-written backward passes against torch and JAX autodiff."""

import functools

import mpmath
import numpy as np
import pytest
from conftest import SEED_LABELS, SEED_LOGITS, dd_value, exp_slack

from harness import backends, paths
from harness.dtypes import DTYPES, round_to
from harness.exact.gradient import exact_gradient
from harness.paths import build, numpy_paths

TOLERANCE = 2.0**-75  # exact_gradient claims > 20 bits beyond float64 for every entry ...
FLOOR = mpmath.mpf(2) ** -1094  # ... and 2**-20 units of 2**-1074 for subnormal ones


def mp_gradient(row, label: int) -> list:
    """softmax(x) - onehot(y) in mpmath at 256 bits; the label's entry as minus the others' sum,
    so that 1 - p[y] keeps its digits however close p[y] is to 1."""
    x = [mpmath.mpf(float(v)) for v in row]
    top = max(x)
    e = [mpmath.exp(v - top) for v in x]
    total = mpmath.fsum(e)
    g = [v / total for v in e]
    g[label] = -mpmath.fsum(v for j, v in enumerate(g) if j != label)
    return g


@functools.cache
def compiled_gradient(framework: str, path: str):
    return build.builtin(framework, path).gradient


def gradient(framework: str, path: str, logits64: np.ndarray, labels: np.ndarray, dtype: str):
    """Round to dtype, differentiate, and return (gradient as float64, the dtype name it came back in)."""
    return build.evaluate(framework, compiled_gradient(framework, path), round_to(logits64, dtype), labels)


def moderate_logits(scale: float):
    """16 rows of 300 classes (two chunks, three blocks at the default sizes); four confident rows."""
    rng = np.random.default_rng(99)
    z = rng.standard_normal((16, 300))
    labels = rng.integers(0, 300, 16)
    labels[:4] = np.argmax(z[:4], axis=1)
    return z * scale, labels


# --- the exact gradient -------------------------------------------------------------------------


def assert_matches_mpmath(logits, labels):
    hi, lo, exponent = exact_gradient(logits, labels)
    assert hi.shape == lo.shape == exponent.shape == logits.shape
    for i, label in enumerate(labels):
        for j, exact in enumerate(mp_gradient(logits[i], label)):
            error = abs(dd_value(hi[i, j], lo[i, j]) * mpmath.mpf(2) ** int(exponent[i, j]) - exact)
            assert error <= max(TOLERANCE * abs(exact), FLOOR), (i, j, hi[i, j], exact)


@pytest.mark.parametrize("scale", [1e-8, 1e-2, 1.0, 30.0, 1e3, 1e5])
@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_exact_gradient_random_logits(rng, scale, offset):
    logits = rng.standard_normal((8, 40)) * scale + offset
    labels = rng.integers(0, 40, 8)
    labels[:3] = np.argmax(logits[:3], axis=1)  # confident rows: p[y] - 1 is tiny
    assert_matches_mpmath(logits, labels)


def test_exact_gradient_seed_article_ties_and_extremes():
    assert_matches_mpmath(SEED_LOGITS, SEED_LABELS)
    ties = np.array([[5.0, 5.0, 1.0], [5.0, 5.0, 1.0], [0.5, 0.5, 0.5], [-3.0, 700.0, 0.0]])
    assert_matches_mpmath(ties, np.array([0, 1, 2, 1]))
    # 1 - p[y] = 2 e**-700 = 1.97e-304 and p[2] = e**-745.5 = 2.9e-324, held with an exponent
    extremes = np.array([[700.0, 0.0, 0.0], [0.0, -600.0, 3.0], [0.0, 30.0, -745.5]])
    assert_matches_mpmath(extremes, np.array([0, 0, 1]))


def test_exact_gradient_large_vocabulary(rng):
    logits = rng.standard_normal((2, 10_000)) * 4.0
    assert_matches_mpmath(logits, np.array([7, int(np.argmax(logits[1]))]))


def test_exact_gradient_rows_sum_to_zero(rng):
    logits = rng.standard_normal((6, 500)) * 10.0
    hi, lo, exponent = exact_gradient(logits, rng.integers(0, 500, 6))
    assert not exponent.any()  # scale 10 on 500 classes: every entry above 2**-960
    assert np.all(np.abs(hi.sum(axis=1) + lo.sum(axis=1)) < 1e-15)  # each entry to 2**-75: the sum too


def test_exact_gradient_in_row_blocks_gives_the_rows_own_values(rng):
    logits = rng.standard_normal((30, 5000)) * 30.0  # blocks of 13 rows, the last one ragged
    labels = rng.integers(0, 5000, 30)
    whole = exact_gradient(logits, labels)
    for i in (0, 13, 29):
        one = exact_gradient(logits[i : i + 1], labels[i : i + 1])
        assert all((part[i] == own[0]).all() for part, own in zip(whole, one, strict=True))


def test_exact_gradient_rejects_bad_logits():
    with pytest.raises(ValueError, match="finite"):
        exact_gradient(np.array([[0.0, np.inf]]), np.array([0]))
    with pytest.raises(ValueError, match="classes>=2"):
        exact_gradient(np.zeros((2, 1)), np.array([0, 0]))


# --- every path on the seed article ------------------------------------------------------------


@pytest.mark.parametrize("framework", list(backends.FRAMEWORKS))
@pytest.mark.parametrize("path", [p for p in paths.PATH_NAMES if p != "upcast_fused"])
def test_seed_article_gradients_in_float64(framework, path):
    if path not in paths.paths_of(framework):
        pytest.skip(f"{framework} has no {path}: {paths.ENTRIES_BY_NAME[path].unsupported[framework]}")
    if paths.PROBABILITY_CLIP in paths.ENTRIES_BY_NAME[path].mechanisms:
        pytest.skip(f"{path} clips probabilities by design: its gradient is not the cross-entropy's")
    exact = [mp_gradient(row, label) for row, label in zip(SEED_LOGITS, SEED_LABELS, strict=True)]
    g, returned = gradient(framework, path, SEED_LOGITS, SEED_LABELS, "float64")
    assert returned == "float64"
    for i in range(3):
        for j in range(3):
            # every entry within a few units of 2**-53 (the entries are in [-1, 1]; 5.2 measured); so
            # the confident row's label entry, -5.07e-9, is held to about 1e-8 of itself only
            assert abs(mpmath.mpf(float(g[i, j])) - exact[i][j]) <= 8 * 2.0**-53 * exp_slack(framework, "float64"), (
                i,
                j,
                g[i, j],
            )


@pytest.mark.parametrize("framework", list(backends.FRAMEWORKS))
def test_upcast_fused_gradient_in_float64_is_float32_accurate(framework):
    exact = [mp_gradient(row, label) for row, label in zip(SEED_LOGITS, SEED_LABELS, strict=True)]
    exact = np.array([[float(v) for v in row] for row in exact])
    g, returned = gradient(framework, "upcast_fused", SEED_LOGITS, SEED_LABELS, "float64")
    assert returned == "float64"
    assert np.abs(g - exact).max() <= 4 * DTYPES["float32"].unit_roundoff
    assert g[2, 2] == 0.0  # p[y] = 1 - 5.07e-9 rounds to 1 in float32 (spacing below 1: 6e-8)


# --- NumPy's backward passes against autodiff ---------------------------------------------------


def test_every_framework_has_a_gradient_for_every_path():
    for framework in backends.FRAMEWORKS:
        assert tuple(paths.implementations_module(framework).GRADIENTS) == paths.paths_of(framework)


@pytest.mark.parametrize("framework", list(backends.FRAMEWORKS))
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_gradients_come_back_in_the_input_dtype(framework, dtype):
    logits, labels = moderate_logits(1.0)
    for path in paths.paths_of(framework):
        g, returned = gradient(framework, path, logits, labels, dtype)
        assert returned == dtype, path
        assert g.shape == logits.shape
        assert np.isfinite(g).all(), path


def agreement_tolerance(path: str, logits: np.ndarray, dtype: str) -> float:
    """Absolute: a few units of the roundoff of the dtype computed in (gradient entries lie in [-1, 1]). `chunked`
    weighs each chunk by exp(lse_c - lse), whose argument carries an error of order u |lse|, so
    its tolerance grows with the logits."""
    u = DTYPES["float32" if path == "upcast_fused" else dtype].unit_roundoff  # upcast_fused: float32 inside
    return 16 * u + (4 * u * np.abs(logits).max() if path == "chunked" else 0.0)


@pytest.mark.parametrize("autodiff", ["torch", "jax"])
@pytest.mark.parametrize("path", paths.paths_of("numpy"))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_numpy_backward_agrees_with_autodiff(autodiff, path, dtype, scale):
    logits, labels = moderate_logits(scale)
    by_hand, _ = gradient("numpy", path, logits, labels, dtype)
    by_autodiff, _ = gradient(autodiff, path, logits, labels, dtype)
    both = np.isfinite(by_hand) & np.isfinite(by_autodiff)
    assert both.all()  # no path breaks on these logits
    assert np.abs(by_hand - by_autodiff).max() <= agreement_tolerance(path, round_to(logits, dtype), dtype)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_naive_backward_breaks_where_autodiff_does(dtype):
    # rows: lse below ln(largest finite); the sum overflows; exp(max) overflows; lse between
    # -ln(smallest normal) and ln(largest finite), where JAX's flushed reciprocal 1/sum is 0
    t = DTYPES[dtype].exp_overflow_threshold
    logits = np.array([[t - 2.0, t - 4.0], [t - 0.2, t - 0.2], [t + 0.6, t - 3.0], [t - 1.0, t - 3.0]])
    for label in (0, 1):
        labels = np.full(4, label)
        finite = {
            f: np.isfinite(gradient(f, "naive", logits, labels, dtype)[0]).all(axis=1) for f in backends.FRAMEWORKS
        }
        assert finite["numpy"].tolist() == [True, False, False, True]
        assert finite["torch"].tolist() == finite["numpy"].tolist()
        assert not (finite["jax"] & ~finite["numpy"]).any()  # JAX breaks no later


def test_naive_backward_loses_the_argmax_where_torch_does():
    # s = e**300, p[2] = e**-500: p[2] / s = 4e-348 underflows inside d(e / s)/ds, so the argmax's
    # entry, 1 - 1e-130, comes out 0 in NumPy's backward and in torch's; JAX forms e / s**2 instead
    logits, labels = np.array([[300.0, 0.0, -200.0]]), np.array([2])
    g = {f: gradient(f, "naive", logits, labels, "float64")[0] for f in backends.FRAMEWORKS}
    assert g["numpy"].tolist() == g["torch"].tolist() == [[0.0, 0.0, -1.0]]
    assert g["jax"][0, 0] == pytest.approx(1.0, abs=2.0**-51)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_log_backward_breaks_where_p_y_underflows(dtype):
    # p[1] = exp(-800) is 0 in both dtypes: the loss is inf and d(-log p)/dp = -1/0 poisons the row
    logits = np.array([[0.0, -800.0], [0.0, -3.0]])
    labels = np.array([1, 1])
    for framework in backends.FRAMEWORKS:
        g, _ = gradient(framework, "softmax_log", logits, labels, dtype)
        assert not np.isfinite(g[0]).all() and np.isfinite(g[1]).all(), framework
        stable, _ = gradient(framework, "log_softmax_nll", logits, labels, dtype)
        assert np.isfinite(stable).all() and stable[0, 1] == -1.0, framework


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_numpy_steps_are_scipys_own(dtype, rng):
    # the backward passes are written against these step-by-step forwards: they must be SciPy's bits
    logits = round_to(rng.standard_normal((12, 50)) * 8.0, dtype)
    logits[:3, :5] = logits[:3, :1]  # ties at the max in three rows
    logits[3, 7] = logits[3].max()
    with np.errstate(all="ignore"):
        assert np.array_equal(numpy_paths._softmax_parts(logits)[2], numpy_paths.scipy.special.softmax(logits, axis=1))
        lse = numpy_paths._scipy_logsumexp_parts(logits)["lse"]
        scipy_lse = numpy_paths.scipy.special.logsumexp(logits, axis=1)
    assert lse.dtype == scipy_lse.dtype == numpy_paths.scipy_logsumexp_dtype(logits.dtype)
    assert np.array_equal(lse, scipy_lse)
