"""NumPy (and SciPy) paths and their backward passes, written out by hand.

``PATHS[name](x, y) -> loss``: per-row loss of logits x (N, C) and labels y (N,), in x's dtype
(bfloat16 from ml_dtypes); ``GRADIENTS[name](x, y)``: d(sum of the per-row losses)/dx, in x's dtype.

Each backward pass is the reverse sweep of its forward's own operations, from the same
intermediates in the same dtype, so it overflows, underflows and divides by zero where autodiff of
that forward would. Three conventions, shared with the torch and JAX paths:

- A shift by a row (or block, or chunk) maximum that cancels in exact arithmetic (inside softmax,
  log-softmax, the online recurrence, a chunk's log-sum-exp) is a constant, as in jax.nn (which
  stops its gradient) and torch's softmax kernels: it adds no term.
- Where the maximum is a term of the formula because its own element is left out of the sum
  (`log1p_lse`; SciPy's logsumexp, behind `fused`), its derivative is carried: to the argmax for
  `log1p_lse`, shared equally among tied maxima for SciPy's max (as torch and JAX share a max's).
- logaddexp(a, b) = o has the partial derivatives exp(a - o) and exp(b - o) (JAX's choice).

SciPy's logsumexp (behind `fused`) promotes bfloat16 to float64: the bfloat16 `fused` loss comes
back in float64, and its gradient is the float64 one rounded to bfloat16 (the cast's backward).
"""

from __future__ import annotations

import numpy as np
import scipy.special

from harness.dtypes import round_to
from harness.paths import size_or_default

NUMPY_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def _pick(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.take_along_axis(values, labels[:, None], axis=1)[:, 0]


def _rows(x: np.ndarray) -> np.ndarray:
    return np.arange(x.shape[0])


def _one(x: np.ndarray):
    """1 in x's dtype (a Python float would promote bfloat16 arrays to float32)."""
    return x.dtype.type(1)


def _minus_onehot(g: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """g with 1 taken off each row's label entry: the backward of `- x[y]`."""
    g = g.copy()
    g[_rows(g), labels] -= _one(g)
    return g


def _column_blocks(n_classes: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, n_classes)) for start in range(0, n_classes, size)]


# --- naive: p = exp(x) / sum(exp(x)), loss = -log(p[y]) ----------------------------------------


def _naive_parts(x):
    e = np.exp(x)
    s = e.sum(axis=1, keepdims=True)
    return e, s, e / s


def naive(x, y):
    with np.errstate(all="ignore"):
        _, _, p = _naive_parts(x)
        return -np.log(_pick(p, y))


def _quotient_gradient(e, s, p, y):
    """Backward of loss = -log(p[y]), p = e / s, s = sum(e): the cotangent of e (N, C).

    Through s as torch's division does, -g * ((e / s) / s): p[y] / s underflows to 0 once it is
    below 2**-1075 (float64), and the whole row then loses the 1/s term (JAX, with -g * e * s**-2,
    does not). That break is part of what the naive path is measured for."""
    p_y, s = _pick(p, y), s[:, 0]
    g_p_y = -_one(e) / p_y  # d(-log p)/dp
    g_s = -(g_p_y * (p_y / s))  # p = e / s through s: -g * (e / s) / s
    g_e = np.broadcast_to(g_s[:, None], e.shape).copy()  # s = sum(e)
    g_e[_rows(e), y] += g_p_y / s  # p = e / s through e
    return g_e


def naive_gradient(x, y):
    with np.errstate(all="ignore"):
        e, s, p = _naive_parts(x)
        return _quotient_gradient(e, s, p, y) * e  # e = exp(x)


# --- softmax_log: -log(scipy.special.softmax(x)[y]) --------------------------------------------


def _softmax_parts(x):
    """scipy.special.softmax, step by step: e = exp(x - max), p = e / sum(e)."""
    e = np.exp(x - x.max(axis=1, keepdims=True))
    s = e.sum(axis=1, keepdims=True)
    return e, s, e / s


def softmax_log(x, y):
    with np.errstate(all="ignore"):
        return -np.log(_pick(scipy.special.softmax(x, axis=1), y))


def softmax_log_gradient(x, y):
    with np.errstate(all="ignore"):
        e, s, p = _softmax_parts(x)
        return _quotient_gradient(e, s, p, y) * e  # e = exp(x - max), the max a constant


# --- log_softmax_nll: log_p = (x - max) - log(sum(exp(x - max))), loss = -log_p[y] -------------


def _log_softmax_parts(x):
    shifted = x - x.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    s = e.sum(axis=1, keepdims=True)
    return shifted, e, s, shifted - np.log(s)


def log_softmax_nll(x, y):
    with np.errstate(all="ignore"):
        *_, log_p = _log_softmax_parts(x)
        return -_pick(log_p, y)


