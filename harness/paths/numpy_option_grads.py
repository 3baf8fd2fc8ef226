"""NumPy's backward pass of the loss with options, written by hand: the reverse sweep of
`harness.paths.options.compose` over NumPy's OPS, around each path's own backward pass
(`harness.paths.numpy_paths.GRADIENTS`), in the dtype, as the bare paths' passes are written.

``gradient_with_options(path, path_fn, x, arrays, options, upstream=None) -> g`` (x's shape and
dtype): d(upstream . loss)/dx, with upstream one per row for reduction none (default all 1, what
autodiff of the summed rows gives) and one number for mean and sum (default 1). Per row, with x' the
soft-capped logits, u the row's cotangent and q the target the row's loss puts on x'
(onehot(y) smoothed by e, or the dense target), the sweep forms

    d row / d x' = (1 - e) d base + e (onehot(y) - 1/C) + 2 z lse d lse       (index target)
                 = -d(sum_j q_j log p_j) + 2 z lse d lse                      (dense target)

where `d base` is the path's own gradient of its per-row loss and lse = base + x'[y] (as the
composition computes it: the path's own log-sum-exp); in exact arithmetic both are
(sum_j q_j + 2 z lse) softmax(x') - q. Then u_i = g_out w[y_i] (times 1 / sum of the kept rows'
w[y] for mean), 0 at ignored rows, and the soft-cap x' = c tanh(x / c) adds the factor
1 - tanh(x / c)^2. The path's gradient comes with cotangent 1 and is scaled by the row's cotangent
afterwards (autodiff carries the cotangent through instead: the two differ by a rounding or two).
"""

from __future__ import annotations

import functools

import numpy as np

from harness.dtypes import round_to
from harness.paths import numpy_paths
from harness.paths import options as opt


def gradient_with_options(path, path_fn, x, arrays: opt.NativeArrays, options: opt.CellOptions, upstream=None):
    """d(upstream . loss)/dx of a built-in NumPy path composed with the options (see the module)."""
    with np.errstate(all="ignore"):  # overflow and 0 * inf are what is measured, not warnings
        xc = softcapped(x, options)
        if options.target == "dense":
            rows_dtype = dense_rows_dtype(xc, options)
            g_rows = row_cotangents(rows_dtype, arrays, options, upstream)
            g_xc = dense_backward(path, xc, arrays.targets, g_rows, options)
        else:
            labels = arrays.safe_labels
            base = path_fn(xc, labels)
            g_rows = row_cotangents(np.result_type(base, xc), arrays, options, upstream)
            g_xc = index_backward(path_gradient(path, path_fn), xc, labels, base, g_rows, options)
        g_xc = g_xc if g_xc.dtype == x.dtype else round_to(g_xc, x.dtype.name)  # a promotion's backward
        return softcap_backward(x, g_xc, options)


def path_gradient(path: str, path_fn):
    """The path's own backward pass, with the chunk or block size its loss was bound to."""
    return functools.partial(numpy_paths.GRADIENTS[path], **getattr(path_fn, "keywords", {}))


def softcapped(x, options: opt.CellOptions):
    """c tanh(x / c) in x's dtype, as `options.softcapped` computes it with NumPy's OPS."""
    if options.softcap is None:
        return x
    c = x.dtype.type(options.softcap)
    return c * np.tanh(x / c)


def softcap_backward(x, g_xc, options: opt.CellOptions):
    """x' = c tanh(x / c), step by step: g_t = g c, g_u = g_t (1 - t^2), g_x = g_u / c."""
    if options.softcap is None:
        return g_xc
    c = x.dtype.type(options.softcap)
    t = np.tanh(x / c)
    one = x.dtype.type(1)
    return ((g_xc * c) * (one - t * t)) / c


