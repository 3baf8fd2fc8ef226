"""NumPy (and SciPy) paths. bfloat16 comes from ml_dtypes; float16 is NumPy's own."""

from __future__ import annotations

import numpy as np
import scipy.special


def _pick(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.take_along_axis(values, labels[:, None], axis=1)[:, 0]


def naive(x, y):
    with np.errstate(all="ignore"):
        e = np.exp(x)
        p = e / e.sum(axis=1, keepdims=True)
        return -np.log(_pick(p, y))


def softmax_log(x, y):
    with np.errstate(all="ignore"):
        return -np.log(_pick(scipy.special.softmax(x, axis=1), y))


def log_softmax_nll(x, y):
    with np.errstate(all="ignore"):
        shifted = x - x.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return -_pick(log_p, y)


def fused(x, y):
    with np.errstate(all="ignore"):
        return scipy.special.logsumexp(x, axis=1) - _pick(x, y)


PATHS = {
    "naive": naive,
    "softmax_log": softmax_log,
    "log_softmax_nll": log_softmax_nll,
    "fused": fused,
}


def to_native(logits: np.ndarray, labels: np.ndarray):
    return logits, labels


def to_numpy(result) -> tuple[np.ndarray, str]:
    """The result as float64 (exact widening) and the dtype name the framework returned."""
    result = np.asarray(result)
    return result.astype(np.float64), str(result.dtype)


def compile(fn):
    return fn


def version() -> str:
    return f"numpy {np.__version__}, scipy {scipy.__version__}"
