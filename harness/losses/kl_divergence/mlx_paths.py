"""MLX paths of the distillation loss T**2 KL(softmax(t / T) || softmax(s / T)), on the CPU.

``PATHS[name](teacher, student, *, temperature=1.0) -> loss``: per-row loss in the logits' dtype;
``GRADIENTS[name]``: d(sum of the losses) / d student by mx.grad. MLX's kl_div_loss takes
log-probability targets only (no `kl_div` path: declared in the entries); log-probabilities are
x - mx.logsumexp(x), as mlx.nn.LogSoftmax computes them.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from harness.backends.mlx import autodiff_gradient
from harness.losses.kl_divergence.gradients import with_respect_to_student


def _log_softmax(x):
    return x - mx.logsumexp(x, axis=1, keepdims=True)


def naive(teacher, student, *, temperature=1.0):
    p = mx.softmax(teacher / temperature, axis=1)
    q = mx.softmax(student / temperature, axis=1)
    return temperature**2 * (p * (mx.log(p) - mx.log(q))).sum(axis=1)


def kl_div_log_target(teacher, student, *, temperature=1.0):
    """mlx.nn.losses.kl_div_loss(log q, log p): sum exp(log p) (log p - log q)."""
    log_q = _log_softmax(student / temperature)
    log_p = _log_softmax(teacher / temperature)
    return temperature**2 * nn.losses.kl_div_loss(log_q, log_p, axis=1, reduction="none")


def ce_minus_entropy(teacher, student, *, temperature=1.0):
    """Soft-target nn.losses.cross_entropy(s / T, p) - nn.losses.cross_entropy(t / T, p)."""
    p = mx.softmax(teacher / temperature, axis=1)
    cross = nn.losses.cross_entropy(student / temperature, p, axis=1, reduction="none")
    entropy = nn.losses.cross_entropy(teacher / temperature, p, axis=1, reduction="none")
    return temperature**2 * (cross - entropy)


PATHS = {
    "naive": naive,
    "kl_div_log_target": kl_div_log_target,
    "ce_minus_entropy": ce_minus_entropy,
}

GRADIENTS = {name: with_respect_to_student(autodiff_gradient, path) for name, path in PATHS.items()}
