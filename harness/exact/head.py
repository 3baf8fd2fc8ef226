"""The exact language-model head: logits h @ W.T + b, their loss and gradients, in double-double.

Like the other references it is given dtype-rounded inputs held exactly in float64 and knows
nothing of frameworks. The logits are computed once (`exact_logits`, by the Ozaki products of
`harness.exact.head_products`, 2**-102 max|h_i| max|W_j| at most) and may be handed to both the
loss and the gradients (`logits=`). The loss feeds the double-double logits to the reference's
formula (2**-75 relative; outputs of at most 24 bits may take its float64 route, 2**-45). The
gradients G = upstream * (softmax - onehot), dL/dh = G @ W, dL/dW = G.T @ h and dL/db = G.sum(0)
come back as `ExactValue`s; float64 outputs get G to 2**-75 per entry, outputs of at most 24 bits
G in float64 (2**-46 per entry) and cheaper products. The proofs of these bounds:
docs/pages/explanation/exact-reference.md, "Bounds, module by module".
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from harness.exact import dd
from harness.exact.dd import ExactValue
from harness.exact.head_products import Operand, _exact_value, _row_exponents, exact_product, slice_bits
from harness.exact.reference import FLOAT64_ROUTE_UP_TO, LOG1P_IS_T_BELOW, by_row_blocks, exact_cross_entropy

__all__ = ["HeadGradients", "divided", "exact_head_gradients", "exact_head_loss", "exact_logits", "slice_bits"]

LOGIT_FLOOR_BITS = 104  # logits: skipped bits below 2**-104 of 2**(a + c)
GRADIENT_FLOOR_BITS = 90  # dL/dh, dL/dW: below 2**-90 of 2**(a + c), 15 bits under the 2**-75 target
GRADIENT_FLOOR_BITS_UP_TO_24 = 52  # outputs of at most 24 bits: 2**-50 max|G_i| max|W_t|, under G's 2**-46
SCALED_EXP_BELOW = -700.0  # exp(x) below 2**-1009: held as (hi + lo) 2**k in G
FLOAT64_G_FROM_T = 2.0**-900  # float64 G for rows with T at least this (no subnormal entries near the row's scale)
ROUNDING_MEAN_UP_TO = 32.0  # float64 route when 2**-51 mean|x| <= 2**-46


class HeadGradients(NamedTuple):
    """dL/dh (rows, d), dL/dW (classes, d), dL/db (classes,) or None without a bias."""

    h: ExactValue
    W: ExactValue
    b: ExactValue | None


# --- checks -------------------------------------------------------------------------------------


def _checked(h, W, b=None, labels=None, upstream=None):
    h, W = np.asarray(h, dtype=np.float64), np.asarray(W, dtype=np.float64)
    shapes = f"h {h.shape}, W {W.shape}" + ("" if b is None else f", b {np.shape(b)}")
    if h.ndim != 2 or W.ndim != 2 or h.shape[1] != W.shape[1]:
        raise ValueError(f"need h (rows, d) and W (classes, d) with the same d, got {shapes}")
    if b is not None:
        b = np.asarray(b, dtype=np.float64)
        if b.shape != (W.shape[0],):
            raise ValueError(f"need b (classes,) = ({W.shape[0]},), got {shapes}")
    if labels is not None:
        labels = np.asarray(labels)
        classes = W.shape[0]
        if labels.shape != (h.shape[0],) or classes < 2:
            raise ValueError(f"need labels (rows,) and classes >= 2, got labels {labels.shape}, {shapes}")
        if labels.dtype.kind not in "iu" or np.any((labels < 0) | (labels >= classes)):
            raise ValueError(f"labels must be integers in [0, {classes}), got {labels.dtype} {labels.tolist()[:8]}")
    if upstream is not None:
        upstream = np.asarray(upstream, dtype=np.float64)
        if upstream.shape != (h.shape[0],):
            raise ValueError(f"need upstream (rows,) = ({h.shape[0]},), got upstream {upstream.shape}")
    if not all(np.all(np.isfinite(v)) for v in (h, W, b, upstream) if v is not None):
        raise ValueError("the exact head needs finite h, W, b and upstream")
    return h, W, b, labels, upstream


def exact_logits(h: np.ndarray, W: np.ndarray, b: np.ndarray | None = None):
    """h @ W.T (+ b) of float64-held arrays as a double-double pair (hi, lo), (rows, classes).

    Error per entry <= 2**-98 (sum_t |h_it W_jt| + |b_j|) + 2**-102 max|h_i| max|W_j|, the last
    term zero when the splitting is error-free (see the module docstring). Logits below about
    2**-969 keep an absolute accuracy of 2**-1074 only (lo underflows).
    """
    h, W, b, _, _ = _checked(h, W, b)
    with np.errstate(under="ignore"):
        hi, lo, exponent = exact_product(Operand(h), Operand(W), LOGIT_FLOOR_BITS, addend=b)
        if exponent.any():  # exponent 0 from 2**-960 up
            hi, lo = np.ldexp(hi, exponent), np.ldexp(lo, exponent)
    return hi, lo


# --- the loss and softmax - onehot of double-double logits ----------------------------------------


def _argmax(zh, zl):
    """Each row's largest double-double entry (hi = fl(hi + lo) orders them; lo breaks ties)."""
    return np.argmax(np.where(zh == zh.max(axis=1, keepdims=True), zl, -np.inf), axis=1)


