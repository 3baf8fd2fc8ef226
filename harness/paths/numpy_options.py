"""NumPy with the loss options: every option composed by hand (SciPy has no loss options).

``loss_with_options(path, path_fn, x, y, arrays, options)``: see harness.paths.options. `fused`
is scipy.special.logsumexp(x') - x'[y] with the options around it, like every other path.
Gradients: none with options (NumPy's backward passes are hand-written for the bare loss).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import scipy.special

from harness.paths import options as opt
from harness.paths.numpy_paths import PATHS

BUILTIN_PATHS = tuple(PATHS)


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
