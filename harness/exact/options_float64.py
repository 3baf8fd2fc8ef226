"""The float64 route of `harness.exact.options`, for outputs of at most 24 significand bits.

The same formulas as the double-double route, without cancellation, in float64: the differences
x'_j - s and s - m by two_sum (exact), exp of them to first order in the low part, one log1p,
pairwise sums of non-negative terms. Each row's loss and gradient is then good to about
(6 + log2 C) 2**-53 relative (<= 2**-45 for C <= 32768), plus, with a soft-cap, the rounding of
x' = c tanh(x / c) to float64 (np.tanh): about 2**-51 c absolute in x', so 2**-50 c relative
in the loss; used for c <= 64 only (2**-44). That is 20 bits beyond float32's 2**-24. Rows whose
T = sum_{j != argmax} exp(x'_j - m) is below 2**-960 (a loss or gradient that may underflow),
rows with a NaN or +inf, and larger soft-caps are left to the double-double route (`needs_dd`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from harness.exact import dd

SOFTCAP_UP_TO = 64.0  # the float64 route's bound holds for soft-caps up to this
_SMALLEST_T = 2.0**-960  # T below this may have lost digits to underflow: the double-double route


class _Row(NamedTuple):
    xc: np.ndarray  # x', float64
    top: np.ndarray
    m: np.ndarray
    below_top: tuple  # x' - m as (hi, lo), exact (two_sum)
    t: np.ndarray  # T = sum_{j != top} exp(x'_j - m)
    log_term: np.ndarray  # L = log1p(T)
    needs_dd: np.ndarray


def _shared(x, c) -> _Row:
    xc = x if c is None else c * np.tanh(x / c)
    rows = np.arange(x.shape[0])
    top = np.argmax(xc, axis=1)  # a NaN is the argmax
    m = xc[rows, top]
    needs_dd = ~np.isfinite(m)  # a NaN, a +inf, or every logit -inf
    dh, dl = dd.two_sum(xc, -m[:, None])
    terms = np.exp(dh)
    terms += terms * dl
    terms[rows, top] = 0.0
    t = terms.sum(axis=1)
    masked = np.isnan(t) & ~needs_dd  # exp(-inf) = 0 times a NaN low part
    if masked.any():
        t[masked] = np.where(np.isneginf(xc[masked]), 0.0, terms[masked]).sum(axis=1)
    small = (t < _SMALLEST_T) & ~needs_dd  # may have underflowed, unless every other logit is -inf
    if small.any():
        needs_dd[small] = np.isfinite(xc[small]).sum(axis=1) > 1
    return _Row(xc, top, m, (dh, dl), t, np.log1p(t), needs_dd)


def float64_losses(x, labels, targets, options):
    """(loss per row, needs_dd): sum_j t_j ((m - x'_j) + L) + z (m + L)^2 in float64."""
    r = _shared(x, options.softcap)
    rows = np.arange(len(labels))
    e = options.label_smoothing
    if targets is not None:
        u = (r.m[:, None] - r.xc) + r.log_term[:, None]
        loss = np.where(targets == 0, 0.0, targets * u).sum(axis=1)
    else:
        loss = (1.0 - e) * ((r.m - r.xc[rows, labels]) + r.log_term)
        if e:
            loss = loss + e * (r.log_term + (r.m[:, None] - r.xc).mean(axis=1))
    if options.z_loss:
        loss = loss + options.z_loss * (r.m + r.log_term) ** 2
    return loss, r.needs_dd


def _cap_slope(x, c):
    """sech^2(x / c) = 4 e / (1 + e)^2, e = exp(-2 |u|) with u = x / c in double-double."""
    q = x / c
    finite = np.abs(q) < 2.0**39
    q = np.where(finite, q, 0.0)
    p, pe = dd.two_prod(q, c)
    ql = ((np.where(finite, x, 0.0) - p) - pe) / c
    e = np.exp(-2.0 * np.abs(q)) * (1.0 - 2.0 * ql * np.sign(q))
    return np.where(finite, 4.0 * e / (1.0 + e) ** 2, 0.0)


def float64_gradient(x, labels, targets, options, scale):
    """(d(sum_i scale_i loss_i)/dx, needs_dd): scale_i (p_j (A + 2 z lse) - t_j) times sech^2;
    the argmax entry as (A - t_k) - A T p_k + 2 z lse p_k (no cancellation for a confident row)."""
    r = _shared(x, options.softcap)
    rows = np.arange(len(labels))
    e, classes = options.label_smoothing, x.shape[1]
    dense = targets
    if targets is None:
        targets = np.full(x.shape, e / classes)
        targets[rows, labels] += 1.0 - e
        total = np.ones(len(rows))
    else:
        total = targets.sum(axis=1)
    dh, dl = r.below_top
    p = np.exp(dh - r.log_term[:, None]) * (1.0 + np.where(np.isfinite(dh), dl, 0.0))
    two_z_lse = 2.0 * options.z_loss * (r.m + r.log_term)
    g = p * (total + two_z_lse)[:, None] - targets
    p_top = np.exp(-r.log_term)
    if dense is None:  # sum_{j != k} t_j, not 1 - t_k: keeps its digits for small e
        off_top = (classes - 1) * (e / classes) + (1.0 - e) * (labels != r.top)
    else:
        off_top = total - targets[rows, r.top]
    g[rows, r.top] = off_top - total * r.t * p_top + two_z_lse * p_top
    g *= (scale[:, 0] + scale[:, 1])[:, None]  # scale (rows, 2): a dd per row
    if options.softcap is not None:
        g *= _cap_slope(x, options.softcap)
    infinite = (np.isneginf(r.xc) & (targets > 0)).any(axis=1)
    return np.where(infinite[:, None], np.nan, g), r.needs_dd
