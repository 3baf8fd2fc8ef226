"""MLX paths of the binary cross-entropy over logits, on the CPU; gradients by mx.grad.

``PATHS[name](logits, targets, *, pos_weight=None) -> loss``: per-element loss in the logits' dtype.
mlx.nn.losses.binary_cross_entropy has elementwise `weights` but no pos_weight (declared in the
path entries). Its `with_logits=True` is mx.logaddexp(0, x) - x t, the softplus form; its
probability form clips each log at -100, as PyTorch's does. mx.sigmoid and mx.exp compute in
float32 for every dtype (float64 included: harness.paths.mlx_paths).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from harness.backends.mlx import autodiff_gradient


def _weighted(targets, pos_weight):
    return targets if pos_weight is None else pos_weight * targets


def naive(logits, targets, *, pos_weight=None):
    s = mx.sigmoid(logits)
    return -(_weighted(targets, pos_weight) * mx.log(s) + (1 - targets) * mx.log(1 - s))


def probs(logits, targets):
    """binary_cross_entropy(with_logits=False) on mx.sigmoid outputs: logs clipped at -100."""
    return nn.losses.binary_cross_entropy(mx.sigmoid(logits), targets, with_logits=False, reduction="none")


def with_logits(logits, targets):
    """binary_cross_entropy(with_logits=True): mx.logaddexp(0, x) - x t."""
    return nn.losses.binary_cross_entropy(logits, targets, with_logits=True, reduction="none")


def log_sigmoid(logits, targets, *, pos_weight=None):
    return -(_weighted(targets, pos_weight) * nn.log_sigmoid(logits) + (1 - targets) * nn.log_sigmoid(-logits))


def softplus(logits, targets, *, pos_weight=None):
    """softplus(x) - t x with nn.softplus = mx.logaddexp(x, 0)."""
    weighted = _weighted(targets, pos_weight)
    return (1 - targets + weighted) * nn.softplus(logits) - weighted * logits


PATHS = {
    "naive": naive,
    "probs": probs,
    "with_logits": with_logits,
    "log_sigmoid": log_sigmoid,
    "softplus": softplus,
}

GRADIENTS = {name: autodiff_gradient(path) for name, path in PATHS.items()}
