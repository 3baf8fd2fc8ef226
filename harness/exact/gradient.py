"""The exact gradient of the summed cross-entropy, softmax(x) - onehot(y), in double-double.

Like `harness.exact.reference`, it is given dtype-rounded logits held exactly in float64 and knows
nothing of frameworks. With m the row's largest logit (first argmax k), s the second largest and

    T = exp(s - m) * sum_{j != k} exp(x[j] - s),    L = log1p(T) = lse(x) - m,

the entries are formed without cancellation:

    p[j]     = exp((x[j] - m) - L)          every j (x[j] - m exact by two_sum; the argument is <= 0)
    g[j]     = p[j]                         j != y
    g[y]     = p[y] - 1                     y != k: p[y] <= 1/2, so no cancellation
    g[y]     = -T * exp(-L) = -(1 - p[k])   y == k: the probability left to the others, kept to its
                                            own relative accuracy however close p[k] is to 1

Accuracy: every entry to about 2**-75 of itself (dd.exp and dd.log1p are good to about 2**-80;
the argument's error, about |L| 2**-80, adds a few bits), so to better than 2**-73 (20 bits beyond
float64) relative to the row's largest entry; `tests/test_gradients.py` checks it against mpmath.
As for the loss, nothing underflows: p[j] and T are scaled dds (`dd.scaled_exp`), and the result
is an `ExactValue` whose entries below 2**-960 carry an exponent < 0, so they keep their relative
accuracy in the subnormal range and below 2**-1075.
"""

from __future__ import annotations

import numpy as np

from harness.exact import dd
from harness.exact.dd import ExactValue
from harness.exact.reference import LOG1P_IS_T_BELOW, by_row_blocks


def exact_gradient(logits: np.ndarray, labels: np.ndarray) -> ExactValue:
    """softmax(x) - onehot(y) of finite float64 logits (rows, classes), as an ExactValue of (rows, classes) arrays."""
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"logits must be (rows, classes>=2), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("the exact gradient needs finite logits")
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):  # -inf marks the argmax column
        return by_row_blocks(_exact_gradient, x, np.asarray(labels))


def _rest_over_top(x: np.ndarray, rows: np.ndarray, top: np.ndarray) -> ExactValue:
    """T = sum_{j != k} exp(x[j] - m), scaled from the second largest logit as in the reference."""
    others = x.copy()
    others[rows, top] = -np.inf
    second = others.max(axis=1)
    dh, dl = dd.two_sum(others, -second[:, None])  # exact x[j] - s <= 0; -inf at the argmax
    sum_h, sum_l = dd.sum_rows(*dd.exp(dh, dl))
    scale = dd.scaled_exp(*dd.two_sum(second, -x[rows, top]))
    return dd.normalized(*dd.mul(scale.hi, scale.lo, sum_h, sum_l), scale.exponent)


def _exact_gradient(x: np.ndarray, labels: np.ndarray) -> ExactValue:
    rows = np.arange(x.shape[0])
    top = np.argmax(x, axis=1)
    largest = x[rows, top]
    t = _rest_over_top(x, rows, top)
    tiny = dd.binary_exponent(t) < LOG1P_IS_T_BELOW  # there L = log1p(T) = T to 2**-81
    log_h, log_l = dd.log1p(np.where(tiny, 0.0, t.to_float64()), np.where(tiny, 0.0, np.ldexp(t.lo, t.exponent)))
    log_h, log_l = np.where(tiny, t.to_float64(), log_h), np.where(tiny, 0.0, log_l)  # L = lse - m >= 0

    dh, dl = dd.two_sum(x, -largest[:, None])  # x[j] - m <= 0, exact
    p = dd.scaled_exp(*dd.add(dh, dl, -log_h[:, None], -log_l[:, None]))  # softmax, every entry
    hi, lo, exponent = p.hi.copy(), p.lo.copy(), p.exponent.copy()

    p_y = ExactValue(*(part[rows, labels] for part in p))
    y_h, y_l = dd.add(p_y.to_float64(), np.ldexp(p_y.lo, p_y.exponent), -1.0, 0.0)  # p[y] - 1, label not the argmax
    top_h, top_l = dd.exp(-log_h, -log_l)  # p[k] = exp(-L) >= 1/n
    rest = dd.normalized(*dd.mul(t.hi, t.lo, top_h, top_l), t.exponent)  # 1 - p[k] = T p[k], label the argmax
    label_is_top = labels == top
    hi[rows, labels] = np.where(label_is_top, -rest.hi, y_h)
    lo[rows, labels] = np.where(label_is_top, -rest.lo, y_l)
    exponent[rows, labels] = np.where(label_is_top, rest.exponent, 0)
    return ExactValue(hi, lo, exponent)
