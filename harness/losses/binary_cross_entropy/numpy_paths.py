"""NumPy/SciPy paths of the binary cross-entropy over logits.

``PATHS[name](logits, targets, *, pos_weight=None) -> loss``: per-element loss in the logits' dtype.
SciPy's ufuncs (expit, log_expit) compute float16 in float32 and have no bfloat16 loop: half
floats are computed in float32 and each result rounded to the input dtype once (declared in the
path entries). SciPy has no probability-input BCE (declared).

NumPy has no autodiff: ``GRADIENTS[name]`` are the harness's own backward passes, each the chain
rule through the path's own operations in its dtype, as an autodiff would take it (naive:
d/ds = -w t / s + (1 - t) / (1 - s), times s (1 - s), so NaN where s rounds to 1, as PyTorch's).
"""

from __future__ import annotations

import numpy as np
from scipy import special

_HALF = ("float16", "bfloat16")


def _in(x):
    """x as SciPy computes it: float32 for the half formats, else itself."""
    return x.astype(np.float32) if x.dtype.name in _HALF else x


def _out(value, like):
    return np.asarray(value).astype(like.dtype)


def _weighted(targets, pos_weight):
    return targets if pos_weight is None else (pos_weight * targets).astype(targets.dtype)


def naive(logits, targets, *, pos_weight=None):
    s = _out(special.expit(_in(logits)), logits)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return -(_weighted(targets, pos_weight) * np.log(s) + (1 - targets) * np.log(1 - s))


def _log_expit(x, like):
    return _out(special.log_expit(_in(x)), like)


def with_logits(logits, targets, *, pos_weight=None):
    """SciPy's log_expit form of the fused loss: (1 - t) x - (1 + (w - 1) t) log_expit(x)."""
    scale = 1 - targets + _weighted(targets, pos_weight)
    with np.errstate(over="ignore", invalid="ignore"):
        return (1 - targets) * logits - scale * _log_expit(logits, logits)


def log_sigmoid(logits, targets, *, pos_weight=None):
    with np.errstate(over="ignore", invalid="ignore"):
        return -(
            _weighted(targets, pos_weight) * _log_expit(logits, logits) + (1 - targets) * _log_expit(-logits, logits)
        )


def softplus(logits, targets, *, pos_weight=None):
    """softplus(x) - t x with np.logaddexp(0, x)."""
    weighted = _weighted(targets, pos_weight)
    with np.errstate(over="ignore", invalid="ignore"):
        sp = _out(np.logaddexp(np.zeros((), _in(logits).dtype), _in(logits)), logits)
        return (1 - targets + weighted) * sp - weighted * logits


PATHS = {
    "naive": naive,
    "with_logits": with_logits,
    "log_sigmoid": log_sigmoid,
    "softplus": softplus,
}


def _expit(x, like):
    return _out(special.expit(_in(x)), like)


def naive_gradient(logits, targets, *, pos_weight=None):
    s = _expit(logits, logits)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        by_s = -_weighted(targets, pos_weight) / s + (1 - targets) / (1 - s)
        return by_s * (s * (1 - s))


def with_logits_gradient(logits, targets, *, pos_weight=None):
    """(1 - t) - (1 + (w - 1) t) expit(-x): log_expit's derivative is expit(-x)."""
    scale = 1 - targets + _weighted(targets, pos_weight)
    return (1 - targets) - scale * _expit(-logits, logits)


def log_sigmoid_gradient(logits, targets, *, pos_weight=None):
    return -(_weighted(targets, pos_weight) * _expit(-logits, logits) - (1 - targets) * _expit(logits, logits))


def softplus_gradient(logits, targets, *, pos_weight=None):
    """(1 - t + w t) expit(x) - w t: logaddexp(0, x)'s derivative is expit(x)."""
    weighted = _weighted(targets, pos_weight)
    return (1 - targets + weighted) * _expit(logits, logits) - weighted


GRADIENTS = {
    "naive": naive_gradient,
    "with_logits": with_logits_gradient,
    "log_sigmoid": log_sigmoid_gradient,
    "softplus": softplus_gradient,
}
