"""PyTorch paths of the distillation loss T**2 KL(softmax(t / T) || softmax(s / T)), eager on the CPU.

``PATHS[name](teacher, student, *, temperature=1.0) -> loss``: per-row loss in the logits' dtype;
``GRADIENTS[name]``: d(sum of the losses) / d student by autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.backends.torch import autodiff_gradient
from harness.losses.kl_divergence.gradients import with_respect_to_student


def naive(teacher, student, *, temperature=1.0):
    """softmax both, then T**2 sum p (log p - log q): 0 * (-inf) = NaN where a teacher probability is 0."""
    p = torch.softmax(teacher / temperature, dim=1)
    q = torch.softmax(student / temperature, dim=1)
    return temperature**2 * (p * (torch.log(p) - torch.log(q))).sum(dim=1)


def kl_div(teacher, student, *, temperature=1.0):
    """F.kl_div(log_softmax(s / T), softmax(t / T)): target (log target - input), 0 where the target is 0."""
    log_q = F.log_softmax(student / temperature, dim=1)
    p = F.softmax(teacher / temperature, dim=1)
    return temperature**2 * F.kl_div(log_q, p, reduction="none").sum(dim=1)


def kl_div_log_target(teacher, student, *, temperature=1.0):
    """F.kl_div(..., log_target=True): exp(log p) (log p - log q)."""
    log_q = F.log_softmax(student / temperature, dim=1)
    log_p = F.log_softmax(teacher / temperature, dim=1)
    return temperature**2 * F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(dim=1)


def ce_minus_entropy(teacher, student, *, temperature=1.0):
    """Soft-target F.cross_entropy(s / T, p) minus the teacher's entropy, F.cross_entropy(t / T, p)."""
    p = F.softmax(teacher / temperature, dim=1)
    cross = F.cross_entropy(student / temperature, p, reduction="none")
    entropy = F.cross_entropy(teacher / temperature, p, reduction="none")
    return temperature**2 * (cross - entropy)


PATHS = {
    "naive": naive,
    "kl_div": kl_div,
    "kl_div_log_target": kl_div_log_target,
    "ce_minus_entropy": ce_minus_entropy,
}

GRADIENTS = {name: with_respect_to_student(autodiff_gradient, path) for name, path in PATHS.items()}
