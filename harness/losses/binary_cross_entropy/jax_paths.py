"""JAX paths of the binary cross-entropy over logits, jitted by the backend; gradients by jax.grad.

``PATHS[name](logits, targets, *, pos_weight=None) -> loss``: per-element loss in the logits' dtype;
`pos_weight` multiplies the t log s term (PyTorch's meaning). optax has no probability-input BCE
and its `sigmoid_binary_cross_entropy` no pos_weight (both declared in the path entries).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from harness.backends.jax import autodiff_gradient


def _weighted(targets, pos_weight):
    return targets if pos_weight is None else pos_weight * targets


def naive(logits, targets, *, pos_weight=None):
    s = jax.nn.sigmoid(logits)
    return -(_weighted(targets, pos_weight) * jnp.log(s) + (1 - targets) * jnp.log(1 - s))


def with_logits(logits, targets):
    """optax.sigmoid_binary_cross_entropy: -t log_sigmoid(x) - (1 - t) log_sigmoid(-x)."""
    return optax.sigmoid_binary_cross_entropy(logits, targets)


def log_sigmoid(logits, targets, *, pos_weight=None):
    return -(_weighted(targets, pos_weight) * jax.nn.log_sigmoid(logits) + (1 - targets) * jax.nn.log_sigmoid(-logits))


def softplus(logits, targets, *, pos_weight=None):
    """softplus(x) - t x with jax.nn.softplus = logaddexp(x, 0) (no threshold)."""
    weighted = _weighted(targets, pos_weight)
    return (1 - targets + weighted) * jax.nn.softplus(logits) - weighted * logits


PATHS = {
    "naive": naive,
    "with_logits": with_logits,
    "log_sigmoid": log_sigmoid,
    "softplus": softplus,
}

GRADIENTS = {name: autodiff_gradient(path) for name, path in PATHS.items()}
