"""JAX paths of the distillation loss T**2 KL(softmax(t / T) || softmax(s / T)), jitted by the backend.

``PATHS[name](teacher, student, *, temperature=1.0) -> loss``: per-row loss in the logits' dtype;
``GRADIENTS[name]``: d(sum of the losses) / d student by jax.grad.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from harness.backends.jax import autodiff_gradient
from harness.losses.kl_divergence.gradients import with_respect_to_student


def naive(teacher, student, *, temperature=1.0):
    p = jax.nn.softmax(teacher / temperature, axis=1)
    q = jax.nn.softmax(student / temperature, axis=1)
    return temperature**2 * (p * (jnp.log(p) - jnp.log(q))).sum(axis=1)


def kl_div(teacher, student, *, temperature=1.0):
    """optax.kl_divergence(log_softmax(s / T), softmax(t / T)): p (where(p == 0, 0, log p) - log q)."""
    log_q = jax.nn.log_softmax(student / temperature, axis=1)
    p = jax.nn.softmax(teacher / temperature, axis=1)
    return temperature**2 * optax.kl_divergence(log_q, p)


def kl_div_log_target(teacher, student, *, temperature=1.0):
    """optax.losses.kl_divergence_with_log_targets: exp(log p) (log p - log q)."""
    log_q = jax.nn.log_softmax(student / temperature, axis=1)
    log_p = jax.nn.log_softmax(teacher / temperature, axis=1)
    return temperature**2 * optax.losses.kl_divergence_with_log_targets(log_q, log_p)


def ce_minus_entropy(teacher, student, *, temperature=1.0):
    """optax.softmax_cross_entropy(s / T, p) - optax.softmax_cross_entropy(t / T, p)."""
    p = jax.nn.softmax(teacher / temperature, axis=1)
    cross = optax.softmax_cross_entropy(student / temperature, p)
    entropy = optax.softmax_cross_entropy(teacher / temperature, p)
    return temperature**2 * (cross - entropy)


PATHS = {
    "naive": naive,
    "kl_div": kl_div,
    "kl_div_log_target": kl_div_log_target,
    "ce_minus_entropy": ce_minus_entropy,
}

GRADIENTS = {name: with_respect_to_student(autodiff_gradient, path) for name, path in PATHS.items()}