def log_softmax_nll_gradient(x, y):
    with np.errstate(all="ignore"):
        _, e, s, _ = _log_softmax_parts(x)
        g_log_p = _minus_onehot(np.zeros_like(x), y)
        g_s = -g_log_p.sum(axis=1, keepdims=True) / s  # log_p = shifted - log(s)
        return g_log_p + g_s * e  # s = sum(e), e = exp(shifted), shifted = x - max (a constant)


# --- fused: scipy.special.logsumexp(x) - x[y] --------------------------------------------------


def scipy_logsumexp_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype SciPy's logsumexp computes in: NumPy's own floats stay, others become float64."""
    return dtype if dtype in NUMPY_FLOATS else np.dtype(np.float64)


def _scipy_logsumexp_parts(a):
    """SciPy 1.17's logsumexp over rows, step by step (scipy.special._logsumexp, real input).

    The maxima are taken out of the sum: with M the row max and n its count,
    lse = log1p(s / n) + log(n) + M, s = sum over the others of exp(x - M); where that is not
    finite SciPy falls back on log(sum(exp(x))).
    """
    a = a.astype(scipy_logsumexp_dtype(a.dtype))
    a_max = a.max(axis=1, keepdims=True)
    is_max = a == a_max
    n_max = is_max.astype(a.dtype).sum(axis=1, keepdims=True, dtype=a.dtype)
    e = np.exp(np.where(is_max, a.dtype.type(-np.inf), a) - a_max)
    s = e.sum(axis=1, keepdims=True, dtype=a.dtype)
    s_per_max = np.where(s == 0, s, s / n_max)
    lse = np.log1p(s_per_max) + np.log(n_max) + a_max
    direct_e = np.exp(a)
    direct_sum = direct_e.sum(axis=1, keepdims=True)
    finite = np.isfinite(lse)
    return {
        "a_max": a_max,
        "is_max": is_max,
        "n_max": n_max,
        "e": e,
        "s": s,
        "s_per_max": s_per_max,
        "finite": finite,
        "direct_e": direct_e,
        "direct_sum": direct_sum,
        "lse": np.where(finite, lse, np.log(direct_sum))[:, 0],
    }


def _scipy_logsumexp_gradient(parts):
    """d lse / d a, in SciPy's dtype, by the reverse sweep of `_scipy_logsumexp_parts`."""
    one = parts["e"].dtype.type(1)
    g_s_per_max = one / (one + parts["s_per_max"])  # log1p
    g_s = np.where(parts["s"] == 0, g_s_per_max, g_s_per_max / parts["n_max"])
    g_shifted = g_s * parts["e"]  # s = sum(e), e = exp(a - a_max) (0 at the maxima)
    # + a_max, and - a_max inside exp: 1 - sum(g_shifted) = 1 - (s/n) / (1 + s/n) = 1 / (1 + s/n), formed as
    # the quotient (the difference cancels: in float16 at s = 999 it was off by half its value)
    g_a_max = g_s_per_max
    stable = np.where(parts["is_max"], g_a_max / parts["n_max"], g_shifted)  # max shared by ties
    direct = (one / parts["direct_sum"]) * parts["direct_e"]  # log(sum(exp(a)))
    return np.where(parts["finite"], stable, direct)


def fused(x, y):
    with np.errstate(all="ignore"):
        return scipy.special.logsumexp(x, axis=1) - _pick(x, y)


def fused_gradient(x, y):
    with np.errstate(all="ignore"):
        g_lse = _scipy_logsumexp_gradient(_scipy_logsumexp_parts(x))
        g_lse = round_to(g_lse, x.dtype.name) if g_lse.dtype != x.dtype else g_lse  # the promotion's backward
        return _minus_onehot(g_lse, y)


# --- upcast_fused: fused in float32, cast back ---------------------------------------------------


def upcast_fused(x, y):
    """Mixed precision: float32 whatever the input; float64 logits are cast down, as AMP would."""
    return fused(x.astype(np.float32), y).astype(x.dtype)


def upcast_fused_gradient(x, y):
    return fused_gradient(x.astype(np.float32), y).astype(x.dtype)


# --- log1p_lse: (x - m)[y] taken from log1p(sum over j != argmax of exp(x_j - m)) --------------


def _log1p_lse_parts(x):
    top = np.argmax(x, axis=1)
    m = x[_rows(x), top][:, None]
    shifted = x - m
    e = np.exp(shifted)
    e[_rows(x), top] = 0  # the argmax's own term, exp(0) = 1, is the "1 +" of log1p
    return top, shifted, e, e.sum(axis=1)


def log1p_lse(x, y):
    """Blanchard, Higham & Higham (2021): lse = m + log1p(s); the loss is log1p(s) - (x[y] - m)."""
    with np.errstate(all="ignore"):
        _, shifted, _, s = _log1p_lse_parts(x)
        return np.log1p(s) - _pick(shifted, y)


def log1p_lse_gradient(x, y):
    with np.errstate(all="ignore"):
        top, _, e, s = _log1p_lse_parts(x)
        one = _one(x)
        g_s = one / (one + s)  # log1p
        g_shifted = _minus_onehot(g_s[:, None] * e, y)  # sum, exp (0 at the argmax), - shifted[y]
        g_m = -g_shifted.sum(axis=1)  # shifted = x - m
        g_shifted[_rows(x), top] += g_m  # m = x[argmax]
        return g_shifted


