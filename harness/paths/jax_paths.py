"""JAX paths, jitted by the backend (harness.backends.jax), float64 only inside its x64 scope.

``PATHS[name](x, y) -> loss``: per-row loss in x's dtype; ``GRADIENTS[name]``: by jax.grad.

`online` and `chunked` loop in Python over static column blocks, unrolled under jit. A shift by a
running or per-chunk maximum that cancels in exact arithmetic has its gradient stopped, as
jax.nn.logsumexp does; in `log1p_lse` the maximum is a term of the formula and keeps it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from harness.backends.jax import autodiff_gradient
from harness.paths import size_or_default


def _pick(values, labels):
    return jnp.take_along_axis(values, labels[:, None], axis=1)[:, 0]


def naive(x, y):
    e = jnp.exp(x)
    p = e / e.sum(axis=1, keepdims=True)
    return -jnp.log(_pick(p, y))


def softmax_log(x, y):
    return -jnp.log(_pick(jax.nn.softmax(x, axis=1), y))


def log_softmax_nll(x, y):
    return -_pick(jax.nn.log_softmax(x, axis=1), y)


def fused(x, y):
    return optax.softmax_cross_entropy_with_integer_labels(x, y)


def upcast_fused(x, y):
    """Mixed precision: float32 whatever the input; float64 logits are cast down, as AMP would."""
    return fused(x.astype(jnp.float32), y).astype(x.dtype)


def log1p_lse(x, y):
    """Blanchard, Higham & Higham (2021): lse = m + log1p(s); the loss is log1p(s) - (x[y] - m)."""
    top = jnp.argmax(x, axis=1)[:, None]
    shifted = x - jnp.take_along_axis(x, top, axis=1)
    is_top = jnp.arange(x.shape[1])[None, :] == top
    s = jnp.where(is_top, jnp.zeros((), x.dtype), jnp.exp(shifted)).sum(axis=1)  # argmax's 1 is the "1 +"
    return jnp.log1p(s) - _pick(shifted, y)


def _column_blocks(n_classes: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, n_classes)) for start in range(0, n_classes, size)]


def online(x, y, block_size=None):
    """Milakov & Gimelshein (2018): m = -inf, d = 0; per block m' = max(m, max(block)),
    d' = d exp(m - m') + sum(exp(block - m')); lse = m + log(d)."""
    m = jnp.full((x.shape[0], 1), -jnp.inf, dtype=x.dtype)
    d = jnp.zeros((x.shape[0], 1), dtype=x.dtype)
    for columns in _column_blocks(x.shape[1], size_or_default("block_size", block_size)):
        block = x[:, columns]
        m_new = jnp.maximum(m, jax.lax.stop_gradient(block.max(axis=1, keepdims=True)))
        d = d * jnp.exp(m - m_new) + jnp.exp(block - m_new).sum(axis=1, keepdims=True)
        m = m_new
    return (m + jnp.log(d))[:, 0] - _pick(x, y)


def chunked(x, y, chunk_size=None):
    """jax.nn.logsumexp per vocabulary chunk, merged left to right with jnp.logaddexp."""
    lse = None
    for columns in _column_blocks(x.shape[1], size_or_default("chunk_size", chunk_size)):
        lse_c = jax.nn.logsumexp(x[:, columns], axis=1)
        lse = lse_c if lse is None else jnp.logaddexp(lse, lse_c)
    return lse - _pick(x, y)


NEEDS = {  # the library functions each path calls: a release that lacks one runs it as unsupported
    "softmax_log": ("jax.nn.softmax",),
    "log_softmax_nll": ("jax.nn.log_softmax",),
    "fused": ("optax.softmax_cross_entropy_with_integer_labels",),
    "upcast_fused": ("optax.softmax_cross_entropy_with_integer_labels",),
    "chunked": ("jax.nn.logsumexp",),
}

PATHS = {
    "naive": naive,
    "softmax_log": softmax_log,
    "log_softmax_nll": log_softmax_nll,
    "fused": fused,
    "upcast_fused": upcast_fused,
    "log1p_lse": log1p_lse,
    "online": online,
    "chunked": chunked,
}


GRADIENTS = {name: autodiff_gradient(path) for name, path in PATHS.items()}
