"""The KL reference's float64 route, for outputs of at most 24 significand bits (float16, bfloat16,
float32): the same non-negative terms as `exact` (p chi(u) where u >= 0, q phi(u) where u < 0, q
where p = 0), with u = w + log1p(S) from exact-as-float64 logit differences, evaluated in float64.
chi and phi are power series below |u| = 1/2, so nothing cancels more than a few bits; the error
is a few units of 2**-53 times the largest |log p| among the terms that carry KL (checked against
the double-double route in the tests: within 2**-44, 20 bits beyond float32). Rows whose KL is below
2**-960, whose |S| is above 1/2, or whose terms overflow go to the double-double route.
"""

from __future__ import annotations

import numpy as np

from harness.exact.dd import HELD_FROM
from harness.exact.reference import BLOCK_ELEMENTS

_SERIES_BELOW = 0.5
_TERMS = 16  # 0.5**14 / 16! below 2**-55 of u**2 / 2


def _series(u, coefficients):
    """u**2 sum_m c_m u**m by Horner's rule in float64."""
    total = np.full(u.shape, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        total = total * u + c
    return total * u * u


_FACTORIALS = np.cumprod(np.arange(1.0, _TERMS + 3))  # 1!, 2!, ...
_CHI = [(-1.0) ** m / _FACTORIALS[m + 1] for m in range(_TERMS)]  # exp(-u) - 1 + u
_PHI = [(m + 1) / _FACTORIALS[m + 1] for m in range(_TERMS)]  # 1 + (u - 1) exp(u)


def chi(u):
    """exp(-u) - 1 + u for u >= 0."""
    small = np.abs(u) < _SERIES_BELOW
    return np.where(small, _series(np.where(small, u, 0.0), _CHI), np.expm1(-u) + u)


def phi(u):
    """1 + (u - 1) exp(u) for u <= 0."""
    small = np.abs(u) < _SERIES_BELOW
    return np.where(small, _series(np.where(small, u, 0.0), _PHI), 1.0 + (u - 1.0) * np.exp(np.minimum(u, 0.0)))


def _log_partition(z, masked):
    """log sum_j exp(z_j) for z_j <= 0 with the (first) argmax's term, 1, left out of the sum: log1p."""
    rows = np.arange(z.shape[0])
    e = np.where(masked, 0.0, np.exp(np.where(masked, -np.inf, z)))
    e[rows, np.argmax(np.where(masked, -np.inf, z), axis=1)] = 0.0
    return np.log1p(e.sum(axis=1))


def kl_rows(t: np.ndarray, s: np.ndarray, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """(T**2 KL per row in float64, whether each row must take the double-double route instead)."""
    masked = t == -np.inf
    rows = np.arange(t.shape[0])
    t_top, s_top = t.max(axis=1), s.max(axis=1)
    safe_t = np.where(masked, t_top[:, None], t)
    za = (safe_t - t_top[:, None]) / temperature
    zb = (s - s_top[:, None]) / temperature
    log_p = za - _log_partition(za, masked)[:, None]
    log_q_direct = zb - _log_partition(zb, np.zeros_like(masked))[:, None]
    p = np.where(masked, 0.0, np.exp(log_p))
    r = np.argmax(np.where(masked, -np.inf, t), axis=1)
    gap = safe_t - s
    w = (gap - gap[rows, r][:, None]) / temperature
    outside = (s - s[rows, r][:, None]) / temperature + log_p[rows, r][:, None]
    terms = np.where(masked, np.exp(np.minimum(outside, 700.0)), p * np.expm1(-np.minimum(w, 700.0)))
    total = terms.sum(axis=1)
    refused = ~np.isfinite(total) | (np.abs(total) > 0.5) | np.any(np.maximum(outside, -w) > 700.0, axis=1)
    u = np.where(masked, 0.0, w + np.log1p(np.where(refused, 0.0, total))[:, None])
    log_q = np.where(masked, log_q_direct, np.minimum(log_p - u, 0.0))
    q = np.exp(log_q)
    positive = u >= 0
    kl_terms = np.where(masked, q, np.where(positive, p * chi(np.maximum(u, 0.0)), q * phi(np.minimum(u, 0.0))))
    kl = temperature**2 * kl_terms.sum(axis=1)
    return kl, refused | ~(kl >= HELD_FROM)


def kl_rows_by_blocks(t: np.ndarray, s: np.ndarray, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """`kl_rows` on blocks of rows of about BLOCK_ELEMENTS logits (the temporaries stay small), joined."""
    rows = max(1, BLOCK_ELEMENTS // t.shape[1])
    parts = [kl_rows(t[i : i + rows], s[i : i + rows], temperature) for i in range(0, len(t), rows)]
    return np.concatenate([kl for kl, _ in parts]), np.concatenate([refused for _, refused in parts])
