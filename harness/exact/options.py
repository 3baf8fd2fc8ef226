"""Exact references for the loss as trained: label smoothing, z-loss, soft-cap, dense targets,
masked logits, class weights, ignored rows, the mean or sum over the kept rows, and gradients.

Like the other references it is given dtype-rounded logits held in float64 and knows nothing of
frameworks. Per row, with x' the logits (or c tanh(x / c) with a soft-cap) and t the target,

    loss = sum_j t_j (lse(x') - x'_j) + z lse(x')^2,
    t = (1 - e) onehot(y) + e / C  (target=index, or dense built from the labels),

which for the index target is (1 - e)(lse - x'[y]) + e (lse - mean(x')) + z lse^2; a dense target
is given as an array (rows, classes) of non-negative float64s. Class weights scale the whole row
by w[y] (`row_weights`); sum = sum_i w[y_i] loss_i over the kept rows, mean = that sum /
sum_i w[y_i] (F.cross_entropy(weight=, ignore_index=) without smoothing); an ignored row is 0.

**How.** The soft-cap is evaluated in double-double (tanh from dd.exp), so x' is a dd pair and the
row goes through the exact head's route from dd logits (`harness.exact.head`): T, L = lse - m and
the differences m - x'_j >= 0. Every term t_j ((m - x'_j) + L) is non-negative, as are
e (lse - mean) >= e log C and z lse^2: the sum has no cancellation. The label at the argmax keeps
L (= T when T < 2**-80) with its exponent, so a confident row's tiny loss keeps its digits.

**Masked logits** (-inf, no soft-cap) add exp(-inf) = 0 and 0 (-inf) = 0: a masked class with
t_j = 0 changes nothing, one with t_j > 0 gives +inf, the exact value of the formula. So a -inf at
the label gives +inf, and so does any -inf with e > 0 (mean(x') = -inf); torch's label_smoothing
then returns inf or NaN. With a soft-cap a -inf logit is c tanh(-inf) = -c, finite. Undefined, NaN:
a row of all -inf, a row with a NaN (or, without soft-cap, a +inf) logit, and the gradient of an
infinite loss.

**Bounds.** Loss: 2**-75 relative (about 2**-95 measured against mpmath), except that z lse^2 has
an absolute error of about 2**-100 z |lse| max|x'| (lse = m + L may cancel) and a soft-cap adds an
absolute error of about 2**-100 c to x' (so c up to 2**20 keeps 2**-75). A loss below 2**-960
keeps its relative accuracy only for the plain index target (e = z = 0). Reductions: sums of
non-negative values in exact slices (`_sliced_sum`), relative error below 2**-100, any n.
Gradient: p_j (A + 2 z w lse) - t_j per entry, the argmax entry as (A - t_k) - A (1 - p_k) + ...
with 1 - p_k = T p_k; each entry to about 2**-95 of max(p_j, t_j), hence 2**-75 of the row's
largest entry unless p matches t to 20 bits; exact to 2**-75 of itself for e = 0 index targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from harness.exact import dd
from harness.exact.dd import ExactValue
from harness.exact.head import _exact_value, _rows
from harness.exact.options_float64 import SOFTCAP_UP_TO, float64_gradient, float64_losses
from harness.exact.reference import FLOAT64_ROUTE_UP_TO

REDUCTIONS = ("none", "mean", "sum")
TARGETS = ("index", "dense")
BLOCK_ELEMENTS = 2**18  # logits per block of rows: bounded temporaries for 10**7 rows
_CAP_FAR = 2.0**39  # |x / c| from here: tanh = +-1, sech^2 below exp(-2**40)


@dataclass(frozen=True, eq=False)
class LossOptions:
    """The options of one loss as trained (the arrays are the dtype-rounded ones the framework sees)."""

    label_smoothing: float = 0.0
    z_loss: float = 0.0
    softcap: float | None = None
    class_weights: np.ndarray | None = None  # (classes,) >= 0, or None: w = 1
    target: str = "index"
    dense_targets: np.ndarray | None = None  # (rows, classes) >= 0; None: (1 - e) onehot + e / C
    ignored: np.ndarray | None = None  # (rows,) bool: rows whose label is the ignore index

    def __post_init__(self):
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={self.label_smoothing} is outside [0, 1)")
        if not self.z_loss >= 0.0 or not np.isfinite(self.z_loss):
            raise ValueError(f"z_loss={self.z_loss} must be finite and >= 0")
        if self.softcap is not None and not (0.0 < self.softcap < np.inf):
            raise ValueError(f"softcap={self.softcap} must be > 0 (or None)")
        if self.target not in TARGETS:
            raise ValueError(f"target={self.target!r} is not one of {', '.join(TARGETS)}")


def _checked(logits, labels, options: LossOptions):
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"logits must be (rows, classes>=2), got shape {x.shape}")
    rows, classes = x.shape
    ignored = np.zeros(rows, bool) if options.ignored is None else np.asarray(options.ignored, bool)
    labels = np.zeros(rows, np.int64) if labels is None else np.asarray(labels)
    if ignored.shape != (rows,) or labels.shape != (rows,):
        raise ValueError(f"need labels and ignored (rows,) = ({rows},), got {labels.shape}, {ignored.shape}")
    if labels.dtype.kind not in "iu" or np.any((labels[~ignored] < 0) | (labels[~ignored] >= classes)):
        raise ValueError(f"kept labels must be integers in [0, {classes}), got {labels[~ignored][:8].tolist()}")
    weights = options.class_weights
    if weights is not None and (np.shape(weights) != (classes,) or not np.all(np.asarray(weights) >= 0)):
        raise ValueError(f"class_weights must be (classes,) = ({classes},), finite, >= 0")
    targets = options.dense_targets
    if targets is not None:
        targets = np.asarray(targets, dtype=np.float64)
        if targets.shape != x.shape or not np.all((targets >= 0) & (targets < np.inf)):
            raise ValueError(f"dense_targets must be {x.shape}, finite, >= 0, got {targets.shape}")
    return x, np.where(ignored, 0, labels).astype(np.int64), ignored, targets


def row_weights(labels, options: LossOptions) -> np.ndarray:
    """w[y_i] of each kept row (1 without class weights), 0 for ignored rows: the mean's divisor."""
    labels = np.asarray(labels)
    ignored = np.zeros(len(labels), bool) if options.ignored is None else np.asarray(options.ignored, bool)
    safe = np.where(ignored, 0, labels)
    w = np.ones(len(labels)) if options.class_weights is None else np.asarray(options.class_weights, float)[safe]
    return np.where(ignored, 0.0, w)


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


