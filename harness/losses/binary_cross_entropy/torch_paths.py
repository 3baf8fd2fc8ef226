"""PyTorch paths of the binary cross-entropy over logits, eager on the CPU; gradients by autograd.

``PATHS[name](logits, targets, *, pos_weight=None) -> loss``: per-element loss in the logits' dtype,
targets of the same dtype and shape, `pos_weight` a tensor broadcast against them (PyTorch's
meaning: it multiplies the t log s term); ``GRADIENTS[name]``: d(sum of the losses)/d logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.backends.torch import autodiff_gradient


def _weighted(targets, pos_weight):
    """w t, or t without a pos_weight."""
    return targets if pos_weight is None else pos_weight * targets


def naive(logits, targets, *, pos_weight=None):
    """sigmoid, then the textbook formula: 0 * log(0) = NaN once sigmoid rounds to 1 (or 0)."""
    s = torch.sigmoid(logits)
    return -(_weighted(targets, pos_weight) * torch.log(s) + (1 - targets) * torch.log(1 - s))


def probs(logits, targets):
    """F.binary_cross_entropy on sigmoid outputs: its logs are clamped at -100, so the loss is at most 100."""
    return F.binary_cross_entropy(torch.sigmoid(logits), targets, reduction="none")


def with_logits(logits, targets, *, pos_weight=None):
    """F.binary_cross_entropy_with_logits: (1 - t) x - (1 + (w - 1) t) logsigmoid(x) in its kernel."""
    return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight, reduction="none")


def log_sigmoid(logits, targets, *, pos_weight=None):
    return -(_weighted(targets, pos_weight) * F.logsigmoid(logits) + (1 - targets) * F.logsigmoid(-logits))


def softplus(logits, targets, *, pos_weight=None):
    """softplus(x) - t x, or (1 - t + w t) softplus(x) - w t x; F.softplus returns x itself above 20."""
    weighted = _weighted(targets, pos_weight)
    return (1 - targets + weighted) * F.softplus(logits) - weighted * logits


PATHS = {
    "naive": naive,
    "probs": probs,
    "with_logits": with_logits,
    "log_sigmoid": log_sigmoid,
    "softplus": softplus,
}

GRADIENTS = {name: autodiff_gradient(path) for name, path in PATHS.items()}
