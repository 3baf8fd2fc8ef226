"""Head paths in MLX (see harness.paths.head): lazy graphs on the CPU; gradients by mx.grad.

`linear_chunked` is the loop MLX users write by hand (MLX has no fused linear cross-entropy): a
Python loop over vocabulary chunks of `chunk_size` classes, each chunk's logits h @ W_C.T + b_C in
the dtype, a running max m (held out of the gradient, as nn.losses.cross_entropy's shift is) and a
running sum s in the dtype; the target logit is picked from its chunk. The last chunk may be short.

Where MLX's CPU rounds (MLX 0.32.4, measured at 64 x 512 x 1000): a float16/bfloat16 product
accumulates in float32 and rounds once to the dtype (99.8% and 99.99% of entries equal to that,
the rest one sum order away); float64 products are float64; mx.exp is a float32 polynomial for
every dtype (float64's exponentials have float32's accuracy, see harness.paths.mlx_paths); sums
of float16/bfloat16 accumulate in float32.

`compiled` wraps the loss and its gradient in mx.compile (kept per path, reduction and chunk for
the process; mx.compile traces again for each new shape and dtype and keeps that graph). Its CPU
backend builds fused elementwise kernels with the system C++ compiler at first call.
"""

from __future__ import annotations

import functools

import mlx.core as mx
import mlx.nn as nn

from harness.paths.options import IGNORE_INDEX


def reduce(loss, reduction: str, kept=None):
    """none, mean or sum; with `kept`, 0 at the other rows and the mean over the kept count."""
    if kept is not None:
        loss = mx.where(kept, loss, mx.array(0, dtype=loss.dtype))
        if reduction == "mean":
            return loss.sum() / kept.sum()
    if reduction == "none":
        return loss
    return loss.mean() if reduction == "mean" else loss.sum()


def logits(h, W, b, start: int = 0, stop: int | None = None):
    """h @ W[start:stop].T (+ b[start:stop]) in the dtype."""
    z = h @ W[start:stop].T
    return z if b is None else z + b[start:stop]


def fused_loss(h, W, b, y, reduction: str, chunk_size: int):
    return nn.losses.cross_entropy(logits(h, W, b), y, reduction=reduction)


def chunked_loss(h, W, b, y, reduction: str, chunk_size: int):
    """m' = max(m, max(z_C)), s' = s exp(m - m') + sum(exp(z_C - m')) over chunks; m + log(s) - z_y."""
    m = s = target = None
    for start in range(0, W.shape[0], chunk_size):
        z = logits(h, W, b, start, start + chunk_size)
        stop = start + z.shape[1]
        top = mx.stop_gradient(z.max(axis=1))
        new_m = top if m is None else mx.maximum(m, top)
        part = mx.exp(z - new_m[:, None]).sum(axis=1)
        s = part if s is None else s * mx.exp(m - new_m) + part
        m = new_m
        picked = mx.take_along_axis(z, mx.clip(y - start, 0, z.shape[1] - 1)[:, None], axis=1)[:, 0]
        target = picked if target is None else mx.where((y >= start) & (y < stop), picked, target)
    return reduce(m + mx.log(s) - target, reduction)


LOSSES = {"linear_fused": fused_loss, "linear_chunked": chunked_loss}


@functools.cache
def build(path: str, reduction: str, mode: str, chunk_size: int, ignore: bool = False):
    """(loss(h, W, b, y), gradients(h, W, b, y, u)): the gradients of sum(u * loss) (reduction none)
    or of the reduced loss with respect to h, W and b by mx.grad; both mx.compile'd in compiled mode
    (kept per path, reduction, mode and chunk for the process; a missing bias is a None argument).
    With `ignore`, rows labelled -100 are masked: mx.where(kept, loss, 0), the mean over kept.sum()."""
    fn = LOSSES[path]

    def loss(h, W, b, y):
        if not ignore:
            return fn(h, W, b, y, reduction, chunk_size)
        kept = y != IGNORE_INDEX
        return reduce(fn(h, W, b, mx.where(kept, y, 0), "none", chunk_size), reduction, kept)

    def gradients(h, W, b, y, u):
        def objective(*wrt):
            out = loss(wrt[0], wrt[1], None if b is None else wrt[2], y)
            return (out * u).sum() if reduction == "none" else out

        wrt = (h, W) if b is None else (h, W, b)
        grads = mx.grad(objective, argnums=tuple(range(len(wrt))))(*wrt)
        return (*grads, None) if b is None else tuple(grads)

    if mode == "compiled":
        return mx.compile(loss), mx.compile(gradients)
    return loss, gradients