# --- online: running max and rescaled running sum over class blocks ------------------------------


def _online_steps(x, block_size):
    """Milakov & Gimelshein (2018), vectorised over rows: m = -inf, d = 0, then for each block
    m' = max(m, max(block)), d' = d exp(m - m') + sum(exp(block - m')). Returns (m, d, steps),
    steps[k] = (block columns, exp(m - m'), exp(block - m')) for the backward pass."""
    m = np.full((x.shape[0], 1), -np.inf, dtype=x.dtype)
    d = np.zeros((x.shape[0], 1), dtype=x.dtype)
    steps = []
    for columns in _column_blocks(x.shape[1], size_or_default("block_size", block_size)):
        block = x[:, columns]
        m_new = np.maximum(m, block.max(axis=1, keepdims=True))
        rescale = np.exp(m - m_new)
        e = np.exp(block - m_new)
        d = d * rescale + e.sum(axis=1, keepdims=True)
        m = m_new
        steps.append((columns, rescale, e))
    return m, d, steps


def online(x, y, block_size=None):
    with np.errstate(all="ignore"):
        m, d, _ = _online_steps(x, block_size)
        return (m + np.log(d))[:, 0] - _pick(x, y)


def online_gradient(x, y, block_size=None):
    with np.errstate(all="ignore"):
        _, d, steps = _online_steps(x, block_size)
        g = np.empty_like(x)
        g_d = _one(x) / d  # lse = m + log(d), m a constant
        for columns, rescale, e in reversed(steps):
            g[:, columns] = g_d * e  # d' = d * rescale + sum(e), e = exp(block - m')
            g_d = g_d * rescale
        return _minus_onehot(g, y)


# --- chunked: logsumexp per vocabulary chunk, merged with logaddexp -----------------------------


def _chunked_steps(x, chunk_size):
    """Per chunk: m_c = max, e_c = exp(x_c - m_c), s_c = sum(e_c), lse_c = m_c + log(s_c)
    (the shifted log-sum-exp of torch.logsumexp and jax.nn.logsumexp, written with NumPy ops so
    that it stays in the input dtype); then lse = logaddexp(... logaddexp(lse_0, lse_1) ..., lse_K).
    Returns (lse, chunks, merged): chunks[c] = (columns, e_c, s_c, lse_c), merged[c] = running lse."""
    chunks, merged = [], []
    lse = None
    for columns in _column_blocks(x.shape[1], size_or_default("chunk_size", chunk_size)):
        block = x[:, columns]
        m = block.max(axis=1, keepdims=True)
        e = np.exp(block - m)
        s = e.sum(axis=1, keepdims=True)
        lse_c = (m + np.log(s))[:, 0]
        lse = lse_c if lse is None else np.logaddexp(lse, lse_c)
        chunks.append((columns, e, s, lse_c))
        merged.append(lse)
    return lse, chunks, merged


def chunked(x, y, chunk_size=None):
    with np.errstate(all="ignore"):
        lse, _, _ = _chunked_steps(x, chunk_size)
        return lse - _pick(x, y)


def chunked_gradient(x, y, chunk_size=None):
    with np.errstate(all="ignore"):
        _, chunks, merged = _chunked_steps(x, chunk_size)
        g = np.empty_like(x)
        g_lse = np.ones(x.shape[0], dtype=x.dtype)
        for c in range(len(chunks) - 1, -1, -1):
            columns, e, s, lse_c = chunks[c]
            if c > 0:  # merged[c] = logaddexp(merged[c - 1], lse_c)
                g_lse_c = g_lse * np.exp(lse_c - merged[c])
                g_lse = g_lse * np.exp(merged[c - 1] - merged[c])
            else:
                g_lse_c = g_lse
            g[:, columns] = (g_lse_c[:, None] / s) * e  # lse_c = m_c + log(s_c), m_c a constant
        return _minus_onehot(g, y)


NEEDS = {  # the library functions each path calls: a release that lacks one runs it as unsupported
    "softmax_log": ("scipy.special.softmax",),
    "fused": ("scipy.special.logsumexp",),
    "upcast_fused": ("scipy.special.logsumexp",),
}

PATHS = {
    "naive": naive,
    "softmax_log": softmax_log,
    "log_softmax_nll": log_softmax_nll,
    "fused": fused,
    "upcast_fused": upcast_fused,
    "log1p_lse": log1p_lse,
    "online": online,
    "chunked": chunked,
}

GRADIENTS = {
    "naive": naive_gradient,
    "softmax_log": softmax_log_gradient,
    "log_softmax_nll": log_softmax_nll_gradient,
    "fused": fused_gradient,
    "upcast_fused": upcast_fused_gradient,
    "log1p_lse": log1p_lse_gradient,
    "online": online_gradient,
    "chunked": chunked_gradient,
}
