"""PyTorch with the loss options: F.cross_entropy's own for `fused`, by hand for every other path.

`fused` passes weight=, ignore_index=-100, label_smoothing= and reduction= to F.cross_entropy
(probability targets for target=dense, smoothed by its label_smoothing=); the soft-cap and the
z-loss (torch has neither) are written around it, and then the weights, mask and reduction by
hand too, since the z-term joins each row before the reduction. Probability targets have no
ignore_index and a mean over N: with ignored rows or weights, their reduction is by hand.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F

from harness.paths import options as opt
from harness.paths.torch_paths import PATHS

BUILTIN_PATHS = tuple(PATHS)

OPS = SimpleNamespace(
    scalar=lambda x, v: v,
    tanh=torch.tanh,
    log=torch.log,
    softmax=lambda x: torch.softmax(x, dim=1),
    log_softmax=lambda x: F.log_softmax(x, dim=1),
    logsumexp=lambda x: torch.logsumexp(x, dim=1),
    pick=lambda v, y: v.gather(1, y[:, None])[:, 0],
    mean_rows=lambda x: x.mean(dim=1),
    sum_rows=lambda x: x.sum(dim=1),
    take=lambda w, y: w[y],
    where=lambda m, a, b: torch.where(m, a, b),
    total=torch.sum,
    cast_like=lambda mask, like: mask.to(like.dtype),
)


def fused(x, arrays: opt.NativeArrays, options: opt.CellOptions):
    """F.cross_entropy with the library's own options; soft-cap and z-loss around it."""
    xc = opt.softcapped(OPS, x, options)
    by_hand = bool(options.z_loss) or (options.target == "dense" and (arrays.any_ignored or arrays.weights is not None))
    reduction = "none" if by_hand else options.reduction
    if options.target == "dense":
        target = F.one_hot(arrays.safe_labels, x.shape[1]).to(x.dtype)
        rows = F.cross_entropy(
            xc, target, weight=arrays.weights, label_smoothing=options.label_smoothing, reduction=reduction
        )
    else:
        rows = F.cross_entropy(
            xc,
            arrays.ignore_labels,
            weight=arrays.weights,
            ignore_index=opt.IGNORE_INDEX,
            label_smoothing=options.label_smoothing,
            reduction=reduction,
        )
    if not by_hand:
        return rows
    if options.z_loss:
        z = opt.z_term(OPS, xc, torch.logsumexp(xc, dim=1), options)
        w = 1.0 if arrays.weights is None else arrays.weights[arrays.safe_labels]
        rows = rows + z * w
    return opt.reduced(OPS, rows, arrays, options, weighted=True)


def loss_with_options(path, path_fn, x, y, arrays: opt.NativeArrays, options: opt.CellOptions, own=()):
    if path == "fused":
        return fused(x, arrays, options)
    return opt.compose(OPS, path, path_fn, x, arrays, options, own)
