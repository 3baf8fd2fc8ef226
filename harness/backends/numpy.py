"""NumPy (with SciPy and ml_dtypes): CPU only, eager, no autodiff (backward passes are written by hand
in `harness.paths.numpy_paths`)."""

from __future__ import annotations

import contextlib
import functools

import numpy as np

from harness.errors import ConfigError

# What the harness needs to know before importing this module (read by harness.backends.discover).
PACKAGES = ("numpy", "scipy", "ml_dtypes")  # import names that must be present
INSTALL = "pip install numpy scipy ml_dtypes"
ORDER = 0  # place in tables and lists

DEVICES = ("cpu",)
COMPILES = False  # no compiled mode: every call runs eagerly
COMPILE_NOTE = "NumPy has no compiled mode"


def versions() -> dict[str, str]:
    import ml_dtypes
    import scipy

    return {"numpy": np.__version__, "scipy": scipy.__version__, "ml_dtypes": ml_dtypes.__version__}


def device_names() -> list[str]:
    """The devices the framework sees, by name (environment.json's `devices`)."""
    return ["cpu"]  # NumPy runs on the CPU only


def check_device(device: str) -> None:
    if device != "cpu":
        raise ConfigError(f"NumPy runs on the CPU only, not {device!r}")


def transfer(array: np.ndarray, device: str = "cpu"):
    """One array as the paths take it: floats as they are, integers (class indices) as int64."""
    return np.asarray(array, dtype=np.int64) if np.issubdtype(np.asarray(array).dtype, np.integer) else array


def to_native(logits: np.ndarray, labels: np.ndarray, device: str = "cpu"):
    return transfer(logits, device), transfer(np.asarray(labels, dtype=np.int64), device)


def to_numpy(result) -> tuple[np.ndarray, str]:
    result = np.asarray(result)
    return result.astype(np.float64), result.dtype.name


def sync(result):
    return result


def compile(fn):
    return fn


def compile_gradient(fn):
    return fn


def clear_compile_cache() -> None:
    return None


def release_memory() -> None:
    """Hand back memory the framework keeps after its cells (peak memory of long sweeps)."""
    return None


autodiff_gradient = None  # NumPy paths carry hand-written backward passes; a custom NumPy path has none


def dtype_scope(dtype: str):
    return contextlib.nullcontext()


@contextlib.contextmanager
def threads(n: int):
    """The BLAS/OpenMP pools limited to n threads inside the block (elementwise ufuncs are
    single-threaded); yields (n, "")."""
    import threadpoolctl

    with threadpoolctl.threadpool_limits(limits=n):
        yield n, ""


@functools.cache
def flushes_subnormals(dtype: str, device: str = "cpu") -> bool:
    """Whether a computed subnormal result comes back as zero: smallest_normal / 4 by a divide."""
    from harness.dtypes import DTYPES

    fmt = DTYPES[dtype]
    x = np.array([fmt.smallest_normal], dtype=fmt.numpy_type)
    return bool(np.asarray(x / x.dtype.type(4))[0] == 0)


def device_peak_bytes(call) -> int | None:
    """No accelerator: the timing stage measures the resident set instead."""
    return None


def exp(x):
    """The framework's own elementwise exp (for measured facts such as `harness.backends.exp_dtype`)."""
    return np.exp(x)
