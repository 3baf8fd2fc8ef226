"""NumPy/SciPy paths of the distillation loss T**2 KL(softmax(t / T) || softmax(s / T)).

``PATHS[name](teacher, student, *, temperature=1.0) -> loss``: per-row loss in the logits' dtype.
scipy.special.rel_entr has no half-float loops: float16 and bfloat16 probabilities go through it
in float32, the result rounded once. SciPy has no KL on log-probabilities (no
`kl_div_log_target`: declared in the entries).

NumPy has no autodiff: ``GRADIENTS[name]`` (with respect to the student) are the harness's own
backward passes, the chain rule through each path's operations in its dtype: naive and kl_div
take d/dq = -T**2 p / q, then the softmax's backward q (g - sum q g), then 1 / T (NaN where q
underflows under a positive p, as an autodiff's would); ce_minus_entropy takes log_softmax's
backward, T**2 (q sum p - p), then 1 / T.
"""

from __future__ import annotations

import numpy as np
from scipy import special

_HALF = ("float16", "bfloat16")


def _scaled(x, temperature):
    return (x / np.asarray(temperature, dtype=x.dtype)).astype(x.dtype)


def naive(teacher, student, *, temperature=1.0):
    p = special.softmax(_scaled(teacher, temperature), axis=1)
    q = special.softmax(_scaled(student, temperature), axis=1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        kl = (p * (np.log(p) - np.log(q))).sum(axis=1)
    return (temperature**2 * kl).astype(teacher.dtype)


def kl_div(teacher, student, *, temperature=1.0):
    """scipy.special.rel_entr(p, q) summed: p log(p / q), 0 where p is 0."""
    p = special.softmax(_scaled(teacher, temperature), axis=1)
    q = special.softmax(_scaled(student, temperature), axis=1)
    if teacher.dtype.name in _HALF:
        p, q = p.astype(np.float32), q.astype(np.float32)
    terms = special.rel_entr(p, q).astype(teacher.dtype)
    return (temperature**2 * terms.sum(axis=1)).astype(teacher.dtype)


def ce_minus_entropy(teacher, student, *, temperature=1.0):
    """-sum p log_softmax(s / T) + sum p log_softmax(t / T) (scipy.special): 0 * -inf = NaN where p = 0."""
    p = special.softmax(_scaled(teacher, temperature), axis=1)
    with np.errstate(invalid="ignore", over="ignore"):
        cross = -(p * special.log_softmax(_scaled(student, temperature), axis=1)).sum(axis=1)
        entropy = -(p * special.log_softmax(_scaled(teacher, temperature), axis=1)).sum(axis=1)
    return (temperature**2 * (cross - entropy)).astype(teacher.dtype)


PATHS = {
    "naive": naive,
    "kl_div": kl_div,
    "ce_minus_entropy": ce_minus_entropy,
}


def _through_softmax_and_log(teacher, student, *, temperature=1.0):
    p = special.softmax(_scaled(teacher, temperature), axis=1)
    q = special.softmax(_scaled(student, temperature), axis=1)
    square = np.asarray(temperature**2, dtype=student.dtype)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        by_q = -square * p / q
        by_z = q * (by_q - (q * by_q).sum(axis=1, keepdims=True))
    return (by_z / np.asarray(temperature, dtype=student.dtype)).astype(student.dtype)


def ce_minus_entropy_gradient(teacher, student, *, temperature=1.0):
    p = special.softmax(_scaled(teacher, temperature), axis=1)
    q = special.softmax(_scaled(student, temperature), axis=1)
    square = np.asarray(temperature**2, dtype=student.dtype)
    by_z = square * (q * p.sum(axis=1, keepdims=True) - p)
    return (by_z / np.asarray(temperature, dtype=student.dtype)).astype(student.dtype)


GRADIENTS = {
    "naive": _through_softmax_and_log,
    "kl_div": _through_softmax_and_log,
    "ce_minus_entropy": ce_minus_entropy_gradient,
}
