"""PyTorch paths, run eagerly on the CPU; losses under inference mode, gradients by autograd.

API (as in every framework module):

- ``PATHS[name](x, y) -> loss``: per-row loss of logits x (N, C) and labels y (N,), in x's dtype.
- ``GRADIENTS[name](x, y) -> g``: d(sum of the per-row losses)/dx, (N, C), in x's dtype, by
  ``torch.autograd.grad`` of the same path (never under inference mode).
- ``compile(fn)``: the loss under ``torch.inference_mode``; ``compile_gradient(fn)``: the gradient
  as it is. Both bind the current chunk/block size (see `harness.paths.configure`); `online` and
  `chunked` also take ``block_size=`` / ``chunk_size=``.
- ``to_native``, ``to_numpy``, ``version``.

A shift by a running or per-chunk maximum that cancels in exact arithmetic is detached, as in
torch's own softmax kernels; in `log1p_lse` the maximum is a term of the formula and is not.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from harness.paths import size_or_setting, with_settings


def _pick(values, labels):
    return values.gather(1, labels[:, None])[:, 0]


def naive(x, y):
    e = torch.exp(x)
    p = e / e.sum(dim=1, keepdim=True)
    return -torch.log(_pick(p, y))


def softmax_log(x, y):
    return -torch.log(_pick(torch.softmax(x, dim=1), y))


def log_softmax_nll(x, y):
    return F.nll_loss(F.log_softmax(x, dim=1), y, reduction="none")


def fused(x, y):
    return F.cross_entropy(x, y, reduction="none")


def upcast_fused(x, y):
    """Mixed precision: float32 whatever the input; float64 logits are cast down, as autocast would."""
    return F.cross_entropy(x.float(), y, reduction="none").to(x.dtype)


def log1p_lse(x, y):
    """Blanchard, Higham & Higham (2021): lse = m + log1p(s); the loss is log1p(s) - (x[y] - m)."""
    top = x.argmax(dim=1, keepdim=True)
    shifted = x - x.gather(1, top)
    s = torch.exp(shifted).scatter(1, top, 0.0).sum(dim=1)  # the argmax's exp(0) = 1 is the "1 +"
    return torch.log1p(s) - _pick(shifted, y)


def online(x, y, block_size=None):
    """Milakov & Gimelshein (2018): m = -inf, d = 0; per block m' = max(m, max(block)),
    d' = d exp(m - m') + sum(exp(block - m')); lse = m + log(d)."""
    m = torch.full((x.shape[0], 1), -torch.inf, dtype=x.dtype)
    d = torch.zeros((x.shape[0], 1), dtype=x.dtype)
    for block in x.split(size_or_setting("block_size", block_size), dim=1):
        m_new = torch.maximum(m, block.amax(dim=1, keepdim=True).detach())
        d = d * torch.exp(m - m_new) + torch.exp(block - m_new).sum(dim=1, keepdim=True)
        m = m_new
    return (m + torch.log(d))[:, 0] - _pick(x, y)


def chunked(x, y, chunk_size=None):
    """torch.logsumexp per vocabulary chunk, merged left to right with torch.logaddexp."""
    lse = None
    for chunk in x.split(size_or_setting("chunk_size", chunk_size), dim=1):
        lse_c = torch.logsumexp(chunk, dim=1)
        lse = lse_c if lse is None else torch.logaddexp(lse, lse_c)
    return lse - _pick(x, y)


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


def autodiff_gradient(path):
    """(x, y) -> d(sum of path(x, y))/dx by torch.autograd, in x's dtype."""

    @functools.wraps(path)  # keeps path's keywords visible to `with_settings`
    def gradient(x, y, **sizes):
        with torch.inference_mode(False), torch.enable_grad():
            x = (x.clone() if x.is_inference() else x).detach().requires_grad_(True)
            (g,) = torch.autograd.grad(path(x, y, **sizes).sum(), x)
        return g

    return gradient


GRADIENTS = {name: autodiff_gradient(path) for name, path in PATHS.items()}


def to_native(logits: np.ndarray, labels: np.ndarray):
    """Same bits as the NumPy array; bfloat16 travels as its 16-bit pattern."""
    if logits.dtype.name == "bfloat16":
        x = torch.from_numpy(logits.view(np.uint16).copy()).view(torch.bfloat16)
    else:
        x = torch.from_numpy(logits.copy())
    return x, torch.from_numpy(np.asarray(labels, dtype=np.int64))


def to_numpy(result) -> tuple[np.ndarray, str]:
    return result.detach().to(torch.float64).cpu().numpy(), str(result.dtype).removeprefix("torch.")


def compile(fn):
    fn = with_settings(fn)

    def run(x, y):
        with torch.inference_mode():
            return fn(x, y)

    return run


def compile_gradient(fn):
    return with_settings(fn)


def version() -> str:
    return f"torch {torch.__version__}"