def _minus(zh, zl, rows, column):
    """z - z[row, column] per row in double-double, clamped at 0 from above (for z below it)."""
    dh, dl = dd.add(zh, zl, -zh[rows, column][:, None], -zl[rows, column][:, None])
    above = (dh > 0) | ((dh == 0) & (dl > 0))
    return np.where(above, 0.0, dh), np.where(above, 0.0, dl)


class _Rows(NamedTuple):
    top: np.ndarray  # first argmax k
    below_top: tuple  # z - m in double-double, <= 0
    t: ExactValue  # T = sum_{j != k} exp(z_j - m)
    log_h: np.ndarray  # L = log1p(T) = lse(z) - m, double-double
    log_l: np.ndarray
    tiny: np.ndarray  # T < 2**-80: L = T to 2**-81


def _rows(zh, zl) -> _Rows:
    """What loss and gradient share, from second largest s: T = exp(s - m) sum_{j != k} exp(z_j - s)."""
    rows = np.arange(zh.shape[0])
    top = _argmax(zh, zl)
    masked = zh.copy()
    masked[rows, top] = -np.inf
    second = _argmax(masked, zl)
    dh, dl = _minus(zh, zl, rows, second)
    dh[rows, top], dl[rows, top] = -np.inf, 0.0  # exp gives 0 there
    sum_h, sum_l = dd.sum_rows(*dd.exp(dh, dl))
    gap = dd.add(zh[rows, second], zl[rows, second], -zh[rows, top], -zl[rows, top])
    scale = dd.scaled_exp(np.minimum(gap[0], 0.0), np.where(gap[0] < 0, gap[1], 0.0))
    t = dd.normalized(*dd.mul(scale.hi, scale.lo, sum_h, sum_l), scale.exponent)
    tiny = dd.binary_exponent(t) < LOG1P_IS_T_BELOW
    log_h, log_l = dd.log1p(np.where(tiny, 0.0, t.to_float64()), np.where(tiny, 0.0, np.ldexp(t.lo, t.exponent)))
    log_h, log_l = np.where(tiny, t.to_float64(), log_h), np.where(tiny, 0.0, log_l)
    return _Rows(top, _minus(zh, zl, rows, top), t, log_h, log_l, tiny)


def _in_row_blocks(function, zh, zl, labels) -> ExactValue:
    """function(zh, zl, labels) on blocks of rows, as the reference does (`by_row_blocks`)."""
    classes = zh.shape[1]
    return by_row_blocks(lambda z, y: function(z[:, :classes], z[:, classes:], y), np.hstack([zh, zl]), labels)


def _dd_loss(zh, zl, labels) -> ExactValue:
    """(m - z_y) + log1p(T); a label at the argmax with T < 2**-80 has loss T, exponent and all."""
    rows = np.arange(zh.shape[0])
    r = _rows(zh, zl)
    margin_h, margin_l = (-part[rows, labels] for part in r.below_top)
    loss_h, loss_l = dd.add(margin_h, margin_l, r.log_h, r.log_l)
    just_t = r.tiny & (margin_h == 0)
    return ExactValue(
        np.where(just_t, r.t.hi, loss_h), np.where(just_t, r.t.lo, loss_l), np.where(just_t, r.t.exponent, 0)
    )


