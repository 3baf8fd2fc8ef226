"""MLX with the loss options: nn.losses.cross_entropy's own for `fused`, by hand for every other path.

`fused` passes weights=w[y] (MLX's weights are per target, not per class) and label_smoothing=
to nn.losses.cross_entropy (probability targets for target=dense, smoothed by hand: MLX's
label_smoothing takes class indices only); its reduction='mean' divides by N, so the weighted
mean over kept rows is sum / sum(w[y]) by hand. Soft-cap and z-loss by hand.
"""

from __future__ import annotations

from types import SimpleNamespace

import mlx.core as mx
import mlx.nn as nn

from harness.paths import options as opt
from harness.paths.mlx_paths import PATHS

BUILTIN_PATHS = tuple(PATHS)

OPS = SimpleNamespace(
    scalar=lambda x, v: v,
    tanh=mx.tanh,
    log=mx.log,
    softmax=lambda x: mx.softmax(x, axis=1),
    log_softmax=lambda x: x - mx.logsumexp(x, axis=1, keepdims=True),
    logsumexp=lambda x: mx.logsumexp(x, axis=1),
    pick=lambda v, y: mx.take_along_axis(v, y[:, None], axis=1)[:, 0],
    mean_rows=lambda x: x.mean(axis=1),
    sum_rows=lambda x: x.sum(axis=1),
    take=lambda w, y: w[y],
    where=mx.where,
    total=mx.sum,
    cast_like=lambda mask, like: mask.astype(like.dtype),
)


def fused(x, arrays: opt.NativeArrays, options: opt.CellOptions):
    xc = opt.softcapped(OPS, x, options)
    targets = arrays.targets if options.target == "dense" else arrays.safe_labels
    smoothing = 0.0 if options.target == "dense" else options.label_smoothing
    w = None if arrays.weights is None else arrays.weights[arrays.safe_labels]
    rows = nn.losses.cross_entropy(xc, targets, weights=w, label_smoothing=smoothing)
    z = opt.z_term(OPS, xc, mx.logsumexp(xc, axis=1), options)
    rows = rows + (z if w is None else z * w)
    return opt.reduced(OPS, rows, arrays, options, weighted=True)


def loss_with_options(path, path_fn, x, y, arrays: opt.NativeArrays, options: opt.CellOptions, own=()):
    if path == "fused":
        return fused(x, arrays, options)
    return opt.compose(OPS, path, path_fn, x, arrays, options, own)
