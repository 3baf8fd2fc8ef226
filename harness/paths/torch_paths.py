"""PyTorch paths, run eagerly on the CPU; losses under inference mode, gradients by autograd.

``PATHS[name](x, y) -> loss``: per-row loss of logits x (N, C) and labels y (N,), in x's dtype;
``GRADIENTS[name]``: d(sum of the per-row losses)/dx by torch.autograd (harness.backends.torch).

A shift by a running or per-chunk maximum that cancels in exact arithmetic is detached, as in
torch's own softmax kernels; in `log1p_lse` the maximum is a term of the formula and is not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.backends.torch import autodiff_gradient
from harness.paths import size_or_default


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
    m = torch.full((x.shape[0], 1), -torch.inf, dtype=x.dtype, device=x.device)
    d = torch.zeros((x.shape[0], 1), dtype=x.dtype, device=x.device)
    for block in x.split(size_or_default("block_size", block_size), dim=1):
        m_new = torch.maximum(m, block.amax(dim=1, keepdim=True).detach())
        d = d * torch.exp(m - m_new) + torch.exp(block - m_new).sum(dim=1, keepdim=True)
        m = m_new
    return (m + torch.log(d))[:, 0] - _pick(x, y)


def chunked(x, y, chunk_size=None):
    """torch.logsumexp per vocabulary chunk, merged left to right with torch.logaddexp."""
    lse = None
    for chunk in x.split(size_or_default("chunk_size", chunk_size), dim=1):
        lse_c = torch.logsumexp(chunk, dim=1)
        lse = lse_c if lse is None else torch.logaddexp(lse, lse_c)
    return lse - _pick(x, y)


NEEDS = {  # the library functions each path calls: a release that lacks one runs it as unsupported
    "softmax_log": ("torch.softmax",),
    "log_softmax_nll": ("torch.nn.functional.log_softmax", "torch.nn.functional.nll_loss"),
    "fused": ("torch.nn.functional.cross_entropy",),
    "upcast_fused": ("torch.nn.functional.cross_entropy",),
    "chunked": ("torch.logsumexp",),
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
