"""TensorFlow's paths on the seed article's logits, against the exact loss and gradient; Keras's
probability route; TF's flush-to-zero."""

import importlib.util

import numpy as np
import pytest
from conftest import SEED_LABELS, SEED_LOGITS  # exact losses 19.1, 36.6 and 5.0697e-09

from harness.dtypes import DTYPES, round_to
from harness.exact.gradient import exact_gradient
from harness.exact.reference import exact_cross_entropy
from harness.paths import paths_of

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None,
    reason="TensorFlow is not installed: pip install tensorflow-cpu==2.21.0",
)


@pytest.fixture(scope="module", autouse=True)
def tensorflow_modules():
    """TensorFlow, Keras and the harness's TensorFlow modules, imported when this file's first test runs:
    at collection their import (seconds) would be paid by every worker process, which all collect."""
    global keras, tf, TB, T
    import keras
    import tensorflow as tf

    from harness.backends import tensorflow as TB
    from harness.paths import tensorflow_paths as T


ALL_PATHS = paths_of("tensorflow")
PATH_NAMES = tuple(p for p in ALL_PATHS if p != "keras_probs")  # the paths every framework has


def run(fn, logits64, labels, dtype):
    rounded = round_to(logits64, dtype)
    return TB.to_numpy(fn(*TB.to_native(rounded, labels)))


def test_every_path_and_keras_probs():
    assert tuple(T.PATHS) == ALL_PATHS
    assert tuple(T.GRADIENTS) == ALL_PATHS


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_every_path_runs_every_dtype_on_the_cpu_in_that_dtype(dtype):
    for path in ALL_PATHS:
        _, returned = run(T.PATHS[path], SEED_LOGITS, SEED_LABELS, dtype)
        _, gradient_dtype = run(T.GRADIENTS[path], SEED_LOGITS, SEED_LABELS, dtype)
        assert returned == gradient_dtype == dtype, path


@pytest.mark.parametrize("path", PATH_NAMES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_seed_article(path, dtype):
    precision = DTYPES[dtype].precision
    held = round_to(SEED_LOGITS, dtype).astype(np.float64)
    exact = exact_cross_entropy(held, SEED_LABELS)[0]
    loss, _ = run(TB.compile(T.PATHS[path]), SEED_LOGITS, SEED_LABELS, dtype)
    bits = 24 if path == "upcast_fused" else precision
    # 19.1 and 36.6 within an ulp: 2**(1 - precision) relative
    assert np.abs(loss[:2] - exact[:2]).max() <= 2.0 ** (1 - bits) * exact[:2].max()
    if dtype == "float64" and path != "upcast_fused":
        # float64 keeps the small loss 5.07e-9 to about 7 digits at most (log(p) near p = 1 cancels)
        assert loss[2] == pytest.approx(exact[2], rel=2e-7)
    elif path == "log1p_lse":
        assert loss[2] == pytest.approx(exact[2], rel=2.0**-19)
    else:  # 5.07e-9 is below float32's half ulp at 31.4 (2**-20)
        assert loss[2] == 0.0


@pytest.mark.parametrize("path", PATH_NAMES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_seed_article_gradient(path, dtype):
    held = round_to(SEED_LOGITS, dtype).astype(np.float64)
    exact = exact_gradient(held, SEED_LABELS)[0]
    gradient, _ = run(TB.compile_gradient(T.GRADIENTS[path]), SEED_LOGITS, SEED_LABELS, dtype)
    bits = 24 if path == "upcast_fused" else DTYPES[dtype].precision
    assert np.abs(gradient - exact).max() <= 2.0 ** (1 - bits)  # entries in [-1, 1], a few roundings


def test_keras_probs_clips_at_epsilon():
    # probabilities clipped to [1e-7, 1 - 1e-7]: labels 0 and 1 (p = 5.07e-9, 1.27e-16) cost
    # -log(1e-7) = 16.118 instead of 19.1 and 36.6; label 2 costs -log(1 - 2**-23) + log(1 + 2**-23)
    # = 2 * 2**-23 in float32 (1 - 1e-7 rounds to 1 - 2**-23) instead of 5.07e-9
    loss, _ = run(TB.compile(T.PATHS["keras_probs"]), SEED_LOGITS, SEED_LABELS, "float32")
    assert loss[:2] == pytest.approx([-np.log(1e-7)] * 2, rel=1e-6)
    assert loss[2] == pytest.approx(2 * 2.0**-23, rel=1e-6)
    eager, _ = run(T.PATHS["keras_probs"], SEED_LOGITS, SEED_LABELS, "float32")
    assert np.array_equal(eager, loss)  # the same route under tf.function as eager


def test_a_softmax_op_feeding_keras_directly_inside_tf_function_loses_the_clip():
    def direct(x, y):
        return keras.losses.sparse_categorical_crossentropy(y, tf.nn.softmax(x, axis=1))

    traced, _ = run(tf.function(direct), SEED_LOGITS, SEED_LABELS, "float32")
    assert traced[1] == pytest.approx(36.6, rel=1e-6)  # Keras used the logits: no clip at 16.118


def test_keras_from_logits_is_the_fused_kernel():
    x = np.random.default_rng(0).normal(scale=8.0, size=(64, 100)).astype(np.float32)
    y = np.arange(64) % 100
    xn, yn = TB.to_native(x, y)
    keras_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)(yn, xn)
    assert np.array_equal(keras_loss.numpy(), T.PATHS["fused"](xn, yn).numpy())


def test_float16_softmax_log_gives_inf_on_the_first_two_labels():
    # 5.07e-9 and 1.27e-16 are below half of float16's smallest subnormal (2**-25): a correctly
    # rounded softmax is 0 there, whoever computes it
    loss, _ = run(T.PATHS["softmax_log"], SEED_LOGITS, SEED_LABELS, "float16")
    assert loss.tolist() == [np.inf, np.inf, 0.0]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_every_sum_accumulates_half_floats_in_float32(dtype):
    # 4096 equal logits: loss = log(4096) = 8.318. A float16 sum of ones would stall at 2048
    # (log = 7.62), a bfloat16 one at 256 (5.55); TF's kernels and reductions sum in float32
    for path in ALL_PATHS:
        loss, _ = run(T.PATHS[path], np.zeros((1, 4096)), np.array([0]), dtype)
        expected = float(round_to(np.array([np.log(4096)]), dtype)[0])
        tolerance = 0.1 if path == "chunked" and dtype == "bfloat16" else 0.0  # 16 merges in bfloat16
        assert abs(loss[0] - expected) <= tolerance, path


def test_flushes_subnormals_except_float16():
    assert {d: TB.flushes_subnormals(d) for d in DTYPES} == {
        "float16": False,  # computed in float32, where float16's subnormals are normal
        "bfloat16": True,
        "float32": True,
        "float64": True,
    }
    # flush-to-zero on results and inputs: 2**-126 / 4 and 2**-149 * 1 both come back 0
    quarter, _ = TB.to_numpy(tf.constant([2.0**-126], tf.float32) * 0.25)
    tiny, _ = TB.to_numpy(tf.constant([2.0**-149], tf.float32) * 1.0)
    assert quarter[0] == tiny[0] == 0.0
    assert np.float32(2.0**-149) * np.float32(1.0) > 0  # NumPy in the same thread is not flushed
