"""The paths beyond the textbook four: against the exact reference, and what sets each one apart."""

import functools

import numpy as np
import pytest
from conftest import SEED_LABELS, SEED_LOGITS, exp_slack

from harness import backends, paths
from harness.dtypes import DTYPES, round_to
from harness.exact.reference import exact_cross_entropy
from harness.paths import build
from harness.sweep import metrics

ORIGINAL_PATHS = ("naive", "softmax_log", "log_softmax_nll", "fused")
NEW_PATHS = ("upcast_fused", "log1p_lse", "online", "chunked")


@functools.cache
def compiled(framework: str, path: str):
    """Compiled once per test session with the default sizes (JAX then traces once per shape)."""
    return build.builtin(framework, path).loss


def run(framework: str, fn, logits64: np.ndarray, labels: np.ndarray, dtype: str):
    """Round to dtype, run fn, and return (loss as float64, the dtype name it came back in)."""
    return build.evaluate(framework, fn, round_to(logits64, dtype), labels)


def exact(logits64: np.ndarray, labels: np.ndarray, dtype: str):
    return exact_cross_entropy(round_to(logits64, dtype).astype(np.float64), labels)[:2]  # (hi, lo): exponent 0 here


def moderate_logits():
    """24 rows of 1000 classes (several chunks and blocks at the default sizes), random labels."""
    rng = np.random.default_rng(2024)
    return rng.standard_normal((24, 1000)) * 3.0, rng.integers(0, 1000, 24)


def test_the_original_four_come_first_then_the_new_ones():
    assert paths.PATH_NAMES[:8] == ORIGINAL_PATHS + NEW_PATHS
    for framework in backends.FRAMEWORKS:
        assert tuple(paths.implementations_module(framework).PATHS) == paths.paths_of(framework)


def test_every_path_has_a_formula_and_an_accumulation_note_per_framework():
    table = paths.path_table(backends.FRAMEWORKS)
    for entry in paths.ENTRIES:
        assert entry.formula and entry.source, entry.name
        assert set(entry.accumulation_note) | set(entry.unsupported) == set(backends.FRAMEWORKS), entry.name
        assert f"| `{entry.name}` |" in table


@pytest.mark.parametrize(
    ("framework", "path", "dtype", "accumulates_in"),
    [
        ("numpy", "naive", "float16", "float32"),  # NumPy's pairwise sum of half floats is in float32
        ("numpy", "naive", "bfloat16", "bfloat16"),  # ml_dtypes' sum is one bfloat16 addition at a time
        ("numpy", "fused", "bfloat16", "float64"),  # SciPy promotes bfloat16 to float64
        ("torch", "log_softmax_nll", "bfloat16", "float32"),
        ("jax", "online", "float16", "float32"),
        ("jax", "upcast_fused", "float64", "float32"),
        ("torch", "chunked", "float64", "float64"),
    ],
)
def test_accumulation_dtype(framework, path, dtype, accumulates_in):
    assert paths.accumulation_dtype(framework, path, dtype) == accumulates_in


def test_numpy_sums_of_half_floats_accumulate_as_the_registry_says():
    # 4096 ones: a float16 accumulator stalls at 2048 (2049 is not a float16), a bfloat16 one at 256
    ones = np.ones((1, 4096))
    assert np.exp(round_to(0 * ones, "float16")).sum(axis=1)[0] == 4096
    assert np.exp(round_to(0 * ones, "bfloat16")).sum(axis=1)[0] == 256


