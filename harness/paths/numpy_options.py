"""NumPy with the loss options: every option composed by hand (SciPy has no loss options).

``loss_with_options(path, path_fn, x, y, arrays, options)``: see harness.paths.options. `fused`
is scipy.special.logsumexp(x') - x'[y] with the options around it, like every other path.
Gradients: by hand, the reverse sweep of the composition around each path's own backward pass
(`harness.paths.numpy_option_grads`); a custom NumPy path has none.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import scipy.special

from harness.paths import options as opt
from harness.paths.numpy_option_grads import gradient_with_options
from harness.paths.numpy_paths import PATHS

BUILTIN_PATHS = tuple(PATHS)
__all__ = ["BUILTIN_PATHS", "OPS", "gradient_with_options", "loss_with_options"]


def _softmax(x):
    return scipy.special.softmax(x, axis=1)


def _log_softmax(x):
    return scipy.special.log_softmax(x, axis=1)


OPS = SimpleNamespace(
    scalar=lambda x, v: np.asarray(x).dtype.type(v),
    tanh=np.tanh,
    log=np.log,
    softmax=_softmax,
    log_softmax=_log_softmax,
    logsumexp=lambda x: scipy.special.logsumexp(x, axis=1),
    pick=lambda v, y: np.take_along_axis(v, y[:, None], axis=1)[:, 0],
    mean_rows=lambda x: x.mean(axis=1),
    sum_rows=lambda x: x.sum(axis=1),
    take=lambda w, y: w[y],
    where=np.where,
    total=np.sum,
    cast_like=lambda mask, like: mask.astype(np.asarray(like).dtype),
)


def loss_with_options(path, path_fn, x, y, arrays: opt.NativeArrays, options: opt.CellOptions, own=()):
    with np.errstate(all="ignore"):  # overflow and 0 * inf are what is measured, not warnings
        return opt.compose(OPS, path, path_fn, x, arrays, options, own)
