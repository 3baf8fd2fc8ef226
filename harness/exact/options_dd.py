"""The double-double route of `harness.exact.options`: soft-cap, per-row loss and gradient.

The soft-cap c tanh(x / c) is evaluated in double-double: tanh = (1 - e) / (1 + e) with
e = exp(-2|u|) from dd.scaled_exp and u = x / c in dd, its slope 4 e / (1 + e)^2 from the same e.
So x' is a dd pair and the row goes through the exact head's route from dd logits
(`harness.exact.head`): T, L = lse - m and the differences m - x'_j >= 0. Every term
t_j ((m - x'_j) + L) is non-negative, as are e (lse - mean) >= e log C and z lse^2: the sum has no
cancellation. The label at the argmax keeps L (= T when T < 2**-80) with its exponent, so a
confident row's tiny loss keeps its digits. Masked logits (-inf, no soft-cap) are replaced by a
finite stand-in whose exp is 0 in dd.exp, and marked: the caller's rules for +inf apply.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from harness.exact import dd
from harness.exact.dd import ExactValue
from harness.exact.head import _exact_value, _rows

_CAP_FAR = 2.0**39  # |x / c| from here: tanh = +-1, sech^2 below exp(-2**40)


# --- double-double helpers ------------------------------------------------------------------------


def _div(ah, al, bh, bl):
    """a / b in double-double: two quotient digits (about 2**-104 relative)."""
    q1 = ah / bh
    rh, rl = dd.add(ah, al, *(-part for part in dd.mul(q1, np.zeros_like(q1), bh, bl)))
    q2 = rh / bh
    rh, _ = dd.add(rh, rl, *(-part for part in dd.mul(q2, np.zeros_like(q2), bh, bl)))
    return dd.add(q1, np.zeros_like(q1), q2, rh / bh)


def _times(a: ExactValue, b: ExactValue) -> ExactValue:
    """a * b, each taken as mantissa times power of two first: nothing underflows."""
    ma, ea = np.frexp(a.hi)
    mb, eb = np.frexp(b.hi)
    hi, lo = dd.mul(ma, np.ldexp(a.lo, -ea), mb, np.ldexp(b.lo, -eb))
    return _exact_value(hi, lo, a.exponent + ea + b.exponent + eb)


def _as_dd(value: ExactValue):
    """(hi, lo) with the exponent applied: exact from 2**-960 up, 2**-1074 absolute below."""
    return np.ldexp(value.hi, value.exponent), np.ldexp(value.lo, value.exponent)


# --- the soft-cap ---------------------------------------------------------------------------------


def _over_cap(x, c):
    """u = x / c in double-double (|u| < 2**39), and where |u| is beyond it (or not a number)."""
    q = x / c
    far = ~(np.abs(q) < _CAP_FAR)
    q = np.where(far, 0.0, q)
    p, pe = dd.two_prod(q, c)
    return q, ((np.where(far, 0.0, x) - p) - pe) / c, far


class _Cap(NamedTuple):
    """What c tanh(x / c) and its slope share: e = exp(-2 |u|), 1 / (1 + e), sign(u), |u| beyond 2**39."""

    e: ExactValue
    inverse: tuple
    sign: np.ndarray
    far: np.ndarray


def _cap_parts(x, c) -> _Cap:
    qh, ql, far = _over_cap(x, c)
    e = dd.scaled_exp(-2.0 * np.abs(qh), -2.0 * ql * np.sign(qh))
    e = ExactValue(*(np.where(far, 0, part) for part in e))
    ones = np.ones_like(qh)
    return _Cap(e, _div(ones, 0.0 * ones, *dd.add(ones, 0.0 * ones, *_as_dd(e))), np.sign(x), far)


def capped(x, c, cap: _Cap | None = None):
    """c tanh(x / c) as a dd pair: sign(u) c (1 - e) / (1 + e)."""
    cap = _cap_parts(x, c) if cap is None else cap
    eh, el = _as_dd(cap.e)
    th, tl = dd.mul(*dd.add(1.0, 0.0, -eh, -el), *cap.inverse)
    hi, lo = dd.mul(th, tl, np.full_like(th, c), np.zeros_like(th))
    return cap.sign * hi, cap.sign * lo


def cap_slope(x, c, cap: _Cap | None = None) -> ExactValue:
    """d(c tanh(x / c))/dx = sech^2(x / c) = 4 e / (1 + e)^2; 0 at +-inf."""
    cap = _cap_parts(x, c) if cap is None else cap
    hi, lo = dd.mul(*dd.mul(4.0 * cap.e.hi, 4.0 * cap.e.lo, *cap.inverse), *cap.inverse)
    return _exact_value(hi, lo, cap.e.exponent)


# --- what loss and gradient share -------------------------------------------------------------------


class _Row(NamedTuple):
    zh: np.ndarray  # x' as dd (masked logits replaced by a finite stand-in)
    zl: np.ndarray
    masked: np.ndarray  # x' = -inf
    undefined: np.ndarray  # (rows,): NaN, +inf (no soft-cap) or all -inf
    top: np.ndarray
    below_top: tuple  # x' - m <= 0, dd
    t: ExactValue  # T = sum_{j != top} exp(x'_j - m)
    log_h: np.ndarray  # L = log1p(T) = lse - m
    log_l: np.ndarray
    tiny: np.ndarray
    cap: _Cap | None  # with a soft-cap


def _shared(x, c) -> _Row:
    cap = None
    if c is not None:
        cap = _cap_parts(x, c)
        zh, zl = capped(x, c, cap)
        masked, undefined = np.zeros(x.shape, bool), np.isnan(x).any(axis=1)
    else:
        masked, finite = np.isneginf(x), np.isfinite(x)
        undefined = (np.isnan(x) | np.isposinf(x)).any(axis=1) | ~finite.any(axis=1)
        low = np.where(finite, x, np.inf).min(axis=1)
        low = np.where(np.isfinite(low), low, 0.0)
        stand_in = low - 2048.0 - np.abs(low)  # exp(stand_in - any finite logit) is 0 in dd.exp
        zh = np.where(finite, x, stand_in[:, None])
        zh[undefined] = 0.0
        zl = np.zeros_like(zh)
    r = _rows(zh, zl)
    t = r.t
    if masked.any():  # one finite logit: T = 0, not exp(stand_in - m)
        alone = (~masked).sum(axis=1) == 1
        t = ExactValue(*(np.where(alone, 0, part) for part in t))
    return _Row(zh, zl, masked, undefined, r.top, r.below_top, t, r.log_h, r.log_l, r.tiny, cap)


def _targets(labels, targets, e: float, shape):
    """t as a dd pair (rows, classes): the given dense targets, or (1 - e) onehot + e / C."""
    if targets is not None:
        return targets, np.zeros_like(targets)
    rows = np.arange(shape[0])
    sh, sl = _div(np.float64(e), 0.0, np.float64(shape[1]), 0.0)
    th, tl = np.full(shape, sh), np.full(shape, sl)
    kh, kl = dd.two_sum(1.0, -e)  # 1 - e, exact
    th[rows, labels], tl[rows, labels] = dd.add(sh, sl, kh, kl)
    return th, tl


def _lse(r: _Row):
    rows = np.arange(len(r.top))
    return dd.add(r.zh[rows, r.top], r.zl[rows, r.top], r.log_h, r.log_l)


def _log_term(r: _Row) -> ExactValue:
    """L = lse - m as an ExactValue: T itself, exponent and all, when T < 2**-80."""
    return ExactValue(
        np.where(r.tiny, r.t.hi, r.log_h), np.where(r.tiny, r.t.lo, r.log_l), np.where(r.tiny, r.t.exponent, 0)
    )


def _z_term(r: _Row, z: float):
    """z lse^2, dd."""
    lh, ll = _lse(r)
    return dd.mul(*dd.mul(lh, ll, lh, ll), np.full(len(lh), z), np.zeros(len(lh)))


# --- the per-row loss -----------------------------------------------------------------------------


def _off_top(r: _Row, labels, targets, e: float):
    """sum_{j != k} t_j ((m - x'_j) + L), k the argmax: for the index target from the label's entry
    and one sum of m - x'_j (no product per entry); for dense targets entry by entry."""
    rows = np.arange(len(labels))
    uh, ul = dd.add(-r.below_top[0][rows, labels], -r.below_top[1][rows, labels], r.log_h, r.log_l)
    if targets is not None:
        uh, ul = dd.add(-r.below_top[0], -r.below_top[1], r.log_h[:, None], r.log_l[:, None])
        ph, pl = dd.mul(targets, np.zeros_like(targets), uh, ul)
        ph[rows, r.top], pl[rows, r.top] = 0.0, 0.0
        return dd.sum_rows(np.where(targets == 0, 0.0, ph), np.where(targets == 0, 0.0, pl))
    keep = np.where(labels == r.top, 0.0, 1.0)  # the label's term, unless the label is the argmax
    rest = dd.mul(uh, ul, *(part * keep for part in dd.two_sum(np.full(len(rows), 1.0), -e)))
    if not e:
        return rest
    sh, sl = dd.sum_rows(-r.below_top[0], -r.below_top[1])  # sum_j (m - x'_j), 0 at the argmax
    n_h, n_l = dd.two_prod(np.full(len(rows), r.below_top[0].shape[1] - 1.0), r.log_h)
    others = dd.add(sh, sl, n_h, n_l + (r.below_top[0].shape[1] - 1.0) * r.log_l)
    smooth = dd.mul(*others, *_div(np.float64(e), 0.0, np.float64(r.below_top[0].shape[1]), 0.0))
    return dd.add(*rest, *smooth)


def _block_losses(x, labels, targets, options) -> ExactValue:
    r = _shared(x, options.softcap)
    rows = np.arange(len(labels))
    th, tl = _targets(labels, targets, options.label_smoothing, x.shape)
    rest_h, rest_l = _off_top(r, labels, targets, options.label_smoothing)
    top = _times(ExactValue.of(th[rows, r.top], tl[rows, r.top]), _log_term(r))
    total_h, total_l = dd.add(rest_h, rest_l, *_as_dd(top))
    if options.z_loss:
        total_h, total_l = dd.add(total_h, total_l, *_z_term(r, options.z_loss))
    just_top = (rest_h == 0) & (options.z_loss == 0)
    loss = ExactValue(*(np.where(just_top, a, b) for a, b in zip(top, ExactValue.of(total_h, total_l), strict=True)))
    infinite = (r.masked & (th > 0)).any(axis=1)
    return _with_rows(loss, infinite, np.inf, r.undefined, np.nan)


def _with_rows(value: ExactValue, where_a, a, where_b, b) -> ExactValue:
    shape = (-1,) + (1,) * (value.hi.ndim - 1)
    hi = np.where(where_a.reshape(shape), a, value.hi)
    hi = np.where(where_b.reshape(shape), b, hi)
    lo = np.where((where_a | where_b).reshape(shape), 0.0, value.lo)
    return ExactValue(hi, lo, np.where((where_a | where_b).reshape(shape), 0, value.exponent))


def _block_gradient(x, labels, targets, options, scale) -> ExactValue:
    """d(sum_i scale_i loss_i)/dx, scale (rows, 2) a dd per row:
    scale_i (p_j (A + 2 z lse) - t_j), A = sum_j t_j, times sech^2."""
    scale = (scale[:, 0], scale[:, 1])
    r = _shared(x, options.softcap)
    rows = np.arange(len(labels))
    th, tl = _targets(labels, targets, options.label_smoothing, x.shape)
    p = dd.scaled_exp(*dd.add(*r.below_top, -r.log_h[:, None], -r.log_l[:, None]))
    p = ExactValue(*(np.where(r.masked, 0, part) for part in p))
    a_h, a_l = dd.sum_rows(th, tl)
    lse_h, lse_l = _lse(r)
    z2 = np.full(len(rows), 2.0 * options.z_loss)
    f_h, f_l = dd.add(a_h, a_l, *dd.mul(lse_h, lse_l, z2, np.zeros_like(z2)))  # A + 2 z lse
    g = _times(p, ExactValue.of(f_h[:, None], f_l[:, None]))
    dh, dl = dd.add(*_as_dd(g), -th, -tl)
    subtract = th != 0
    hi, lo = np.where(subtract, dh, g.hi), np.where(subtract, dl, g.lo)
    exponent = np.where(subtract, 0, g.exponent)
    # the argmax k: (A - t_k) - A (1 - p_k) + 2 z lse p_k, with 1 - p_k = T p_k
    infinite = (r.masked & (th > 0)).any(axis=1)  # the argmax is never masked
    th, tl = th.copy(), tl.copy()
    th[rows, r.top], tl[rows, r.top] = 0.0, 0.0
    rest_h, rest_l = dd.sum_rows(th, tl)
    p_top = dd.exp(-r.log_h, -r.log_l)
    gone = _times(ExactValue.of(a_h, a_l), _times(r.t, ExactValue.of(*p_top)))  # A (1 - p_k)
    k_h, k_l = dd.add(rest_h, rest_l, *(-part for part in _as_dd(gone)))
    k_h, k_l = dd.add(k_h, k_l, *dd.mul(*dd.mul(lse_h, lse_l, z2, np.zeros_like(z2)), *p_top))
    just_gone = (rest_h == 0) & (options.z_loss == 0)
    hi[rows, r.top] = np.where(just_gone, -gone.hi, k_h)
    lo[rows, r.top] = np.where(just_gone, -gone.lo, k_l)
    exponent[rows, r.top] = np.where(just_gone, gone.exponent, 0)
    value = _times(ExactValue(hi, lo, exponent), ExactValue.of(scale[0][:, None], scale[1][:, None]))
    if options.softcap is not None:
        value = _times(value, cap_slope(x, options.softcap, r.cap))
    undefined = infinite | r.undefined  # the gradient of an infinite loss, or of an undefined one
    return _with_rows(value, undefined, np.nan, np.zeros(len(rows), bool), 0.0)