@pytest.mark.parametrize("framework", list(backends.FRAMEWORKS))
@pytest.mark.parametrize("path", NEW_PATHS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_new_paths_match_the_exact_reference(framework, path, dtype):
    logits, labels = moderate_logits()
    hi, lo = exact(logits, labels, dtype)
    loss, returned = run(framework, compiled(framework, path), logits, labels, dtype)
    assert returned == dtype
    if path == "upcast_fused" and dtype == "float64":
        # float32 arithmetic by definition: a float32-sized relative error, far above float64's ulp
        relative = metrics.rel_error(loss, hi, lo)
        assert relative.max() <= 4 * DTYPES["float32"].unit_roundoff
        assert metrics.ulp_error(loss, hi, lo, DTYPES[dtype]).max() > 1e6
    else:
        assert metrics.ulp_error(loss, hi, lo, DTYPES[dtype]).max() <= 4.0 * exp_slack(framework, dtype)


@pytest.mark.parametrize("framework", list(backends.FRAMEWORKS))
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_upcast_fused_in_half_precision_is_one_rounding_of_float32(framework, dtype):
    logits, labels = moderate_logits()
    hi, lo = exact(logits, labels, dtype)
    loss, returned = run(framework, compiled(framework, "upcast_fused"), logits, labels, dtype)
    assert returned == dtype
    # rounding a float32-accurate value costs at most half an ulp, plus float32's own error
    assert metrics.ulp_error(loss, hi, lo, DTYPES[dtype]).max() <= 0.6


@pytest.mark.parametrize("framework", list(backends.FRAMEWORKS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_log1p_lse_keeps_the_seed_articles_tiny_loss(framework, dtype):
    # the third loss, log1p(exp(-19.1) + exp(-36.6)) = 5.07e-9, is what log1p_lse computes directly;
    # log_softmax_nll forms it as lse - 31.4 and keeps only the digits above ulp(31.4)
    fmt = DTYPES[dtype]
    hi, lo = exact(SEED_LOGITS, SEED_LABELS, dtype)
    loss, _ = run(framework, compiled(framework, "log1p_lse"), SEED_LOGITS, SEED_LABELS, dtype)
    errors = metrics.ulp_error(loss, hi, lo, fmt)
    assert errors[:2].max() <= 2.0 * exp_slack(framework, dtype)
    # the one rounding of 12.3 - 31.4 = -19.1 (at most 19.1 u relative) passes through exp into the
    # loss: at most 19.1 ulps, plus a couple for exp and log1p (float32 shows 11.1)
    assert errors[2] <= (19.1 + 2.0) * exp_slack(framework, dtype)
    assert loss[2] == pytest.approx(5.0696e-9, rel=1e-4)
    nll, _ = run(framework, compiled(framework, "log_softmax_nll"), SEED_LOGITS, SEED_LABELS, dtype)
    if dtype == "float32":
        assert nll[2] == 0.0
    else:
        assert metrics.ulp_error(nll, hi, lo, fmt)[2] > 1e6


@pytest.mark.parametrize("framework", list(backends.FRAMEWORKS))
def test_log1p_lse_is_accurate_on_confident_rows(framework):
    # label = argmax: the loss is log1p(s) itself, with no cancellation against the max
    logits, _ = moderate_logits()
    labels = np.argmax(logits, axis=1)
    for dtype in ("float32", "float64"):
        hi, lo = exact(logits, labels, dtype)
        loss, _ = run(framework, compiled(framework, "log1p_lse"), logits, labels, dtype)
        assert metrics.ulp_error(loss, hi, lo, DTYPES[dtype]).max() <= 2.0 * exp_slack(framework, dtype)


@pytest.mark.parametrize("framework", list(backends.FRAMEWORKS))
@pytest.mark.parametrize("path", ["online", "chunked"])
@pytest.mark.parametrize("size", [None, 300, 1000, 4096])  # default, ragged last piece, one piece, larger than C
def test_online_and_chunked_agree_with_fused_in_float64(framework, path, size):
    logits, labels = moderate_logits()
    size_name = "block_size" if path == "online" else "chunk_size"
    fn = build.builtin(framework, path, **{size_name: size}).loss
    hi, lo = exact(logits, labels, "float64")
    loss, _ = run(framework, fn, logits, labels, "float64")
    fused, _ = run(framework, compiled(framework, "fused"), logits, labels, "float64")
    ulp = metrics.ulp(hi, lo, DTYPES["float64"])
    assert (np.abs(loss - fused) / ulp).max() <= 4.0 * exp_slack(framework, "float64")


@pytest.mark.parametrize("framework", list(backends.FRAMEWORKS))
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("path", ["log1p_lse", "online", "chunked"])
def test_shifted_paths_stay_finite_past_the_thresholds(framework, dtype, path):
    fmt = DTYPES[dtype]
    t = fmt.exp_overflow_threshold
    logits = np.array([[t * 10, t * 9.5, -t], [-t * 20, 0.0, t * 30], [t * 50, t * 50, t * 50]])
    logits = np.minimum(logits, fmt.max_finite / 4)
    fn = build.builtin(framework, path, chunk_size=2, block_size=2).loss  # two pieces of three classes
    loss, _ = run(framework, fn, logits, np.array([1, 0, 2]), dtype)
    assert np.isfinite(loss).all(), loss


@pytest.mark.parametrize("framework", list(backends.FRAMEWORKS))
def test_sizes_are_passed_not_set(framework):
    """A size bound when a path is built is the one it runs with; building another leaves it alone."""
    logits, labels = moderate_logits()
    chunked_by_100 = build.builtin(framework, "chunked", chunk_size=100).loss
    online_by_300 = build.builtin(framework, "online", block_size=300).loss
    chunked_whole = build.builtin(framework, "chunked", chunk_size=1000).loss

    def loss(fn):
        return run(framework, fn, logits, labels, "float32")[0]

    def given(path, **size):  # compiled with the size given explicitly
        return backends.load(framework).compile(
            functools.partial(paths.implementations_module(framework).PATHS[path], **size)
        )

    assert np.array_equal(loss(chunked_by_100), loss(given("chunked", chunk_size=100)))
    assert np.array_equal(loss(online_by_300), loss(given("online", block_size=300)))
    assert np.array_equal(loss(chunked_whole), loss(given("chunked", chunk_size=1000)))
    assert not np.array_equal(loss(chunked_by_100), loss(chunked_whole))  # the size does change the rounding
    default = build.builtin(framework, "chunked").loss
    assert np.array_equal(loss(default), loss(given("chunked", chunk_size=paths.DEFAULT_CHUNK_SIZE)))


def test_a_size_given_by_partial_is_kept():
    online = paths.implementations_module("numpy").PATHS["online"]
    given = functools.partial(online, block_size=3)
    assert paths.bind_sizes(given, block_size=64).keywords == {"block_size": 3}
    assert paths.bind_sizes(online, block_size=64).keywords == {"block_size": 64}
    assert paths.bind_sizes(online) is online  # nothing given: the path's own default