def _blocks(rows: int, classes: int):
    step = max(1, BLOCK_ELEMENTS // classes)
    return [slice(i, i + step) for i in range(0, rows, step)] or [slice(0, 0)]


def _joined(parts) -> ExactValue:
    return ExactValue(*(np.concatenate(p) for p in zip(*parts, strict=True)))


# --- the soft-cap ---------------------------------------------------------------------------------


def _over_cap(x, c):
    """u = x / c in double-double (|u| < 2**39), and where |u| is beyond it (or not a number)."""
    q = x / c
    far = ~(np.abs(q) < _CAP_FAR)
    q = np.where(far, 0.0, q)
    p, pe = dd.two_prod(q, c)
    return q, ((np.where(far, 0.0, x) - p) - pe) / c, far


def capped(x, c):
    """c tanh(x / c) as a dd pair: sign(u) c (1 - e) / (1 + e), e = exp(-2 |u|)."""
    qh, ql, far = _over_cap(x, c)
    sign = np.where(far, np.sign(x), np.sign(qh))
    arg_h = np.where(far | (np.abs(qh) > 500), -1000.0, -2.0 * np.abs(qh))
    eh, el = dd.exp(arg_h, np.where(arg_h == -1000.0, 0.0, -2.0 * ql * np.sign(qh)))
    th, tl = _div(*dd.add(1.0, 0.0, -eh, -el), *dd.add(1.0, 0.0, eh, el))
    hi, lo = dd.mul(th, tl, np.full_like(th, c), np.zeros_like(th))
    return sign * hi, sign * lo


def cap_slope(x, c) -> ExactValue:
    """d(c tanh(x / c))/dx = sech^2(x / c) = 4 e / (1 + e)^2, e = exp(-2 |u|); 0 at +-inf."""
    qh, ql, far = _over_cap(x, c)
    e = dd.scaled_exp(-2.0 * np.abs(qh), -2.0 * ql * np.sign(qh))
    oh, ol = dd.add(1.0, 0.0, *_as_dd(e))
    hi, lo = _div(4.0 * e.hi, 4.0 * e.lo, *dd.mul(oh, ol, oh, ol))
    return _exact_value(np.where(far, 0.0, hi), np.where(far, 0.0, lo), e.exponent)


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


def _shared(x, c) -> _Row:
    if c is not None:
        zh, zl = capped(x, c)
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
    return _Row(zh, zl, masked, undefined, r.top, r.below_top, t, r.log_h, r.log_l, r.tiny)


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


def _z_term(r: _Row, z: float, scale):
    """z lse^2 (times scale per row), dd."""
    lh, ll = _lse(r)
    zh, zl = dd.two_prod(np.full(len(lh), z), scale)
    return dd.mul(*dd.mul(lh, ll, lh, ll), zh, zl)


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


def _block_losses(x, labels, targets, options: LossOptions) -> ExactValue:
    r = _shared(x, options.softcap)
    rows = np.arange(len(labels))
    th, tl = _targets(labels, targets, options.label_smoothing, x.shape)
    rest_h, rest_l = _off_top(r, labels, targets, options.label_smoothing)
    top = _times(ExactValue.of(th[rows, r.top], tl[rows, r.top]), _log_term(r))
    total_h, total_l = dd.add(rest_h, rest_l, *_as_dd(top))
    if options.z_loss:
        total_h, total_l = dd.add(total_h, total_l, *_z_term(r, options.z_loss, np.ones(len(rows))))
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


def _float64_route(options: LossOptions, output_precision: int) -> bool:
    small_cap = options.softcap is None or options.softcap <= SOFTCAP_UP_TO
    return output_precision <= FLOAT64_ROUTE_UP_TO and small_cap


def _routed(float64_route, dd_route, x, labels, targets, *rest) -> ExactValue:
    """float64_route on the block, dd_route on the rows it leaves (needs_dd)."""
    value, needs_dd = float64_route(x, labels, targets, *rest)
    value = ExactValue.of(value, np.zeros_like(value))
    if needs_dd.any():
        picked = [part[needs_dd] for part in rest[1:]]  # per-row arguments (the gradient's scale)
        targets = None if targets is None else targets[needs_dd]
        exact = dd_route(x[needs_dd], labels[needs_dd], targets, rest[0], *picked)
        for part, replacement in zip(value, exact, strict=True):
            part[needs_dd] = replacement
    return value


def exact_row_losses(logits, labels, options: LossOptions, output_precision: int = 53) -> ExactValue:
    """The exact loss of each row, unweighted (see `exact_reduced` for w[y]); 0 at ignored rows.
    For outputs of at most 24 significand bits, the float64 route (2**-44, `options_float64`)."""
    x, labels, ignored, targets = _checked(logits, labels, options)
    fast = _float64_route(options, output_precision)
    parts = []
    with np.errstate(invalid="ignore", over="ignore", under="ignore", divide="ignore"):
        for b in _blocks(*x.shape):
            block_targets = None if targets is None else targets[b]
            if fast:
                parts.append(_routed(float64_losses, _block_losses, x[b], labels[b], block_targets, options))
            else:
                parts.append(_block_losses(x[b], labels[b], block_targets, options))
    loss = _joined(parts)
    return ExactValue(*(np.where(ignored, 0, part) for part in loss))


# --- reductions -----------------------------------------------------------------------------------


def _sum(value: ExactValue) -> ExactValue:
    """The sum of non-negative ExactValues (n,), as (1,), to 2**-100 relative: each hi and lo scaled
    by one power of two (the largest below 1), then summed exactly in slices (`_sliced_sum`)."""
    hi = value.hi
    if hi.size == 0:
        return ExactValue.of(np.zeros(1), np.zeros(1))
    if not np.all(np.isfinite(hi)):
        bad = np.nan if np.isnan(hi).any() else np.inf
        return ExactValue.of(np.array([bad]), np.zeros(1))
    with np.errstate(under="ignore"):
        if value.exponent.any():
            nonzero = hi != 0
            top = int(dd.binary_exponent(value)[nonzero].max()) + 1 if nonzero.any() else 0
            shift = value.exponent - top
        else:  # one shift for all (the float64 route's rows, and most others)
            top = int(np.frexp(np.abs(hi).max())[1])
            shift = -top
        values = np.ldexp(hi, shift)
        if value.lo.any():
            values = np.concatenate([values, np.ldexp(value.lo, shift)])
        sh, sl = _sliced_sum(values)
    return _exact_value(np.array([sh]), np.array([sl]), np.array([top]))


def _sliced_sum(values) -> tuple[float, float]:
    """sum(values) for |values| < 1 as a dd pair, error below 2**-101 max|values|, in a few passes.

    Rump's ExtractScalar: with sigma = 2**k, k = ceil(log2 n) + 2, q = (sigma + v) - sigma is v
    rounded to a multiple of ulp(sigma), exactly, and so is v - q; the n slices q sum exactly in
    float64 in any order (a multiple of ulp(sigma) below sigma). Each pass takes 53 - k bits off
    every value; after the last the n leftovers, each below 2**-102 / n, are dropped.
    """
    k = int(np.ceil(np.log2(len(values)))) + 2
    parts, rest, bound = [], np.array(values, dtype=np.float64), 0  # |rest| < 2**bound
    q = np.empty_like(rest)
    while bound + k > -102:
        sigma = 2.0 ** (bound + k)
        np.add(rest, sigma, out=q)
        q -= sigma
        parts.append(float(q.sum()))
        rest -= q
        bound += k - 53
    hi, lo = 0.0, 0.0
    for part in parts:
        hi, lo = dd.add(hi, lo, part, 0.0)
    return float(hi), float(lo)


def _weighted(value: ExactValue, w) -> ExactValue:
    """w * value: w hi exactly by two_prod, plus w lo; rows with an exponent or a product below
    2**-960 (where two_prod's low part may underflow) by `_times`; inf and NaN times w as they are."""
    p, e = dd.two_prod(w, value.hi)
    hi, lo = dd.fast_two_sum(p, e + w * value.lo)
    exponent = np.zeros(len(hi), dtype=np.int64)
    finite = np.isfinite(value.hi)
    hi, lo = np.where(finite, hi, value.hi * w), np.where(finite, lo, 0.0)
    slow = finite & ((value.exponent != 0) | ((np.abs(hi) < dd.HELD_FROM) & (hi != 0)))
    if slow.any():
        small = _times(ExactValue(*(part[slow] for part in value)), ExactValue.of(w[slow], np.zeros(slow.sum())))
        hi[slow], lo[slow], exponent[slow] = small
    return ExactValue(hi, lo, exponent)


def exact_reduced(row_losses: ExactValue, weights, kept, reduction: str) -> ExactValue | None:
    """The exact reduced loss: w_i loss_i per kept row (none, 0 elsewhere), their sum, or that sum
    divided by sum_i w_i over the kept rows (mean; None, undefined, when that is 0). weights (rows,)
    or None (w = 1), e.g. `row_weights`; sums good to 2**-100 relative (non-negative terms)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not one of {', '.join(REDUCTIONS)}")
    kept = np.asarray(kept, bool)
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        rows = row_losses
        if weights is not None:
            w = np.where(kept, np.asarray(weights, dtype=np.float64), 0.0)
            rows = _weighted(row_losses, w)
        if not kept.all():
            rows = ExactValue(*(np.where(kept, part, 0) for part in rows))
        if reduction == "none":
            return rows
        total = _sum(rows)
        if reduction == "sum":
            return total
        if weights is None:
            divisor = ExactValue.of(np.array([float(kept.sum())]), np.zeros(1))
        else:
            divisor = _sum(ExactValue.of(w, np.zeros_like(w)))
        if divisor.hi[0] == 0:
            return None
        if not np.isfinite(total.hi[0]):  # inf / W = inf, NaN stays NaN
            return total
        mantissa, binade = np.frexp(total.hi)
        qh, ql = _div(mantissa, np.ldexp(total.lo, -binade), *_as_dd(divisor))
        return _exact_value(qh, ql, total.exponent + binade)


# --- gradients ------------------------------------------------------------------------------------


def _block_gradient(x, labels, targets, options: LossOptions, scale) -> ExactValue:
    """d(sum_i scale_i loss_i)/dx: scale_i (p_j (A + 2 z lse) - t_j), A = sum_j t_j, times sech^2."""
    if not isinstance(scale, tuple):  # a float64 scale, from the float64 route's leftover rows
        scale = (scale, np.zeros_like(scale))
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
        value = _times(value, cap_slope(x, options.softcap))
    return _with_rows(value, infinite | r.undefined, np.nan, np.zeros(len(rows), bool), 0.0)


def exact_option_gradient(
    logits, labels, options: LossOptions, reduction: str, upstream=None, output_precision: int = 53
) -> ExactValue | None:
    """d(reduced loss)/d(logits) as an ExactValue (rows, classes), through the soft-cap; the reduced
    loss as `exact_reduced` with `row_weights`. upstream: (rows,) for none, a number for mean and sum
    (default 1). Ignored rows get 0; rows with an infinite or undefined loss NaN; None where the mean
    is undefined (no kept weight)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not one of {', '.join(REDUCTIONS)}")
    x, safe, ignored, targets = _checked(logits, labels, options)
    w = row_weights(safe, options) * ~ignored
    up = np.broadcast_to(np.asarray(1.0 if upstream is None else upstream, dtype=np.float64), w.shape)
    scale = dd.two_prod(w, up)
    if reduction == "mean":
        divisor = _sum(ExactValue.of(w, np.zeros_like(w)))
        if divisor.hi[0] == 0:
            return None
        scale = _div(*scale, *(np.broadcast_to(part, w.shape) for part in _as_dd(divisor)))
    fast = _float64_route(options, output_precision)
    parts = []
    with np.errstate(invalid="ignore", over="ignore", under="ignore", divide="ignore"):
        for b in _blocks(*x.shape):
            block_targets = None if targets is None else targets[b]
            if fast:
                args = (x[b], safe[b], block_targets, options, scale[0][b] + scale[1][b])
                parts.append(_routed(float64_gradient, _block_gradient, *args))
            else:
                parts.append(_block_gradient(x[b], safe[b], block_targets, options, (scale[0][b], scale[1][b])))
    g = _joined(parts)
    return ExactValue(*(np.where(ignored[:, None], 0, part) for part in g))
