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
Limit, as for the loss: entries below about 2**-969 are held to a few units of 2**-1074, because
the low word underflows there; a row whose largest entry is that small loses relative accuracy.
"""

from __future__ import annotations

import numpy as np

from harness.exact import dd


def exact_gradient(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """softmax(x) - onehot(y) of finite float64 logits (rows, classes), as (hi, lo) arrays (rows, classes)."""
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"logits must be (rows, classes>=2), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("the exact gradient needs finite logits")
    with np.errstate(invalid="ignore", over="ignore"):  # -inf marks the argmax column
        return _exact_gradient(x, np.asarray(labels))


def _rest_over_top(x: np.ndarray, rows: np.ndarray, top: np.ndarray):
    """T = sum_{j != k} exp(x[j] - m) as dd, scaled from the second largest logit as in the reference."""
    others = x.copy()
    others[rows, top] = -np.inf
    second = others.max(axis=1)
    dh, dl = dd.two_sum(others, -second[:, None])  # exact x[j] - s <= 0; -inf at the argmax
    sum_h, sum_l = dd.sum_rows(*dd.exp(dh, dl))
    scale_h, scale_l = dd.exp(*dd.two_sum(second, -x[rows, top]))
    return dd.mul(scale_h, scale_l, sum_h, sum_l)


def _exact_gradient(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = np.arange(x.shape[0])
    top = np.argmax(x, axis=1)
    largest = x[rows, top]
    th, tl = _rest_over_top(x, rows, top)
    log_h, log_l = dd.log1p(th, tl)  # L = lse - m >= 0

    dh, dl = dd.two_sum(x, -largest[:, None])  # x[j] - m <= 0, exact
    ph, pl = dd.exp(*dd.add(dh, dl, -log_h[:, None], -log_l[:, None]))  # softmax, every entry

    y_h, y_l = dd.add(ph[rows, labels], pl[rows, labels], -1.0, 0.0)  # p[y] - 1, label not the argmax
    top_h, top_l = dd.exp(-log_h, -log_l)  # p[k] = exp(-L)
    rest_h, rest_l = dd.mul(th, tl, top_h, top_l)  # 1 - p[k] = T p[k], label the argmax
    label_is_top = labels == top
    ph[rows, labels] = np.where(label_is_top, -rest_h, y_h)
    pl[rows, labels] = np.where(label_is_top, -rest_l, y_l)
    return ph, pl
