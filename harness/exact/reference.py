"""The exact cross-entropy of float64-held logits, in double-double (about 2**-75 relative).

The reference knows nothing of frameworks: it is given the dtype-rounded logits held exactly in
float64, and returns lse(x) - x[y] as a pair (hi, lo) whose sum is the exact loss to about
2**-75 relative, so float64 results can be measured to a small fraction of an ulp. Told that the
output has at most 24 significand bits, it takes a float64 route good to 2**-48 instead, more
than 20 bits beyond those outputs and about 15 times faster.

The route avoids every cancellation. With m the row's largest logit and s the second largest,

    loss = (m - x[y]) + log1p(T),   T = exp(s - m) * sum_{j != argmax} exp(x[j] - s)

Both terms are non-negative; every difference of logits is formed exactly (two_sum); the sum has
terms in (0, 1] with at least one equal to 1; log1p keeps the tiny losses of confident rows.
Limit: exact losses below about 2**-969 (1e-292, a probability within that of one) are held to
a few units of 2**-1074 (float64's absolute resolution), because the low word underflows there.
"""

from __future__ import annotations

import numpy as np

from harness.exact import dd

FLOAT64_ROUTE_UP_TO = 24  # significand bits of the output for which the float64 route suffices


def exact_cross_entropy(logits: np.ndarray, labels: np.ndarray, output_precision: int = 53):
    """Exact lse(x) - x[y] per row of finite float64 logits (rows, classes); returns (hi, lo).

    For outputs of at most 24 significand bits (float16, bfloat16, float32) the same formula is
    evaluated in float64 (lo = 0): each term exp(x[j] - s) to about 1 ulp, a pairwise sum, one
    log1p, no cancellation, so the relative error stays below (4 + log2 n) 2**-53, which is at
    most 2**-48 for n <= 131072 classes: more than 20 bits beyond float32's 2**-24 (checked
    against the double-double route in the tests). float64 outputs get the double-double route.
    """
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"logits must be (rows, classes>=2), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("the exact reference needs finite logits")
    route = _float64_route if output_precision <= FLOAT64_ROUTE_UP_TO else _double_double_route
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):  # -inf marks the argmax column
        return route(x, np.asarray(labels))


def _largest_two(x: np.ndarray):
    """Rows' largest logit m, second largest s, and x with the (first) argmax set to -inf."""
    rows = np.arange(x.shape[0])
    top = np.argmax(x, axis=1)
    largest = x[rows, top]
    others = x.copy()
    others[rows, top] = -np.inf
    return largest, others.max(axis=1), others


def _float64_route(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = np.arange(x.shape[0])
    largest, second, others = _largest_two(x)
    dh, dl = dd.two_sum(others, -second[:, None])  # exact x[j] - s <= 0
    terms = np.exp(dh) * (1.0 + np.where(np.isfinite(dh), dl, 0.0))  # exp(dh + dl) to first order
    gap_h, gap_l = dd.two_sum(second, -largest)
    t = np.exp(gap_h) * (1.0 + gap_l) * terms.sum(axis=1)
    loss = (largest - x[rows, labels]) + np.log1p(t)
    return loss, np.zeros_like(loss)


def _double_double_route(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = np.arange(x.shape[0])
    largest, second, others = _largest_two(x)

    dh, dl = dd.two_sum(others, -second[:, None])  # exact x[j] - s <= 0; -inf at argmax
    eh, el = dd.exp(dh, dl)
    sum_h, sum_l = dd.sum_rows(eh, el)
    gap_h, gap_l = dd.two_sum(second, -largest)
    scale_h, scale_l = dd.exp(gap_h, gap_l)
    th, tl = dd.mul(scale_h, scale_l, sum_h, sum_l)
    log_h, log_l = dd.log1p(th, tl)

    margin_h, margin_l = dd.two_sum(largest, -x[rows, labels])  # m - x[y] >= 0, exact
    return dd.add(margin_h, margin_l, log_h, log_l)