def row_cotangents(dtype, arrays: opt.NativeArrays, options: opt.CellOptions, upstream=None):
    """The cotangent of each row's unweighted loss: the backward of `options.reduced` (weights,
    mask, reduction), in the dtype the rows are computed in."""
    dtype = np.dtype(dtype)
    kept = np.asarray(arrays.kept)
    w = None if arrays.weights is None else arrays.weights[arrays.safe_labels]
    zero = dtype.type(0)
    if options.reduction == "none":
        g = np.ones(kept.shape, dtype) if upstream is None else np.asarray(upstream).astype(dtype)
    else:
        g_total = dtype.type(1 if upstream is None else upstream)
        if options.reduction == "mean":
            if w is None:
                count = np.sum(kept.astype(dtype))
            else:
                count = np.sum(np.where(kept, w, zero) if arrays.any_ignored else w)
            g_total = g_total / count
        g = np.full(kept.shape, g_total)
    if arrays.any_ignored:
        g = np.where(kept, g, zero)
    return g if w is None else g * w


def z_loss_backward(g_rows, lse, options: opt.CellOptions):
    """The cotangent of lse from z lse^2 = (z lse) lse: g (z lse) + (g lse) z."""
    z = np.asarray(lse).dtype.type(options.z_loss)
    return g_rows * (z * lse) + (g_rows * lse) * z


def index_backward(base_gradient, xc, labels, base, g_rows, options: opt.CellOptions):
    """Reverse sweep of base + e (x'[y] - mean x') + z (base + x'[y])^2 (base: the path's loss)."""
    rows = np.arange(len(labels))
    picked = xc[rows, labels]
    g_base = g_rows
    g_picked = np.zeros_like(g_rows)
    g_mean = None
    if options.label_smoothing:
        g_smooth = g_rows * xc.dtype.type(options.label_smoothing)
        g_picked = g_picked + g_smooth
        g_mean = -g_smooth
    if options.z_loss:
        g_lse = z_loss_backward(g_rows, base + picked, options)
        g_base = g_base + g_lse
        g_picked = g_picked + g_lse
    g_xc = g_base[:, None] * base_gradient(xc, labels)
    g_xc[rows, labels] += g_picked
    if g_mean is not None:
        g_xc += (g_mean / xc.dtype.type(xc.shape[1]))[:, None]  # mean = sum / C
    return g_xc


def dense_rows_dtype(xc, options: opt.CellOptions) -> np.dtype:
    """The dense rows' dtype: x's, or SciPy's logsumexp's (float64 for bfloat16) with a z-loss."""
    if not options.z_loss:
        return xc.dtype
    return np.result_type(xc.dtype, numpy_paths.scipy_logsumexp_dtype(xc.dtype))


def dense_backward(path, xc, targets, g_rows, options: opt.CellOptions):
    """Reverse sweep of sum(-log p * t) + z lse(x')^2, log p as the path takes it: log(softmax(x'))
    for softmax_log, scipy.special.log_softmax for the others; lse is SciPy's logsumexp."""
    g_log_p = -(g_rows[:, None] * targets)
    g_xc = softmax_log_backward(xc, g_log_p) if path == "softmax_log" else log_softmax_backward(xc, g_log_p)
    if options.z_loss:
        parts = numpy_paths._scipy_logsumexp_parts(xc)
        g_lse = z_loss_backward(g_rows, parts["lse"], options)
        d_lse = numpy_paths._scipy_logsumexp_gradient(parts)
        g_xc = g_xc + g_lse[:, None] * d_lse
    return g_xc


def softmax_log_backward(xc, g_log_p):
    """log(p), p = scipy.special.softmax(x'): e = exp(x' - max), p = e / s, s = sum(e); the max a
    constant. Division as torch's backward: g_e = g_p / s, g_s = -sum(g_p (p / s))."""
    e, s, p = numpy_paths._softmax_parts(xc)
    g_p = g_log_p / p
    g_s = -(g_p * (p / s)).sum(axis=1, keepdims=True)
    return (g_p / s + g_s) * e


def log_softmax_backward(xc, g_log_p):
    """scipy.special.log_softmax: t = x' - max (a non-finite max taken as 0), e = exp(t),
    log p = t - log(s), s = sum(e): g_t = g + (-sum(g) / s) e."""
    top = xc.max(axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, top.dtype.type(0))
    e = np.exp(xc - top)
    s = e.sum(axis=1, keepdims=True)
    g_s = -g_log_p.sum(axis=1, keepdims=True) / s
    return g_log_p + g_s * e
