"""Head paths in NumPy (see harness.paths.head), with their backward passes written by hand.

NumPy has no half-precision BLAS, so a float16/bfloat16 product is computed in float32 and rounded
once to the dtype (as the PyTorch and XLA CPU kernels do); float32 and float64 use their own BLAS.
Everything after the product runs in the dtype, as written.
"""

from __future__ import annotations

import numpy as np

from harness.paths import numpy_paths
from harness.paths.options import IGNORE_INDEX

_HALVES = ("float16", "bfloat16")


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b in a's dtype: float32 products and sums for float16/bfloat16, rounded once."""
    if a.dtype.name in _HALVES:
        return (a.astype(np.float32) @ b.astype(np.float32)).astype(a.dtype)
    return a @ b


def logits(h, W, b, start: int = 0, stop: int | None = None) -> np.ndarray:
    """h @ W[start:stop].T (+ b[start:stop]) in the dtype."""
    z = matmul(h, W[start:stop].T)
    return z if b is None else z + b[start:stop]


def reduce(loss: np.ndarray, reduction: str, kept: np.ndarray | None = None) -> np.ndarray:
    """none, mean or sum; with `kept`, 0 at the other rows and the mean over the kept count."""
    if kept is not None:
        loss = np.where(kept, loss, loss.dtype.type(0))
    if reduction == "none":
        return loss
    total = loss.sum()
    count = len(loss) if kept is None else np.count_nonzero(kept)
    with np.errstate(invalid="ignore", divide="ignore"):  # a mean over no kept rows: NaN
        return np.asarray(total / loss.dtype.type(count) if reduction == "mean" else total)


def upstream(reduction: str, u, n: int, dtype, kept: np.ndarray | None = None) -> np.ndarray:
    """Per-row weight of each loss in what is differentiated: u for none, 1/n for mean, 1 for sum;
    with `kept`, 0 at the other rows and 1/(kept count) for mean."""
    if reduction == "none":
        weight = np.asarray(u, dtype=np.float64)
    else:
        count = n if kept is None else np.count_nonzero(kept)
        weight = np.full(n, 1.0 / max(count, 1) if reduction == "mean" else 1.0)
    return (weight if kept is None else np.where(kept, weight, 0.0)).astype(dtype)


def without_ignored(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels with 0 at the ignore index, so that z[y] can be picked on every row; the kept rows)."""
    kept = y != IGNORE_INDEX
    return np.where(kept, y, 0), kept


def fused_loss(h, W, b, y, reduction: str, chunk_size: int) -> np.ndarray:
    return reduce(numpy_paths.PATHS["fused"](logits(h, W, b), y), reduction)


def chunk_lse(h, W, b, y, chunk_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row lse(z) by a running max m and sum s over vocabulary chunks, and the target logit z_y."""
    rows = np.arange(len(y))
    m = s = None
    target = np.zeros(len(y), dtype=h.dtype)
    for start in range(0, W.shape[0], chunk_size):
        z = logits(h, W, b, start, start + chunk_size)
        top = z.max(axis=1)
        new_m = top if m is None else np.maximum(m, top)
        part = np.exp(z - new_m[:, None]).sum(axis=1)
        s = part if s is None else s * np.exp(m - new_m) + part
        m = new_m
        inside = (y >= start) & (y < start + z.shape[1])
        target[inside] = z[rows[inside], y[inside] - start]
    return m + np.log(s), target


def chunked_loss(h, W, b, y, reduction: str, chunk_size: int) -> np.ndarray:
    lse, target = chunk_lse(h, W, b, y, chunk_size)
    return reduce(lse - target, reduction)


def _grad_of_chunk(z, lse, y, start, u):
    """u (softmax - onehot) over one chunk's logits, in the dtype."""
    g = np.exp(z - lse[:, None])
    inside = (y >= start) & (y < start + z.shape[1])
    g[np.flatnonzero(inside), y[inside] - start] -= g.dtype.type(1)
    return g * u[:, None]


def _gradients(h, W, b, y, u, chunk_size: int, lse) -> tuple:
    dh = np.zeros(h.shape, dtype=np.float32 if h.dtype.name in _HALVES else h.dtype)
    dW = np.empty_like(W)
    db = None if b is None else np.empty_like(b)
    for start in range(0, W.shape[0], chunk_size):
        g = _grad_of_chunk(logits(h, W, b, start, start + chunk_size), lse, y, start, u)
        stop = start + g.shape[1]
        dh += g.astype(dh.dtype) @ W[start:stop].astype(dh.dtype)
        dW[start:stop] = matmul(g.T, h)
        if db is not None:
            db[start:stop] = g.sum(axis=0)
    return dh.astype(h.dtype), dW, db


def fused_gradients(h, W, b, y, reduction: str, u, chunk_size: int, kept=None) -> tuple:
    """The fused path's backward: SciPy logsumexp's (harness.paths.numpy_paths, as the logit stage
    differentiates `fused`) on the materialised logits, times the upstream, then one product each."""
    g = numpy_paths.GRADIENTS["fused"](logits(h, W, b), y)
    g = g * upstream(reduction, u, len(y), h.dtype, kept)[:, None]
    dh = matmul(g, W)
    return dh, matmul(g.T, h), None if b is None else g.sum(axis=0)


def chunked_gradients(h, W, b, y, reduction: str, u, chunk_size: int, kept=None) -> tuple:
    """As written by hand: the forward's lse, then a second pass over the chunks (dh summed in
    float32 for float16/bfloat16)."""
    lse, _ = chunk_lse(h, W, b, y, chunk_size)
    return _gradients(h, W, b, y, upstream(reduction, u, len(y), h.dtype, kept), chunk_size, lse)


LOSSES = {"linear_fused": fused_loss, "linear_chunked": chunked_loss}
GRADIENTS = {"linear_fused": fused_gradients, "linear_chunked": chunked_gradients}


def build(path: str, reduction: str, mode: str, chunk_size: int, ignore: bool = False):
    """(loss(h, W, b, y), gradients(h, W, b, y, u)) of one path; NumPy runs eagerly. With `ignore`,
    rows labelled -100 are masked: loss 0, upstream 0, the mean over the kept count."""
    loss, grads = LOSSES[path], GRADIENTS[path]
    if not ignore:
        return (
            lambda h, W, b, y: loss(h, W, b, y, reduction, chunk_size),
            lambda h, W, b, y, u: grads(h, W, b, y, reduction, u, chunk_size),
        )

    def masked_loss(h, W, b, y):
        y, kept = without_ignored(y)
        return reduce(loss(h, W, b, y, "none", chunk_size), reduction, kept)

    def masked_gradients(h, W, b, y, u):
        y, kept = without_ignored(y)
        return grads(h, W, b, y, reduction, u, chunk_size, kept)

    return masked_loss, masked_gradients
