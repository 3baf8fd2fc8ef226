"""The exact language-model head: logits h @ W.T + b, their loss and gradients, in double-double.

Like the other references it is given dtype-rounded inputs held exactly in float64 and knows
nothing of frameworks.

**Products (Ozaki scheme).** A product A @ B.T (inner size n) is split without error into BLAS
float64 products: each row of A (and of B) is scaled by its own power of two 2**a (2**c) above
its largest entry, then cut into slices of beta bits (integers below 2**beta held in float64;
slice k is worth 2**(a - k beta) times its integers). beta is the largest with
4 n (2**beta - 1)**2 <= 2**53, so one slice product, and a sum of up to four of them, is an
integer below 2**53: exact in float64 whatever order BLAS adds in. Slicing stops when a side has
no bits left, or after K slices, K beta >= floor_bits + 4 - 53 + 2 log2 n; what is left of a side
(its tail, with a double-double operand's low parts) goes through one plain float64 product with
the other side, whose error gamma_n n 2**-(K beta) is below 2**-(floor_bits + 4). Slice pairs
wholly below 2**-(floor_bits + log2 n + 4) are skipped. Products of equal weight are summed
exactly, then all terms with Ogita-Rump-Oishi's Sum2. Proved bound, per entry, with
S = sum_t |A_it B_jt| and at most 16 terms in Sum2 (its error is below gamma_15**2 S < 2**-98 S):

    |computed - exact| <= 2**-98 S + 2**-floor_bits 2**(a_i + c_j),   2**a_i <= 2 max_t |A_it|.

The second term is zero when the splitting is error-free: no tail and no slice pair skipped,
e.g. for logits with d = 512 (beta = 21, K = 4) when the slices of h and of W number at most
four each and seven together, as for float32 rows whose entries span less than 2**38 (the tests
check it). Logits take floor_bits = 104, i.e. at most 2**-102 max|h_i| max|W_j|; gradients 90.

**Loss.** Rounding the logits to float64 would cost up to 2**-52 max|z| of the loss, far above
2**-75, so the double-double logits feed the reference's formula directly: every difference
z_j - s and z_j - m is formed in double-double (error 2**-104 of itself, where the reference's
float64 logits had exact two_sum differences), then exp, sum, scaled exp and log1p as in
`harness.exact.reference`; the loss keeps its 2**-75 relative bound. For outputs of at most 24
bits, rows whose rounding bound allows it take `exact_cross_entropy`'s float64 route on the
float64-rounded differences x = fl(z - m): its 2**-48 plus the rounding's first-order
2**-51 mean_j(|x_j|) (weights exp(x_j), argmax left out), kept below 2**-46, so <= 2**-45 in all.

**Gradients.** G = upstream * (softmax - onehot) from the double-double logits as in
`harness.exact.gradient` (each entry to about 2**-75 of itself); dL/dh = G @ W, dL/dW = G.T @ h
by the products above (floor 2**-90 of 2**(a + c), G's low parts in the tail), dL/db = G.sum(0)
by pairwise double-double sums.
All three come back as `ExactValue`s, so nothing underflows.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from harness.exact import dd
from harness.exact.dd import ExactValue
from harness.exact.reference import FLOAT64_ROUTE_UP_TO, LOG1P_IS_T_BELOW, by_row_blocks, exact_cross_entropy

LOGIT_FLOOR_BITS = 104  # logits: skipped bits below 2**-104 of 2**(a + c)
GRADIENT_FLOOR_BITS = 90  # dL/dh, dL/dW: below 2**-90 of 2**(a + c), 15 bits under the 2**-75 target
ROUNDING_MEAN_UP_TO = 32.0  # float64 route when 2**-51 mean|x| <= 2**-46
_BLOCK_ENTRIES = 2**21  # rows of B per block: at most this many entries
_LEVEL_PAIRS = 4  # slice products of one weight summed exactly in float64, at most this many at once


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


# --- error-free products ------------------------------------------------------------------------


def slice_bits(n: int) -> int:
    """The largest beta with 4 n (2**beta - 1)**2 <= 2**53: four slice products sum exactly."""
    beta = 26
    while _LEVEL_PAIRS * n * (2**beta - 1) ** 2 > 2**53:
        beta -= 1
    return beta


def _row_exponents(hi, exponent):
    """Per row the smallest a with every |entry| < 2**a (0 for a zero row)."""
    binade = np.where(hi != 0, np.frexp(hi)[1] + exponent, np.iinfo(np.int64).min)
    top = binade.max(axis=1)
    return np.where(top == np.iinfo(np.int64).min, 0, top)


class _Split(NamedTuple):
    """Entries in (-1, 1) = sum_k parts[k-1] 2**(-k beta) (integer-valued parts) + tail."""

    parts: list[np.ndarray]
    head: np.ndarray  # the parts' sum, exact: the entries with their bits below the parts cut off
    tail: np.ndarray | None  # what is left, plus a double-double operand's low parts; None if 0


def _split(hi, lo, beta: int, most: int) -> _Split:
    """Slices of beta bits, at most `most` of them, of scaled entries hi (+ lo) in (-1, 1)."""
    rest, parts = hi.copy(), []
    while len(parts) < most and rest.any():
        rest *= 2.0**beta
        part = np.trunc(rest)
        rest -= part  # exact: the fraction of a float64
        parts.append(part)
    np.ldexp(rest, -beta * len(parts), out=rest)
    head = hi - rest
    if lo is not None:
        rest += lo
    return _Split(parts, head, rest if rest.any() else None)


class _Operand(NamedTuple):
    """(hi + lo) 2**exponent, (rows, n); lo None for float64-held inputs, exponent 0 or per entry."""

    hi: np.ndarray
    lo: np.ndarray | None = None
    exponent: np.ndarray | int = 0

    def rows(self, start: int, stop: int) -> _Operand:
        return _Operand(*(part if np.ndim(part) == 0 else part[start:stop] for part in self))

    def scaled(self, row_exponent):
        """hi and lo times 2**-row_exponent: entries in (-1, 1)."""
        shift = self.exponent - row_exponent[:, None]
        return np.ldexp(self.hi, shift), None if self.lo is None else np.ldexp(self.lo, shift)


def _exact_product(a: _Operand, b: _Operand, floor_bits: int) -> ExactValue:
    """A @ B.T as an ExactValue: A split once, B in blocks of rows (memory)."""
    n = a.hi.shape[1]
    beta = slice_bits(n)
    floor = floor_bits + math.ceil(math.log2(max(n, 1))) + 4
    most = max(1, math.ceil((floor_bits + 4 - 53 + 2 * math.log2(max(n, 1))) / beta))  # then the tail
    a_row = _row_exponents(a.hi, a.exponent)
    a_split = _split(*a.scaled(a_row), beta, most)
    shape = (a.hi.shape[0], b.hi.shape[0])
    hi, lo, exponent = np.empty(shape), np.empty(shape), np.empty(shape, dtype=np.int64)
    step = max(1, _BLOCK_ENTRIES // max(n, 1))
    for start in range(0, shape[1], step):
        block = b.rows(start, start + step)
        b_row = _row_exponents(block.hi, block.exponent)
        b_hi, b_lo = block.scaled(b_row)
        b_split = _split(b_hi, b_lo, beta, most)
        weighted = _level_sums(a_split.parts, b_split.parts, beta, floor)
        if a_split.tail is not None:  # A B.T = heads' product + A's tail B.T + A's head B's tail.T
            weighted.append(a_split.tail @ b_hi.T)
        if b_split.tail is not None:
            weighted.append(a_split.head @ b_split.tail.T)
        value = _exact_value(*_sum2(weighted, (shape[0], b_hi.shape[0])), a_row[:, None] + b_row[None, :])
        hi[:, start : start + step], lo[:, start : start + step], exponent[:, start : start + step] = value
    return ExactValue(hi, lo, exponent)


def _level_sums(a_parts, b_parts, beta: int, floor: int) -> list[np.ndarray]:
    """Exact float64 terms of A @ B.T in units of 2**(a + c): slice products of one weight
    2**(-beta level), up to four at a time, for the levels above the floor."""
    weighted = []
    for level in range(2, len(a_parts) + len(b_parts) + 1):
        if (level - 2) * beta >= floor:
            break
        pairs = [(k, level - k) for k in range(1, level) if k <= len(a_parts) and level - k <= len(b_parts)]
        for start in range(0, len(pairs), _LEVEL_PAIRS):
            total = sum(a_parts[k - 1] @ b_parts[m - 1].T for k, m in pairs[start : start + _LEVEL_PAIRS])
            weighted.append(np.ldexp(total, -beta * level))
    return weighted


def _sum2(terms, shape):
    """Ogita-Rump-Oishi Sum2: hi + lo = the sum of float64 arrays as if in twice the precision."""
    hi, lo = np.zeros(shape), np.zeros(shape)
    for term in terms:
        hi, error = dd.two_sum(hi, term)
        lo += error
    return dd.fast_two_sum(hi, lo)


def _exact_value(hi, lo, exponent) -> ExactValue:
    """(hi + lo) 2**exponent in the ExactValue convention: exponent 0 from 2**-960 up."""
    mantissa, binade = np.frexp(hi)
    return dd.normalized(mantissa, np.ldexp(lo, -binade), exponent + binade)


def exact_logits(h: np.ndarray, W: np.ndarray, b: np.ndarray | None = None):
    """h @ W.T (+ b) of float64-held arrays as a double-double pair (hi, lo), (rows, classes).

    Error per entry <= 2**-98 (sum_t |h_it W_jt| + |b_j|) + 2**-102 max|h_i| max|W_j|, the last
    term zero when the splitting is error-free (see the module docstring). Logits below about
    2**-969 keep an absolute accuracy of 2**-1074 only (lo underflows).
    """
    h, W, b, _, _ = _checked(h, W, b)
    with np.errstate(under="ignore"):
        hi, lo, exponent = _exact_product(_Operand(h), _Operand(W), LOGIT_FLOOR_BITS)
        hi, lo = np.ldexp(hi, exponent), np.ldexp(lo, exponent)  # exponent 0 from 2**-960 up
    if b is None:
        return hi, lo
    return dd.add(hi, lo, np.broadcast_to(b, hi.shape), np.zeros_like(hi))


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


def exact_head_loss(h, W, b, labels, output_precision: int = 53) -> ExactValue:
    """Exact cross-entropy per row of the logits h @ W.T + b, as an ExactValue.

    To 2**-75 relative (double-double route); for outputs of at most 24 significand bits, rows
    whose rounding bound allows take the float64 route, to 2**-45 (module docstring).
    """
    h, W, b, labels, _ = _checked(h, W, b, labels)
    zh, zl = exact_logits(h, W, b)
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


def exact_head_gradients(h, W, b, labels, upstream=None) -> HeadGradients:
    """dL/dh = G @ W, dL/dW = G.T @ h, dL/db = G.sum(0) for L = sum_i upstream_i loss_i.

    G = upstream[:, None] (softmax - onehot) of the exact logits, each entry to about 2**-75 of
    itself. Error of dL/dh[i, t]: about 2**-75 (|G| @ |W|)[i, t] from G, plus the products'
    2**-90 2**(a_i + c_t) <= 2**-88 max_j |G_ij| max_j |W_jt| (and likewise for dL/dW).
    """
    h, W, b, labels, upstream = _checked(h, W, b, labels, upstream)
    zh, zl = exact_logits(h, W, b)
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        g = _in_row_blocks(_softmax_minus_onehot, zh, zl, labels)
        del zh, zl  # memory: 65 MB each at 256 x 32000
        if upstream is not None:
            mantissa, binade = np.frexp(upstream)
            g_h, g_l = dd.mul(g.hi, g.lo, mantissa[:, None], np.zeros_like(g.lo))
            g = _exact_value(g_h, g_l, g.exponent + binade[:, None])
        d_h = _exact_product(_Operand(*g), _Operand(W.T), GRADIENT_FLOOR_BITS)
        d_W = _exact_product(_Operand(h.T), _Operand(g.hi.T, g.lo.T, g.exponent.T), GRADIENT_FLOOR_BITS)
        d_W = ExactValue(*(part.T for part in d_W))  # computed as h.T @ G: the large G.T is taken in blocks
        d_b = None if b is None else _column_sums(g)
    return HeadGradients(d_h, d_W, d_b)


def _column_sums(g: ExactValue) -> ExactValue:
    """G.sum(0) by pairwise double-double sums, each column scaled by its own power of two."""
    column = _row_exponents(g.hi.T, g.exponent.T)
    shift = g.exponent - column[None, :]
    total_h, total_l = dd.sum_rows(np.ldexp(g.hi, shift).T, np.ldexp(g.lo, shift).T)
    return _exact_value(total_h, total_l, column)