def _float64_route_fits(x):
    """Rows where 2**-51 mean|x_j| (weights exp(x_j), j not the argmax) is at most 2**-46."""
    others = np.where(x == 0, -np.inf, x)  # the argmax, and ties with it (which add nothing)
    weights = np.exp(others - others.max(axis=1, keepdims=True))
    mean = (weights * np.abs(np.where(np.isfinite(others), x, 0.0))).sum(axis=1) / weights.sum(axis=1)
    return ~(mean > ROUNDING_MEAN_UP_TO)  # rows with every x_j == 0 fit (NaN mean)


def _softmax_minus_onehot(zh, zl, labels) -> ExactValue:
    """As `harness.exact.gradient`, from double-double differences z - m."""
    rows = np.arange(zh.shape[0])
    r = _rows(zh, zl)
    p = dd.scaled_exp(*dd.add(*r.below_top, -r.log_h[:, None], -r.log_l[:, None]))
    hi, lo, exponent = p.hi.copy(), p.lo.copy(), p.exponent.copy()
    p_y = ExactValue(*(part[rows, labels] for part in p))
    y_h, y_l = dd.add(p_y.to_float64(), np.ldexp(p_y.lo, p_y.exponent), -1.0, 0.0)  # label not the argmax
    top_h, top_l = dd.exp(-r.log_h, -r.log_l)  # p[k] = exp(-L)
    rest = dd.normalized(*dd.mul(r.t.hi, r.t.lo, top_h, top_l), r.t.exponent)  # 1 - p[k], label the argmax
    label_is_top = labels == r.top
    hi[rows, labels] = np.where(label_is_top, -rest.hi, y_h)
    lo[rows, labels] = np.where(label_is_top, -rest.lo, y_l)
    exponent[rows, labels] = np.where(label_is_top, rest.exponent, 0)
    return ExactValue(hi, lo, exponent)


# --- the public references ----------------------------------------------------------------------


def exact_head_loss(h, W, b, labels, output_precision: int = 53, logits=None) -> ExactValue:
    """Exact cross-entropy per row of the logits h @ W.T + b, as an ExactValue.

    To 2**-75 relative (double-double route); for outputs of at most 24 significand bits, rows
    whose rounding bound allows take the float64 route, to 2**-45 (module docstring). `logits`:
    `exact_logits(h, W, b)` when already computed.
    """
    h, W, b, labels, _ = _checked(h, W, b, labels)
    zh, zl = exact_logits(h, W, b) if logits is None else logits
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        if output_precision > FLOAT64_ROUTE_UP_TO:
            return _in_row_blocks(_dd_loss, zh, zl, labels)
        x = _minus(zh, zl, np.arange(len(labels)), _argmax(zh, zl))[0]
        loss = exact_cross_entropy(x, labels, output_precision)
        slow = ~_float64_route_fits(x)
        if slow.any():
            exact = _in_row_blocks(_dd_loss, zh[slow], zl[slow], labels[slow])
            for part, value in zip(loss, exact, strict=True):
                part[slow] = value
        return loss


def exact_head_gradients(h, W, b, labels, upstream=None, output_precision: int = 53, logits=None) -> HeadGradients:
    """dL/dh = G @ W, dL/dW = G.T @ h, dL/db = G.sum(0) for L = sum_i upstream_i loss_i.

    G = upstream[:, None] (softmax - onehot) of the exact logits. float64 outputs: G to about
    2**-75 of each entry, products to 2**-88 max_j |G_ij| max_j |W_jt| (and likewise for dL/dW).
    Outputs of at most 24 significand bits: G to 2**-46 of each entry, products to
    2**-50 of that scale, in all below 2**-44 of it (module docstring). `logits`: as for the loss.
    """
    h, W, b, labels, upstream = _checked(h, W, b, labels, upstream)
    zh, zl = exact_logits(h, W, b) if logits is None else logits
    coarse = output_precision <= FLOAT64_ROUTE_UP_TO
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        g = _float64_g(zh, zl, labels) if coarse else _in_row_blocks(_softmax_minus_onehot, zh, zl, labels)
        del zh, zl  # memory: 65 MB each at 256 x 32000
        if upstream is not None:
            g = _times_upstream(g, upstream, coarse)
        floor_bits = GRADIENT_FLOOR_BITS_UP_TO_24 if coarse else GRADIENT_FLOOR_BITS
        g_lo = g.lo if g.lo.any() else None  # float64 G: no low parts, no pass over them
        d_h = exact_product(Operand(g.hi, g_lo, g.exponent), Operand(_transposed(W)), floor_bits)
        g_t = Operand(*(None if part is None else _transposed(part) for part in (g.hi, g_lo, g.exponent)))
        d_W = exact_product(Operand(_transposed(h)), g_t, floor_bits)
        d_W = ExactValue(*(part.T for part in d_W))  # computed as h.T @ G: the large G.T is taken in blocks
        d_b = None if b is None else _column_sums(g, coarse)
    return HeadGradients(d_h, d_W, d_b)


