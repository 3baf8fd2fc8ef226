"""JAX with the loss options: optax's own for `fused`, by hand for every other path.

`fused` is optax.softmax_cross_entropy_with_integer_labels; with label smoothing or target=dense,
optax.smooth_labels on one-hot targets and optax.softmax_cross_entropy (optax has no smoothing
for integer labels). Optax has no ignore index, weights or reduction: a mask, w[y] and the
reductions are written by hand, as are the soft-cap and the z-loss.
"""

from __future__ import annotations

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import optax

from harness.paths import options as opt
from harness.paths.jax_paths import PATHS

BUILTIN_PATHS = tuple(PATHS)

OPS = SimpleNamespace(
    scalar=lambda x, v: v,
    tanh=jnp.tanh,
    log=jnp.log,
    softmax=lambda x: jax.nn.softmax(x, axis=1),
    log_softmax=lambda x: jax.nn.log_softmax(x, axis=1),
    logsumexp=lambda x: jax.nn.logsumexp(x, axis=1),
    pick=lambda v, y: jnp.take_along_axis(v, y[:, None], axis=1)[:, 0],
    mean_rows=lambda x: x.mean(axis=1),
    sum_rows=lambda x: x.sum(axis=1),
    take=lambda w, y: w[y],
    where=jnp.where,
    total=jnp.sum,
    cast_like=lambda mask, like: mask.astype(like.dtype),
)


def fused(x, arrays: opt.NativeArrays, options: opt.CellOptions):
    xc = opt.softcapped(OPS, x, options)
    if options.label_smoothing or options.target == "dense":
        onehot = jax.nn.one_hot(arrays.safe_labels, x.shape[1], dtype=x.dtype)
        rows = optax.softmax_cross_entropy(xc, optax.smooth_labels(onehot, options.label_smoothing))
    else:
        rows = optax.softmax_cross_entropy_with_integer_labels(xc, arrays.safe_labels)
    rows = rows + opt.z_term(OPS, xc, jax.nn.logsumexp(xc, axis=1), options)
    return opt.reduced(OPS, rows, arrays, options)


def loss_with_options(path, path_fn, x, y, arrays: opt.NativeArrays, options: opt.CellOptions, own=()):
    if path == "fused":
        return fused(x, arrays, options)
    return opt.compose(OPS, path, path_fn, x, arrays, options, own)
