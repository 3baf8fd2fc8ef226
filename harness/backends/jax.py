"""JAX (with optax): always jitted, on the CPU or a GPU; gradients by jax.grad.

float64 exists in JAX only with `jax_enable_x64`, which also changes how Python scalars and
NumPy float64 arrays promote. It is switched on only inside float64 cells (`dtype_scope`), so
float16, bfloat16 and float32 cells run in JAX's default mode, as users run them.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
import re
import sys

import numpy as np

# JAX logs, at INFO, each accelerator plug-in it fails to find ("Unable to initialize backend
# 'tpu'"); that belongs in the log file, not the console.
logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from harness.errors import ConfigError  # noqa: E402

# What the harness needs to know before importing this module (read by harness.backends.discover).
PACKAGES = ("jax", "jaxlib", "optax")  # import names that must be present (jaxlib: XLA, whose version matters)
INSTALL = "pip install jax==0.10.2 optax==0.2.8"
ORDER = 2  # place in tables and lists

DEVICES = ("cpu", "cuda")
COMPILES = True  # jitted: the first call of a shape compiles
COMPILE_NOTE = "always jitted (jax.jit)"
_XLA_THREAD_FLAGS = re.compile(r"--xla_cpu_multi_thread_eigen=\S+|intra_op_parallelism_threads=\S+")


def versions() -> dict[str, str]:
    import optax

    return {"jax": jax.__version__, "jaxlib": jax.lib.__version__, "optax": optax.__version__}


def device_names() -> list[str]:
    """The devices the framework sees, by name (environment.json's `devices`)."""
    return [str(d) for d in jax.devices()]


def check_device(device: str) -> None:
    if device == "cuda":
        try:
            jax.devices("gpu")
        except RuntimeError:
            raise ConfigError(
                "device=cuda but JAX finds no GPU backend; install jax[cuda12] (see README) or use device=cpu"
            ) from None


def _device(device: str):
    return jax.devices("gpu")[0] if device == "cuda" else jax.devices("cpu")[0]


def transfer(array: np.ndarray, device: str = "cpu"):
    """One array with the same bits on `device`, integers (class indices) as int32. Call inside
    `dtype_scope(dtype)`: without x64, float64 would become float32."""
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.int32)
    elif array.dtype == np.float64 and not jax.config.jax_enable_x64:
        raise RuntimeError("float64 arrays reach JAX outside dtype_scope('float64'): they would be cast to float32")
    return jax.device_put(array, _device(device))  # straight to the device: jnp.asarray would compile a copy per shape


def to_native(logits: np.ndarray, labels: np.ndarray, device: str = "cpu"):
    """Same bits on `device`, the labels as int32 (see transfer)."""
    return transfer(logits, device), transfer(np.asarray(labels, dtype=np.int64), device)


def to_numpy(result) -> tuple[np.ndarray, str]:
    result = np.asarray(jax.block_until_ready(result))
    return result.astype(np.float64), str(result.dtype)


def sync(result):
    return jax.block_until_ready(result)


def compile(fn):
    return jax.jit(fn)


def compile_gradient(fn):
    return jax.jit(fn)


def clear_compile_cache() -> None:
    jax.clear_caches()


def release_memory() -> None:
    """Hand back memory the framework keeps after its cells (peak memory of long sweeps)."""
    return None  # freed arrays go back to the system at once


def autodiff_gradient(path):
    """(x, y) -> d(sum of path(x, y))/dx by jax.grad, in x's dtype (jit it with `compile_gradient`)."""

    @functools.wraps(path)
    def gradient(x, y, **sizes):
        return jax.grad(lambda logits: path(logits, y, **sizes).sum())(x)

    return gradient


def dtype_scope(dtype: str):
    """x64 on inside float64 cells only; the default mode elsewhere. (JAX before 0.8 has the context
    manager as jax.experimental.enable_x64 only: a version matrix runs those releases too.)"""
    if dtype != "float64":
        return contextlib.nullcontext()
    enable_x64 = getattr(jax, "enable_x64", None)  # a config State: no truth value
    if enable_x64 is None:
        enable_x64 = importlib.import_module("jax.experimental").enable_x64
    return enable_x64(True)


def xla_flags(threads: int, existing: str = "") -> str:
    """XLA_FLAGS with the CPU thread flags for `threads`, other flags kept."""
    kept = " ".join(_XLA_THREAD_FLAGS.sub("", existing).split())
    multi = "true" if threads > 1 else "false"
    return f"{kept} --xla_cpu_multi_thread_eigen={multi} intra_op_parallelism_threads={threads}".strip()


def backend_started() -> bool:
    """Whether JAX has made its backend, after which XLA_FLAGS is no longer read."""
    from jax._src import xla_bridge

    return xla_bridge.backends_are_initialized()


def request_threads(n: int) -> str:
    """XLA has no runtime thread setting: XLA_FLAGS is read once, when JAX makes its CPU backend.
    Set it now if that has not happened; returns the flags in force, or why they are not."""
    wanted = xla_flags(n, os.environ.get("XLA_FLAGS", ""))
    if os.environ.get("XLA_FLAGS", "") == wanted:
        return wanted
    if backend_started():
        return f"not applied: JAX's backend had started (XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r})"
    os.environ["XLA_FLAGS"] = wanted
    return wanted


def threads_in_force() -> int:
    """XLA's CPU threads by the XLA_FLAGS it started with (request_threads changes them only before
    then): 1 without multi-threaded Eigen, else intra_op_parallelism_threads, else one per core."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "--xla_cpu_multi_thread_eigen=false" in flags:
        return 1
    found = re.search(r"intra_op_parallelism_threads=(\d+)", flags)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return int(found.group(1)) if found else cores


@contextlib.contextmanager
def threads(n: int):
    """Yields (threads in force, note): nothing to scope at run time; `request_threads` (made before
    JAX's first computation) set them, or the note says why not."""
    flags = request_threads(n)
    yield threads_in_force(), flags if flags.startswith("not applied") else ""


@functools.cache
def flushes_subnormals(dtype: str, device: str = "cpu") -> bool:
    """Whether a jitted computation's subnormal result comes back as zero (smallest_normal / 4, by a
    multiply and through exp), measured on the device."""
    from harness.dtypes import DTYPES

    fmt = DTYPES[dtype]
    with dtype_scope(dtype):
        x = jax.device_put(jnp.asarray(np.array([fmt.smallest_normal], dtype=fmt.numpy_type)), _device(device))
        quarter = np.asarray(jax.jit(lambda v: v * v.dtype.type(0.25))(x))[0]
        log_quarter = jnp.asarray(np.array([np.log(fmt.smallest_normal / 4)], dtype=fmt.numpy_type))
        via_exp = np.asarray(jax.jit(jnp.exp)(jax.device_put(log_quarter, _device(device))))[0]
    return bool(quarter == 0 or via_exp == 0)


def jax_loaded() -> bool:
    return "jax" in sys.modules


def device_peak_bytes(call) -> int | None:
    """XLA's GPU allocator keeps a peak that cannot be reset between calls, so one call's own peak
    cannot be read there: None (the timings row leaves peak_bytes empty on a GPU)."""
    return None


exp = jax.jit(jnp.exp)  # the framework's own elementwise exp, jitted as the paths are