def divided(value: ExactValue, n: int) -> ExactValue:
    """value / n (n >= 1), as the mean's gradient is the sum's over n. A power of two moves the
    exponent (exact); otherwise one Newton step on the float64 quotient, to about 2**-104 of each
    entry, and within 2**-1074 n of 2**-960 for entries below it (lo may be subnormal there)."""
    if n & (n - 1) == 0:
        return value._replace(exponent=value.exponent + (-int(n).bit_length() + 1))
    with np.errstate(under="ignore"):
        q = value.hi / n
        p_h, p_l = dd.two_prod(q, np.float64(n))
        q_h, q_l = dd.fast_two_sum(q, ((value.hi - p_h) - p_l + value.lo) / n)
    return _exact_value(q_h, q_l, value.exponent)


def _transposed(a: np.ndarray) -> np.ndarray:
    """a.T laid out by rows: the products take B in blocks of rows (a strided view is 2-3 times slower)."""
    return np.ascontiguousarray(a.T)


def _times_upstream(g: ExactValue, upstream, coarse: bool) -> ExactValue:
    """u_i G_ij with u_i's binade in the exponent; its mantissa times G in double-double, or in
    float64 for outputs of at most 24 bits (one more rounding, 2**-53 of each entry)."""
    mantissa, binade = np.frexp(upstream)
    exponent = g.exponent + binade[:, None]
    if coarse:
        return ExactValue(g.hi * mantissa[:, None], g.lo * mantissa[:, None], exponent)
    g_h, g_l = dd.mul(g.hi, g.lo, mantissa[:, None], np.zeros_like(g.lo))
    return _exact_value(g_h, g_l, exponent)


def _float64_g(zh, zl, labels) -> ExactValue:
    """G for outputs of at most 24 bits: float64 entries (lo = 0), those of x = z - m below -700
    held with an exponent; the double-double route for rows whose T is below 2**-900."""
    return _in_row_blocks(_float64_g_rows, zh, zl, labels)


def _float64_g_rows(zh, zl, labels) -> ExactValue:
    rows = np.arange(zh.shape[0])
    top = _argmax(zh, zl)
    x_h, x_l = _minus(zh, zl, rows, top)
    e = np.exp(x_h)
    e *= 1.0 + x_l
    e[rows, top] = 0.0
    t = e.sum(axis=1)  # T, pairwise; entries below 2**-1009 add nothing that counts to T >= 2**-900
    e[rows, top] = 1.0
    g = ExactValue.of(e, np.zeros_like(e))
    deep = x_h < SCALED_EXP_BELOW
    if deep.any():  # exp(x) as (hi + lo) 2**k: nothing underflows
        g.hi[deep], _, g.exponent[deep] = dd.scaled_exp(x_h[deep], x_l[deep])
    g.hi[...] /= (1.0 + t)[:, None]
    p_y = np.ldexp(g.hi[rows, labels], g.exponent[rows, labels])
    g.hi[rows, labels] = np.where(labels == top, -t / (1.0 + t), p_y - 1.0)
    g.exponent[rows, labels] = 0
    fallback = ~(t >= FLOAT64_G_FROM_T)
    if fallback.any():
        exact = _softmax_minus_onehot(zh[fallback], zl[fallback], labels[fallback])
        for part, values in zip(g, exact, strict=True):
            part[fallback] = values
    return g


def _column_sums(g: ExactValue, coarse: bool = False) -> ExactValue:
    """G.sum(0), each column scaled by its own power of two: by pairwise double-double sums, or
    for outputs of at most 24 bits by float64 pairwise sums (error (log2 rows + 1) 2**-53 of
    sum_i |G_ij|, under G's own 2**-46 of it)."""
    column = _row_exponents(g.hi.T, g.exponent.T)
    shift = g.exponent - column[None, :]
    if coarse:
        total = np.ascontiguousarray(np.ldexp(g.hi, shift).T).sum(axis=1)
        return _exact_value(total, np.zeros_like(total), column)
    total_h, total_l = dd.sum_rows(np.ldexp(g.hi, shift).T, np.ldexp(g.lo, shift).T)
    return _exact_value(total_h, total_l, column)
