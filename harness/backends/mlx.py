"""MLX (the Linux `mlx-cpu` build): lazy graphs on the CPU, not compiled; gradients by mx.grad.

MLX is lazy: an op records a graph and nothing runs until `mx.eval`; `sync` and `to_numpy` force it.
Not mx.compile: compiled and plain graphs gave the same bits on every path, gradient and dtype,
and no measurable gain on a (256, 1000) float32 loss on the CPU (about 11 ms either way), while
each new compiled graph costs 2-5 s of a C++ compiler run at first call.
"""

from __future__ import annotations

import contextlib
import functools

import ml_dtypes
import mlx.core as mx
import numpy as np

from harness.errors import ConfigError

# What the harness needs to know before importing this module (read by harness.backends.discover).
PACKAGES = ("mlx",)  # import names that must be present
INSTALL = 'pip install "mlx[cpu]==0.32.4"'
ORDER = 3  # place in tables and lists

DEVICES = ("cpu",)
COMPILES = False  # lazy graphs, evaluated by mx.eval; mx.compile gave the same bits and no gain (see above)
OPS_ON_ONE_THREAD = True  # its CPU ops run on one thread whatever is asked (threads, below)
COMPILE_NOTE = "lazy, not compiled (mx.compile: same bits, no gain on the CPU, seconds of C++ compiler per graph)"
_NATIVE = {"float16": mx.float16, "bfloat16": mx.bfloat16, "float32": mx.float32, "float64": mx.float64}


def autodiff_gradient(path):
    """(x, y) -> d(sum of path(x, y))/dx by mx.grad, in x's dtype."""

    @functools.wraps(path)
    def gradient(x, y, **sizes):
        return mx.grad(lambda logits: path(logits, y, **sizes).sum())(x)

    return gradient


def versions() -> dict[str, str]:
    return {"mlx": mx.__version__}


def device_names() -> list[str]:
    """The devices the framework sees, by name (environment.json's `devices`)."""
    return [str(mx.default_device())]


def check_device(device: str) -> None:
    if device != "cpu":
        raise ConfigError(f"device={device} but MLX runs on the CPU only here (the mlx-cpu build); use device=cpu")


def transfer(array: np.ndarray, device: str = "cpu"):
    """One array with the same bits; integers (class indices) as int32. bfloat16 travels as its
    16-bit pattern; a float's dtype is always given, because mx.array turns float64 NumPy arrays
    into float32 by default."""
    check_device(device)
    if np.issubdtype(array.dtype, np.integer):
        return mx.array(np.asarray(array, dtype=np.int32))
    if array.dtype.name == "bfloat16":
        return mx.array(np.ascontiguousarray(array).view(np.uint16)).view(mx.bfloat16)
    return mx.array(np.ascontiguousarray(array), dtype=_NATIVE[array.dtype.name])


def to_native(logits: np.ndarray, labels: np.ndarray, device: str = "cpu"):
    """Same bits as the NumPy arrays, the labels as int32 (see transfer)."""
    return transfer(logits, device), transfer(np.asarray(labels, dtype=np.int64), device)


def to_numpy(result) -> tuple[np.ndarray, str]:
    """(values as float64, the dtype's name); bfloat16 comes back through its bits (NumPy cannot read it)."""
    mx.eval(result)
    name = str(result.dtype).removeprefix("mlx.core.")
    if name == "bfloat16":
        values = np.array(result.view(mx.uint16)).view(ml_dtypes.bfloat16)
    else:
        values = np.array(result)
    with np.errstate(invalid="ignore"):  # ml_dtypes warns on casting a bfloat16 NaN; it stays NaN
        return values.astype(np.float64), name


def sync(result):
    """Run the recorded graph (MLX is lazy); the result is ready when this returns."""
    mx.eval(result)
    return result


def compile(fn):
    return fn


def compile_gradient(fn):
    return fn


def clear_compile_cache() -> None:
    return None


def release_memory() -> None:
    """Hand back memory the framework keeps after its cells (peak memory of long sweeps)."""
    mx.clear_cache()  # MLX keeps freed buffers for reuse: gigabytes after a 10**7-row input


@functools.cache
def flushes_subnormals(dtype: str, device: str = "cpu") -> bool:
    """Whether a subnormal result comes back as zero, measured: smallest_normal * 0.25 by a multiply
    and exp(ln(smallest_normal / 4)). MLX's multiply keeps subnormals, but its float32-polynomial exp
    returns 0 below about -87.7, so float32, bfloat16 and float64 exp results flush; float16's
    smallest normal, 2**-14, is far above that."""
    from harness.dtypes import DTYPES

    check_device(device)
    fmt = DTYPES[dtype]
    normal = np.array([fmt.smallest_normal], dtype=fmt.numpy_type)
    log_quarter = np.array([np.log(fmt.smallest_normal / 4)], dtype=fmt.numpy_type)
    quarter, _ = to_numpy(transfer(normal) * 0.25)
    via_exp, _ = to_numpy(mx.exp(transfer(log_quarter)))
    return bool(quarter[0] == 0 or via_exp[0] == 0)


def dtype_scope(dtype: str):
    return contextlib.nullcontext()


@contextlib.contextmanager
def threads(n: int):
    """Yields (1, note unless n is 1): MLX 0.32.4 has no thread setting, and its CPU backend runs one
    op at a time on its stream's thread (mlx/scheduler.h's StreamThread), matrix products through the
    reference BLAS it bundles (single-threaded); measured: CPU time never above wall time on a
    4096 x 32000 float32 exp, logsumexp and matrix product."""
    yield 1, "" if n == 1 else f"MLX has no thread setting: its CPU ops run on one thread, not {n}"


def device_peak_bytes(call) -> int | None:
    """CPU only here: the timing stage measures the resident set instead."""
    return None


def exp(x):
    """The framework's own elementwise exp (for measured facts such as `harness.backends.exp_dtype`)."""
    return mx.exp(x)
