"""Head paths in PyTorch (see harness.paths.head): the loss as a training step's forward, gradients by autograd.

The loss is computed on inputs that require grad, as in training (F.linear_cross_entropy's chunked
path prepares its backward buffers in the forward), and returned detached. `compiled` mode wraps
each loss in torch.compile (Inductor's CPU backend). Compiled functions are kept per (path,
reduction) for the process, so torch.compile compiles once per shape and dtype and every later
cell of that shape reuses the kernels; loss and gradient calls share one graph (AOTAutograd
compiles the backward on the first gradient call). Dynamo's recompile limit (8 per code object)
is raised to RECOMPILE_LIMIT, since one code object serves every reduction and dtype.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from harness.paths.head import ACC_POLICIES
from harness.paths.options import IGNORE_INDEX

try:  # checked once: where the package does not import, its path is a row with status unsupported
    from cut_cross_entropy import linear_cross_entropy as _cce

    CCE_UNSUPPORTED = ""
except Exception as exc:  # ImportError, or triton failing to find a GPU
    _cce = None
    CCE_UNSUPPORTED = (
        f"cut-cross-entropy does not import here ({type(exc).__name__}: {exc}); "
        "pip install cut-cross-entropy, which needs triton"
    )


def fused(h, W, b, y, reduction, ignore_index=IGNORE_INDEX):
    return F.cross_entropy(F.linear(h, W, b), y, reduction=reduction, ignore_index=ignore_index)


def linear_ce(h, W, b, y, reduction, options, ignore_index=None):
    return F.linear_cross_entropy(
        h, W, y, linear_bias=b, reduction=reduction, ignore_index=ignore_index, options=options
    )


def cce(h, W, b, y, reduction, ignore_index=IGNORE_INDEX):
    if b is not None:
        raise NotImplementedError("Cut Cross-Entropy's linear_cross_entropy takes no bias")
    return _cce(h, W, y, impl="torch_compile", reduction=reduction, ignore_index=ignore_index)


def _options(policy: str | None):
    """LinearCrossEntropyOptions() (policy 'auto'), or with acc_policy=policy."""
    options = torch.nn.LinearCrossEntropyOptions
    return options() if policy is None else options(acc_policy=policy)


def _with_policy(policy: str | None):
    return lambda h, W, b, y, reduction, ignore_index=None: linear_ce(
        h, W, b, y, reduction, _options(policy), ignore_index
    )


LOSSES = {
    "linear_fused": fused,
    "linear_chunked": _with_policy(None),
    **{f"linear_chunked_{p}": _with_policy(p) for p in ACC_POLICIES},
    "linear_ce_reference": lambda h, W, b, y, reduction, ignore_index=None: linear_ce(
        h, W, b, y, reduction, None, ignore_index
    ),
    "cce_torch_compile": cce,
}

RECOMPILE_LIMIT = 64
_COMPILED: dict = {}  # (path, reduction, ignore) -> torch.compile'd loss, for the whole process


def loss_function(path: str, reduction: str, mode: str, ignore: bool = False):
    """(h, W, b, y) -> loss; torch.compile'd (and kept) in compiled mode. With `ignore`, labels -100
    are ignored as users ask for it: ignore_index=-100 (F.cross_entropy's and CCE's default; given
    to F.linear_cross_entropy, whose default is None)."""
    if path == "cce_torch_compile" and CCE_UNSUPPORTED:
        raise NotImplementedError(CCE_UNSUPPORTED)
    fn = functools.partial(LOSSES[path], reduction=reduction, **({"ignore_index": IGNORE_INDEX} if ignore else {}))
    if mode != "compiled":
        return fn
    if (path, reduction, ignore) not in _COMPILED:
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        _COMPILED[(path, reduction, ignore)] = torch.compile(fn, dynamic=False)
    return _COMPILED[(path, reduction, ignore)]


def build(path: str, reduction: str, mode: str, chunk_size: int, ignore: bool = False):
    """(loss(h, W, b, y), gradients(h, W, b, y, u)): the loss of inputs that require grad, detached;
    the gradients of sum(u * loss) (reduction none) or of the loss wrt h, W and b, by autograd."""
    fn = loss_function(path, reduction, mode, ignore)

    def forward(h, W, b, y):
        inputs = [t.detach().requires_grad_(True) for t in (h, W, b) if t is not None]
        return inputs, fn(inputs[0], inputs[1], inputs[2] if b is not None else None, y)

    def loss(h, W, b, y):
        with torch.enable_grad():
            return forward(h, W, b, y)[1].detach()

    def gradients(h, W, b, y, u):
        with torch.enable_grad():
            inputs, out = forward(h, W, b, y)
            grads = torch.autograd.grad(out, inputs, grad_outputs=u if reduction == "none" else None)
        return grads[0], grads[1], grads[2] if b is not None else None

    return loss, gradients
