"""MLX paths on the CPU (the Linux `mlx-cpu` build), lazy but not compiled; gradients by mx.grad.

``PATHS[name](x, y) -> loss``: per-row loss of logits x (N, C) and labels y (N,), in x's dtype;
``GRADIENTS[name](x, y) -> g``: d(sum of the per-row losses)/dx by mx.grad of the same path.
Not mx.compile: it gave the same bits on every path, gradient and dtype, and no gain on the CPU.

Where MLX's CPU rounds (MLX 0.32.4, measured): mx.exp is a float32 polynomial for every dtype, so
float64 paths that exponentiate have float32's accuracy and range there; mx.sum and mx.logsumexp
accumulate float16 and bfloat16 in float32; mx.softmax (precise=False) accumulates in the input
dtype; mlx.nn.losses.cross_entropy on the CPU is x - max, then mx.logsumexp. A shift by a running
or per-chunk maximum that cancels in exact arithmetic has its gradient stopped, as
mlx.nn.losses.cross_entropy does; in `log1p_lse` the maximum is a term and keeps it.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from harness.backends.mlx import autodiff_gradient
from harness.paths import size_or_default


def _pick(values, labels):
    return mx.take_along_axis(values, labels[:, None], axis=1)[:, 0]


def naive(x, y):
    e = mx.exp(x)
    p = e / e.sum(axis=1, keepdims=True)
    return -mx.log(_pick(p, y))


def softmax_log(x, y):
    return -mx.log(_pick(mx.softmax(x, axis=1), y))


def log_softmax_nll(x, y):
    """MLX has no log_softmax op; its users write x - logsumexp(x) (as mlx.nn.LogSoftmax does)."""
    return -_pick(x - mx.logsumexp(x, axis=1, keepdims=True), y)


def fused(x, y):
    return nn.losses.cross_entropy(x, y, reduction="none")


def upcast_fused(x, y):
    """Mixed precision: float32 whatever the input; float64 logits are cast down too."""
    return fused(x.astype(mx.float32), y).astype(x.dtype)


def log1p_lse(x, y):
    """Blanchard, Higham & Higham (2021): lse = m + log1p(s); the loss is log1p(s) - (x[y] - m)."""
    top = mx.stop_gradient(mx.argmax(x, axis=1, keepdims=True))  # mx.grad needs integer indices stopped
    shifted = x - mx.take_along_axis(x, top, axis=1)
    is_top = mx.arange(x.shape[1])[None, :] == top
    s = mx.where(is_top, mx.zeros((), x.dtype), mx.exp(shifted)).sum(axis=1)  # argmax's 1 is the "1 +"
    return mx.log1p(s) - _pick(shifted, y)


def _column_blocks(n_classes: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, n_classes)) for start in range(0, n_classes, size)]


def online(x, y, block_size=None):
    """Milakov & Gimelshein (2018): m = -inf, d = 0; per block m' = max(m, max(block)),
    d' = d exp(m - m') + sum(exp(block - m')); lse = m + log(d)."""
    m = mx.full((x.shape[0], 1), -mx.inf, dtype=x.dtype)
    d = mx.zeros((x.shape[0], 1), dtype=x.dtype)
    for columns in _column_blocks(x.shape[1], size_or_default("block_size", block_size)):
        block = x[:, columns]
        m_new = mx.maximum(m, mx.stop_gradient(block.max(axis=1, keepdims=True)))
        d = d * mx.exp(m - m_new) + mx.exp(block - m_new).sum(axis=1, keepdims=True)
        m = m_new
    return (m + mx.log(d))[:, 0] - _pick(x, y)


def chunked(x, y, chunk_size=None):
    """mx.logsumexp per vocabulary chunk, merged left to right with mx.logaddexp."""
    lse = None
    for columns in _column_blocks(x.shape[1], size_or_default("chunk_size", chunk_size)):
        lse_c = mx.logsumexp(x[:, columns], axis=1)
        lse = lse_c if lse is None else mx.logaddexp(lse, lse_c)
    return lse - _pick(x, y)


NEEDS = {  # the library functions each path calls: a release that lacks one runs it as unsupported
    "softmax_log": ("mlx.core.softmax",),
    "log_softmax_nll": ("mlx.core.logsumexp",),
    "fused": ("mlx.nn.losses.cross_entropy",),
    "upcast_fused": ("mlx.nn.losses.cross_entropy",),
    "chunked": ("mlx.core.logsumexp",),
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
