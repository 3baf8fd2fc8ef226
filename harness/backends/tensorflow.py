"""TensorFlow (tensorflow-cpu with Keras 3) on the CPU, under tf.function; gradients by tf.GradientTape.

Compiled with tf.function (as Keras's fit and custom training loops run), without XLA: every
path gave the same bits as eager, op by op, and a (256, 1000) float32 loss ran 2-5x faster on
paths made of many small ops. TF's CPU kernels run with flush-to-zero: float32, float64 and
bfloat16 subnormal results and inputs become zero; float16's survive (computed in float32).
"""

from __future__ import annotations

import contextlib
import functools
import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up notices, not the user's warnings

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from harness.errors import ConfigError  # noqa: E402

# What the harness needs to know before importing this module (read by harness.backends.discover).
PACKAGES = ("tensorflow", "keras")  # import names that must be present
INSTALL = "pip install tensorflow-cpu==2.21.0"  # the `tensorflow` extra; messages fit it to the install
ORDER = 4  # place in tables and lists

DEVICES = ("cpu",)
COMPILES = True  # tf.function traces on the first call of each shape and dtype
COMPILE_NOTE = "tf.function without XLA (same bits as eager; 2-5x faster on log1p_lse, online, chunked)"


def reduce(values, reduction: str):
    """The mean or sum of a tensor (TensorFlow's tensors have no mean method)."""
    return tf.reduce_mean(values) if reduction == "mean" else tf.reduce_sum(values)


def autodiff_gradient(path):
    """(x, y) -> d(sum of path(x, y))/dx by tf.GradientTape, in x's dtype."""

    @functools.wraps(path)
    def gradient(x, y, **sizes):
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(path(x, y, **sizes))
        return tape.gradient(total, x)

    return gradient


def versions() -> dict[str, str]:
    return {"tensorflow": tf.__version__, "keras": keras.__version__}


def device_names() -> list[str]:
    """The devices the framework sees, by name (environment.json's `devices`)."""
    return [d.name for d in tf.config.list_logical_devices()]


def check_device(device: str) -> None:
    if device != "cpu":
        raise ConfigError(f"device={device} but TensorFlow runs on the CPU only here (tensorflow-cpu); use device=cpu")


def transfer(array: np.ndarray, device: str = "cpu"):
    """One array with the same bits (TF's bfloat16 is ml_dtypes.bfloat16), on the CPU; integers
    (class indices) as int32."""
    check_device(device)
    if np.issubdtype(array.dtype, np.integer):
        array = np.asarray(array, dtype=np.int32)
    with tf.device("/CPU:0"):
        return tf.constant(np.ascontiguousarray(array))


def to_native(logits: np.ndarray, labels: np.ndarray, device: str = "cpu"):
    """Same bits as the NumPy arrays, the labels as int32 (see transfer)."""
    return transfer(logits, device), transfer(np.asarray(labels, dtype=np.int64), device)


def to_numpy(result) -> tuple[np.ndarray, str]:
    with np.errstate(invalid="ignore"):  # ml_dtypes warns on casting a bfloat16 NaN; it stays NaN
        return result.numpy().astype(np.float64), result.dtype.name


def sync(result):
    """Eager CPU ops have finished when they return."""
    return result


def compile(fn):
    """tf.function, no XLA, no autograph (the paths are straight-line Python; loops unroll when
    traced); traced once per input shape and dtype. The plain wrapper hides functools.wraps, whose
    signature tf.function would otherwise take from the path instead of the gradient."""

    def run(x, y):
        return fn(x, y)

    return tf.function(run, autograph=False)


compile_gradient = compile


def clear_compile_cache() -> None:
    return None  # a traced graph lives in its tf.function; a new `compile` traces afresh


def release_memory() -> None:
    """Hand back memory the framework keeps after its cells (peak memory of long sweeps)."""
    return None


@functools.cache
def flushes_subnormals(dtype: str, device: str = "cpu") -> bool:
    """Whether a subnormal result comes back as zero, measured: smallest_normal * 0.25 by a multiply
    and exp(ln(smallest_normal / 4)). TF's CPU kernels run with flush-to-zero: float32, float64 and
    bfloat16 flush; float16 does not (its ops compute in float32, where its subnormals are normal)."""
    from harness.dtypes import DTYPES

    fmt = DTYPES[dtype]
    normal = transfer(np.array([fmt.smallest_normal], dtype=fmt.numpy_type), device)
    log_quarter = transfer(np.array([np.log(fmt.smallest_normal / 4)], dtype=fmt.numpy_type), device)
    quarter = to_numpy(normal * tf.constant(0.25, normal.dtype))[0]
    via_exp = to_numpy(tf.exp(log_quarter))[0]
    return bool(quarter[0] == 0 or via_exp[0] == 0)


def dtype_scope(dtype: str):
    return contextlib.nullcontext()


def threads_in_force() -> int:
    """The intra-op pool's size: as set, else TensorFlow's default (0), one thread per core this process may use."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return tf.config.threading.get_intra_op_parallelism_threads() or cores


def request_threads(n: int) -> str:
    """TensorFlow fixes its intra-op and inter-op pools when its runtime starts (at the first op;
    setting them later raises RuntimeError), so set both to n before then: "" when n is in force,
    else why not. Thread counts 1 and 2 gave the same bits on TF's softmax, log-softmax,
    logsumexp and cross-entropy ops (256 x 32000, every dtype)."""
    if threads_in_force() == n:
        return ""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    except RuntimeError:
        return f"not applied: TensorFlow's runtime had started with {threads_in_force()} intra-op thread(s)"
    return ""


@contextlib.contextmanager
def threads(n: int):
    """Yields (threads in force, note): n where `request_threads` came before TF's first op, else
    the count the runtime started with and why. Pools cannot change after that: nothing to restore."""
    note = request_threads(n)
    yield threads_in_force(), note


def device_peak_bytes(call) -> int | None:
    """CPU only here: the timing stage measures the resident set instead."""
    return None


def exp(x):
    """The framework's own elementwise exp (for measured facts such as `harness.backends.exp_dtype`)."""
    return tf.exp(x)
