"""The exact distillation loss T**2 KL(softmax(t / T) || softmax(s / T)) per row and its gradient
with respect to the student's logits, in double-double.

With p the teacher's and q the student's probabilities and u_j = log p_j - log q_j, KL is written
as a sum of non-negative terms, adding sum_j (q_j - p_j) = 0 term by term:

    KL = sum_j p_j chi(u_j)    chi(u) = exp(-u) - 1 + u            where u_j >= 0
       + sum_j q_j phi(u_j)    phi(u) = 1 + (u - 1) exp(u)         where u_j < 0
       + sum_j q_j                                                  where p_j = 0 (0 log 0 = 0)

(p chi(u) = q phi(u) = p log(p / q) - p + q). Nothing cancels in the sum, and chi and phi are
power series below |u| = 1/2 (u**2/2 - ...), so a KL of 1e-25 (a student within 1e-12 of its
teacher) keeps its relative accuracy. The u_j carry it: u_j = w_j + log1p(S) with
w_j = ((t_j - s_j) - (t_r - s_r)) / T, r the teacher's argmax, each difference formed exactly
(two_sum), and S = sum_j p_j expm1(-w_j) (= e**-w_j p_j - p_j where |w_j| > 1), which is
log(sum_j p_j exp(-w_j)) without ever forming lse(t / T) - lse(s / T) as a difference of two
large numbers. A row where |S| > 1/2 (teacher and student far apart, KL of order 1 / classes or
more) takes u_j = (t_j - s_j - (max t - max s)) / T - (log Z_t - log Z_s) instead, with
log Z = log1p(sum of the others' exp(z_j - max)): KL is stationary in a shift common to every
u_j (d KL / d shift = 1 - sum q = 0), so that route's error in the log-partitions costs KL
nothing to first order.

The gradient of T**2 KL with respect to the student's logits s_j is T (q_j - p_j) (d/ds_j of
-sum_i p_i log q_i is (q_j - p_j) / T), formed as T p_j expm1(-u_j) where u_j >= 0 and
-T q_j expm1(u_j) where u_j < 0: relative to itself, never q_j - p_j rounded apart.

Probabilities are scaled dds (`dd.scaled_exp`), so underflowing probabilities keep their terms
and a KL or gradient entry below float64's range keeps its relative accuracy (`ExactValue`).
Teacher logits may be -inf (p_j = 0); student logits must be finite (else KL is inf). For outputs
of at most 24 significand bits the loss takes a float64 route of the same terms (`exact_float64`).
"""

from __future__ import annotations

import functools

import numpy as np

from harness.exact import dd
from harness.exact.dd import ExactValue
from harness.exact.reference import by_row_blocks
from harness.losses.binary_cross_entropy import dd_functions as ddf
from harness.losses.kl_divergence import exact_float64

FLOAT64_ROUTE_UP_TO = 24  # significand bits of the output for which the float64 route suffices
NEAR_ROUTE_UP_TO = 0.5  # |S| up to this: u_j = w_j + log1p(S); beyond, the log-partition route
_WIDE = 1.0  # |w_j| beyond this: p_j exp(-w_j) - p_j instead of p_j expm1(-w_j)
_OVERFLOW_GUARD = 700.0  # log p_j - w_j above this: exp would overflow; the row takes the other route


