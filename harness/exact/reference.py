"""The exact cross-entropy of float64-held logits, in double-double (about 2**-75 relative).

The reference knows nothing of frameworks: it is given the dtype-rounded logits held exactly in
float64, and returns lse(x) - x[y] as an `ExactValue` (hi, lo, exponent) whose value
(hi + lo) * 2**exponent is the exact loss to about 2**-75 relative, so float64 results can be
measured to a small fraction of an ulp. Told that the output has at most 24 significand bits, it
takes a float64 route good to 2**-48 instead, more than 20 bits beyond those outputs and about
15 times faster.

The route avoids every cancellation. With m the row's largest logit and s the second largest,

    loss = (m - x[y]) + log1p(T),   T = exp(s - m) * sum_{j != argmax} exp(x[j] - s)

Both terms are non-negative; every difference of logits is formed exactly (two_sum); the sum has
terms in (0, 1] with at least one equal to 1; log1p keeps the tiny losses of confident rows.
Nothing underflows: exp(s - m) is a scaled dd (`dd.scaled_exp`), so T and a loss of T's size
keep their relative accuracy however small, down to the subnormal range and below 2**-1075,
where float64 would hold 0 (those carry exponent < 0; every loss of at least 2**-960 has 0).
"""

from __future__ import annotations

import numpy as np

from harness.exact import dd
from harness.exact.dd import ExactValue

FLOAT64_ROUTE_UP_TO = 24  # significand bits of the output for which the float64 route suffices
LOG1P_IS_T_BELOW = -80  # log1p(T) = T (1 - T/2 + ...): T itself is within 2**-81 below 2**-80
_FLOAT64_ROUTE_GAP = -700.0  # s - m below this (exp below 2**-1009): the row takes the dd route
BLOCK_ELEMENTS = 2**16  # rows are taken in blocks of about this many logits: the temporaries stay in cache


def exact_cross_entropy(logits: np.ndarray, labels: np.ndarray, output_precision: int = 53) -> ExactValue:
    """Exact lse(x) - x[y] per row of finite float64 logits (rows, classes), as an ExactValue.

    For outputs of at most 24 significand bits (float16, bfloat16, float32) the same formula is
    evaluated in float64 (lo = 0): each term exp(x[j] - s) to about 1 ulp, a pairwise sum, one
    log1p, no cancellation, so the relative error stays below (4 + log2 n) 2**-53, which is at
    most 2**-48 for n <= 131072 classes: more than 20 bits beyond float32's 2**-24 (checked
    against the double-double route in the tests). Rows whose loss may be below float64's normal
    range, and float64 outputs, get the double-double route.
    """
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"logits must be (rows, classes>=2), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("the exact reference needs finite logits")
    route = _float64_route if output_precision <= FLOAT64_ROUTE_UP_TO else _double_double_route
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):  # -inf marks the argmax column
        return by_row_blocks(route, x, np.asarray(labels))


def by_row_blocks(route, x: np.ndarray, labels: np.ndarray) -> ExactValue:
    """route(x, labels) on blocks of rows of about BLOCK_ELEMENTS logits, joined (2 to 3 times faster
    than one pass over 256 x 32000 logits, whose dozens of temporaries would each be 64 MB)."""
    rows = max(1, BLOCK_ELEMENTS // x.shape[1])
    if len(x) <= rows:
        return route(x, labels)
    blocks = [route(x[i : i + rows], labels[i : i + rows]) for i in range(0, len(x), rows)]
    return ExactValue(*(np.concatenate(parts) for parts in zip(*blocks, strict=True)))


def _largest_two(x: np.ndarray):
    """Rows' largest logit m, second largest s, and x with the (first) argmax set to -inf."""
    rows = np.arange(x.shape[0])
    top = np.argmax(x, axis=1)
    largest = x[rows, top]
    others = x.copy()
    others[rows, top] = -np.inf
    return largest, others.max(axis=1), others


def _float64_route(x: np.ndarray, labels: np.ndarray) -> ExactValue:
    rows = np.arange(x.shape[0])
    largest, second, others = _largest_two(x)
    dh, dl = dd.two_sum(others, -second[:, None])  # exact x[j] - s <= 0
    terms = np.exp(dh) * (1.0 + np.where(np.isfinite(dh), dl, 0.0))  # exp(dh + dl) to first order
    gap_h, gap_l = dd.two_sum(second, -largest)
    t = np.exp(gap_h) * (1.0 + gap_l) * terms.sum(axis=1)
    loss = ExactValue.of((largest - x[rows, labels]) + np.log1p(t), np.zeros(len(rows)))
    tiny = (gap_h < _FLOAT64_ROUTE_GAP) & (x[rows, labels] == largest)  # T, and the loss, may underflow
    if not tiny.any():
        return loss
    exact = _double_double_route(x[tiny], labels[tiny])
    for part, value in zip(loss, exact, strict=True):
        part[tiny] = value
    return loss


def _double_double_route(x: np.ndarray, labels: np.ndarray) -> ExactValue:
    rows = np.arange(x.shape[0])
    largest, second, others = _largest_two(x)

    dh, dl = dd.two_sum(others, -second[:, None])  # exact x[j] - s <= 0; -inf at argmax
    sum_h, sum_l = dd.sum_rows(*dd.exp(dh, dl))  # in [1, n]: terms below 2**-969 do not matter
    scale = dd.scaled_exp(*dd.two_sum(second, -largest))
    t = dd.normalized(*dd.mul(scale.hi, scale.lo, sum_h, sum_l), scale.exponent)
    margin_h, margin_l = dd.two_sum(largest, -x[rows, labels])  # m - x[y] >= 0, exact
    return _margin_plus_log1p(margin_h, margin_l, t)


def _margin_plus_log1p(margin_h, margin_l, t: ExactValue) -> ExactValue:
    """(m - x[y]) + log1p(T). A label not at the argmax has margin >= m - s, so T < exp(-margin)
    is negligible beside it; a label at the argmax (margin 0) with T below 2**-80 has loss T."""
    tiny = dd.binary_exponent(t) < LOG1P_IS_T_BELOW
    th = np.where(tiny, 0.0, np.ldexp(t.hi, t.exponent))  # exact for T >= 2**-80
    tl = np.where(tiny, 0.0, np.ldexp(t.lo, t.exponent))
    log_h, log_l = dd.log1p(th, tl)
    log_h = np.where(tiny, t.to_float64(), log_h)
    loss_h, loss_l = dd.add(margin_h, margin_l, log_h, np.where(tiny, 0.0, log_l))
    just_t = tiny & (margin_h == 0)
    return ExactValue(np.where(just_t, t.hi, loss_h), np.where(just_t, t.lo, loss_l), np.where(just_t, t.exponent, 0))