def _checked(teacher, student, temperature):
    t = np.asarray(teacher, dtype=np.float64)
    s = np.asarray(student, dtype=np.float64)
    if t.shape != s.shape or t.ndim != 2 or t.shape[1] < 2:
        raise ValueError(f"teacher and student logits must share a (rows, classes>=2) shape: {t.shape}, {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("the exact KL divergence needs finite student logits")
    if np.any(np.isnan(t) | (t == np.inf)) or np.any(np.all(t == -np.inf, axis=1)):
        raise ValueError("teacher logits must be finite or -inf, with a finite one in every row")
    temperature = float(temperature)
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be positive and finite, got {temperature}")
    return t, s, temperature


def _over_temperature(hi, lo, temperature):
    if temperature == 1.0:
        return hi, lo
    return ddf.div(hi, lo, np.full_like(hi, temperature), np.zeros_like(hi))


def _log_partition(z_h, z_l, masked):
    """log sum_j exp(z_j) for z_j = (x_j - max) / T <= 0 (masked entries excluded), as dd:
    log1p of the sum over every entry but the first argmax (whose term is exactly 1)."""
    rows = np.arange(z_h.shape[0])
    top = np.argmax(np.where(masked, -np.inf, z_h), axis=1)
    eh, el = dd.exp(np.where(masked, -np.inf, z_h), np.where(masked, 0.0, z_l))
    eh[rows, top], el[rows, top] = 0.0, 0.0
    return dd.log1p(*dd.sum_rows(eh, el))


_KEPT_PARTS = 4  # blocks whose parts are kept: the gradient of an input follows its loss


@functools.lru_cache(maxsize=_KEPT_PARTS)
def _kept_parts(t_bytes: bytes, s_bytes: bytes, shape: tuple[int, int], temperature: float):
    t = np.frombuffer(t_bytes, dtype=np.float64).reshape(shape)
    s = np.frombuffer(s_bytes, dtype=np.float64).reshape(shape)
    p, u, q, masked = _computed_parts(t, s, temperature)
    for array in (*p, *u, *q, masked):
        if isinstance(array, np.ndarray):
            array.flags.writeable = False  # shared by the loss and the gradient: never changed in place
    return p, u, q, masked


def _parts(t: np.ndarray, s: np.ndarray, temperature: float):
    """(p, u, q, teacher's -inf mask) of a block, computed once for its loss and its gradient (the
    double-double terms are most of either's cost); keyed by the logits' bytes."""
    t, s = np.ascontiguousarray(t, dtype=np.float64), np.ascontiguousarray(s, dtype=np.float64)
    return _kept_parts(t.tobytes(), s.tobytes(), t.shape, float(temperature))


def _computed_parts(t: np.ndarray, s: np.ndarray, temperature: float):
    """(log p, u, log q) per entry as dd pairs, and the mask of the teacher's -inf entries."""
    masked = t == -np.inf
    rows = np.arange(t.shape[0])
    t_top = np.max(t, axis=1)
    s_top = np.max(s, axis=1)
    safe_t = np.where(masked, t_top[:, None], t)
    za = _over_temperature(*dd.two_sum(safe_t, -t_top[:, None]), temperature)
    zb = _over_temperature(*dd.two_sum(s, -s_top[:, None]), temperature)
    la = _log_partition(*za, masked)
    lb = _log_partition(*zb, np.zeros_like(masked))
    log_p = dd.add(*za, -la[0][:, None], -la[1][:, None])
    log_q_direct = dd.add(*zb, -lb[0][:, None], -lb[1][:, None])
    p = dd.scaled_exp(np.where(masked, 0.0, log_p[0]), np.where(masked, 0.0, log_p[1]))
    p_h, p_l = np.where(masked, 0.0, p.to_float64()), np.where(masked, 0.0, np.ldexp(p.lo, p.exponent))

    # near route: u = w + log1p(S), w_j = ((t_j - s_j) - (t_r - s_r)) / T
    gap = dd.two_sum(safe_t, -s)
    r = np.argmax(np.where(masked, -np.inf, t), axis=1)
    w = _over_temperature(*dd.add(*gap, -gap[0][rows, r][:, None], -gap[1][rows, r][:, None]), temperature)
    wide = np.abs(w[0]) > _WIDE
    shifted = dd.add(*log_p, -w[0], -w[1])  # log(p_j exp(-w_j))
    overflow = np.any(~masked & (shifted[0] > _OVERFLOW_GUARD), axis=1)
    narrow_terms = dd.mul(p_h, p_l, *ddf.expm1(np.where(wide, 0.0, -w[0]), np.where(wide, 0.0, -w[1])))
    big = _exp_at(wide & ~masked, np.minimum(shifted[0], _OVERFLOW_GUARD), shifted[1])
    wide_terms = dd.add(*big, -p_h, -p_l)
    # where p_j = 0 the term is the student's exp((s_j - s_r) / T) p_r: its share outside the teacher's support
    outside = dd.add(*_over_temperature(*dd.two_sum(s, -s[rows, r][:, None]), temperature), *_log_p_r(log_p, rows, r))
    overflow |= np.any(masked & (outside[0] > _OVERFLOW_GUARD), axis=1)
    outside = _exp_at(masked, np.minimum(outside[0], _OVERFLOW_GUARD), outside[1])
    term_h = np.where(masked, outside[0], np.where(wide, wide_terms[0], narrow_terms[0]))
    term_l = np.where(masked, outside[1], np.where(wide, wide_terms[1], narrow_terms[1]))
    sum_h, sum_l = dd.sum_rows(term_h, term_l)
    near = ~overflow & (np.abs(sum_h) <= NEAR_ROUTE_UP_TO)
    c = ddf.log1p(np.where(near, sum_h, 0.0), np.where(near, sum_l, 0.0))
    u_near = dd.add(*w, c[0][:, None], c[1][:, None])

    if near.all():
        u = u_near
    else:  # log-partition route: u = ((t_j - s_j) - (max t - max s)) / T - (log Z_t - log Z_s)
        tops = dd.two_sum(t_top, -s_top)
        v = _over_temperature(*dd.add(*gap, -tops[0][:, None], -tops[1][:, None]), temperature)
        dl = dd.add(*la, -lb[0], -lb[1])
        u_far = dd.add(*v, -dl[0][:, None], -dl[1][:, None])
        u = tuple(np.where(near[:, None], un, uf) for un, uf in zip(u_near, u_far, strict=True))
    u = tuple(np.where(masked, 0.0, part) for part in u)
    log_q = dd.add(*log_p, -u[0], -u[1])
    log_q = tuple(np.where(masked, direct, part) for direct, part in zip(log_q_direct, log_q, strict=True))
    log_q = (np.minimum(log_q[0], 0.0), np.where(log_q[0] > 0, 0.0, log_q[1]))
    p = ExactValue(*(np.where(masked, 0, part) for part in p))
    return p, u, dd.scaled_exp(*log_q), masked


def _exp_at(where, hi, lo):
    """exp of the dd (hi, lo) where `where`, 0 elsewhere, evaluated only where used."""
    out_h, out_l = np.zeros(hi.shape), np.zeros(hi.shape)
    if where.any():
        out_h[where], out_l[where] = ddf.exp_any(hi[where], lo[where])
    return out_h, out_l


def _log_p_r(log_p, rows, r):
    """log p at the teacher's argmax r of each row, as a column of dd."""
    return log_p[0][rows, r][:, None], log_p[1][rows, r][:, None]


def _kl_rows(t: np.ndarray, s: np.ndarray, temperature: float) -> ExactValue:
    p, (uh, ul), q, masked = _parts(t, s, temperature)
    positive = uh >= 0
    over_p = ddf.times(p, *ddf.chi(np.where(positive, uh, 0.0), np.where(positive, ul, 0.0)))
    over_q = ddf.times(q, *ddf.phi(np.where(positive, 0.0, uh), np.where(positive, 0.0, ul)))
    terms = ExactValue(
        *(np.where(masked, pq, np.where(positive, pp, pq)) for pp, pq in zip(over_p, over_q, strict=True))
    )
    terms = ExactValue(*(np.where(masked, part_q, part) for part, part_q in zip(terms, q, strict=True)))
    kl = ddf.sum_last_axis(terms)
    return ddf.times(kl, *dd.two_prod(np.full(len(t), temperature), temperature))


def _gradient_rows(t: np.ndarray, s: np.ndarray, temperature: float) -> ExactValue:
    p, (uh, ul), q, masked = _parts(t, s, temperature)
    positive = (uh >= 0) & ~masked
    from_p = ddf.times(p, *ddf.expm1(np.where(positive, -uh, 0.0), np.where(positive, -ul, 0.0)))
    mh, ml = ddf.expm1(np.where(positive | masked, 0.0, uh), np.where(positive | masked, 0.0, ul))
    from_q = ddf.times(q, -mh, -ml)
    gradient = ExactValue(*(np.where(positive, fp, fq) for fp, fq in zip(from_p, from_q, strict=True)))
    gradient = ExactValue(*(np.where(masked, part_q, part) for part, part_q in zip(gradient, q, strict=True)))
    return ddf.times(gradient, np.full(t.shape, temperature), np.zeros(t.shape))


def exact_kl_divergence(teacher, student, output_precision: int = 53, *, temperature: float = 1.0) -> ExactValue:
    """T**2 KL(softmax(teacher / T) || softmax(student / T)) per row of (rows, classes) logits. For outputs
    of at most 24 significand bits, a float64 route good to 2**-44 (`exact_float64`), rows it cannot
    hold falling back to this double-double one."""
    t, s, temperature = _checked(teacher, student, temperature)
    with np.errstate(under="ignore", over="ignore", invalid="ignore", divide="ignore"):
        if output_precision > FLOAT64_ROUTE_UP_TO:
            return by_row_blocks(lambda a, b: _kl_rows(a, b, temperature), t, s)
        fast, refused = exact_float64.kl_rows_by_blocks(t, s, temperature)
        value = ExactValue.of(fast, np.zeros_like(fast))
        if refused.any():
            exact = by_row_blocks(lambda a, b: _kl_rows(a, b, temperature), t[refused], s[refused])
            value = ExactValue(*(np.array(part, copy=True) for part in value))
            for part, held in zip(value, exact, strict=True):
                part[refused] = held
        return value


def exact_kl_divergence_gradient(teacher, student, *, temperature: float = 1.0) -> ExactValue:
    """d(T**2 KL) / d student = T (q - p), per entry of (rows, classes) logits."""
    t, s, temperature = _checked(teacher, student, temperature)
    with np.errstate(under="ignore", over="ignore", invalid="ignore"):
        return by_row_blocks(lambda a, b: _gradient_rows(a, b, temperature), t, s)
