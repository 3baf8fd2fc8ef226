"""Error metrics of computed losses against the exact reference: the one place they are defined.

The exact value is a double-double (hi, lo). Errors are measured in float64 from it, never from
a rounded copy: err = |(computed - hi) - lo|, where computed - hi is exact whenever the two are
close (Sterbenz), so sub-ulp float64 errors survive.

An error in ulps is err / ulp(exact), the ulp taken in the output dtype at the exact value:
ulp(v) = 2**(max(e, emin) - p + 1) with e = floor(log2 |v|), p the dtype's significand bits and
emin its smallest normal exponent (so subnormal and zero exact values get the subnormal spacing).
"""

from __future__ import annotations

import numpy as np

from harness.dtypes import FloatFormat

OK, INF, NAN, ERROR, UNSUPPORTED, INPUT_INF = "ok", "inf", "nan", "error", "unsupported", "input_inf"
STATUSES = (OK, INF, NAN, ERROR, UNSUPPORTED, INPUT_INF)
FAILED = (INF, NAN, ERROR)  # the path itself broke

METRIC_COLUMNS = (
    "n_nonfinite",
    "max_abs_err",
    "median_abs_err",
    "max_rel_err",
    "max_ulp_err",
    "median_ulp_err",
    "bound_ulp",
    "frac_within_bound",
)


def bits_lost(max_ulp_err):
    """log2(2 * ulp error), at least 0: a result within half an ulp (correctly rounded) lost nothing,
    1 ulp is 1 bit, 2**k / 2 ulps is k bits. NaN stays NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.maximum(np.log2(2.0 * np.asarray(max_ulp_err, dtype=np.float64)), 0.0)


def correct_bits(max_ulp_err, precision: int):
    """Significand bits that are right: precision - bits lost, clipped to [0, precision]."""
    bits = np.clip(precision - bits_lost(max_ulp_err), 0.0, float(precision))
    return float(bits) if bits.ndim == 0 else bits


def exponent_of(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """floor(log2 |hi + lo|) as float (-inf for zero), exact also just below a power of two."""
    mantissa, exponent = np.frexp(hi)
    e = exponent.astype(np.float64) - 1.0
    just_below_power_of_two = (np.abs(mantissa) == 0.5) & (np.sign(lo) == -np.sign(hi)) & (lo != 0)
    e = np.where(just_below_power_of_two, e - 1.0, e)
    return np.where(hi == 0, -np.inf, e)


def ulp(hi: np.ndarray, lo: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    """Spacing of `fmt` at the exact value hi + lo."""
    e = np.maximum(exponent_of(hi, lo), fmt.min_exponent)
    return np.ldexp(1.0, (e - fmt.precision + 1).astype(np.int64))


def abs_error(computed: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        return np.abs((np.asarray(computed, dtype=np.float64) - hi) - lo)


def ulp_error(computed: np.ndarray, hi: np.ndarray, lo: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    return abs_error(computed, hi, lo) / ulp(hi, lo, fmt)


def rel_error(computed: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    err = abs_error(computed, hi, lo)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(err == 0, 0.0, err / np.abs(hi))


def lse_bound(logits: np.ndarray, labels: np.ndarray, loss: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    """Leading-order error bound of a shifted log-sum-exp loss, per row, as an absolute error.

    Blanchard, Higham & Higham (2021) bound the error of the shifted y = lse(x) =
    a + log(sum exp(x - a)) by u |y + n - min x| (n classes, u the dtype's unit roundoff), to which
    the final roundings of y and of the loss y - x[y] add u |y| and u |loss|:
    |computed - loss| <= u (|y + n - min x| + |y| + |loss|).
    """
    y = loss + logits[np.arange(len(labels)), labels]
    n = logits.shape[1]
    return fmt.unit_roundoff * (np.abs(y + n - logits.min(axis=1)) + np.abs(y) + np.abs(loss))


def output_status(computed: np.ndarray) -> str:
    """`nan` if any row is NaN, else `inf` if any is infinite, else `ok`."""
    if np.isnan(computed).any():
        return NAN
    if np.isinf(computed).any():
        return INF
    return OK


def cell_metrics(computed: np.ndarray, hi: np.ndarray, lo: np.ndarray, fmt: FloatFormat, bound=None) -> dict:
    """Status and error summary of one cell; errors are over its finite rows (NaN if none).

    `bound` is the per-row absolute error bound (lse_bound): bound_ulp is its largest value in
    ulps, frac_within_bound the fraction of finite rows whose error is within it.
    """
    computed = np.asarray(computed, dtype=np.float64)
    finite = np.isfinite(computed)
    metrics = {"status": output_status(computed), "n_nonfinite": int((~finite).sum())}
    if not finite.any():
        return metrics | {name: np.nan for name in METRIC_COLUMNS[1:]}
    c, h, l = computed[finite], hi[finite], lo[finite]
    abs_err = abs_error(c, h, l)
    ulp_err = ulp_error(c, h, l, fmt)
    metrics |= {
        "max_abs_err": float(abs_err.max()),
        "median_abs_err": float(np.median(abs_err)),
        "max_rel_err": float(rel_error(c, h, l).max()),
        "max_ulp_err": float(ulp_err.max()),
        "median_ulp_err": float(np.median(ulp_err)),
    }
    if bound is None:
        return metrics | {"bound_ulp": np.nan, "frac_within_bound": np.nan}
    return metrics | {
        "bound_ulp": float((bound / ulp(hi, lo, fmt)).max()),
        "frac_within_bound": float((abs_err <= bound[finite]).mean()),
    }


GRAD_METRIC_COLUMNS = ("n_nonfinite", "max_abs_err", "max_row_rel_err", "max_ulp_err", "median_ulp_err")


def gradient_metrics(computed: np.ndarray, hi: np.ndarray, lo: np.ndarray, fmt: FloatFormat) -> dict:
    """Status and error summary of one cell's gradient (rows, classes) against the exact one.

    max_row_rel_err divides each entry's error by its row's largest exact entry: the scale that
    matters to an optimiser step, where an ulp error in a tiny probability does not. Rows with
    any non-finite entry are counted in n_nonfinite and left out of the errors.
    """
    computed = np.asarray(computed, dtype=np.float64)
    finite_rows = np.isfinite(computed).all(axis=1)
    metrics = {"status": output_status(computed), "n_nonfinite": int((~finite_rows).sum())}
    if not finite_rows.any():
        return metrics | {name: np.nan for name in GRAD_METRIC_COLUMNS[1:]}
    c, h, l = computed[finite_rows], hi[finite_rows], lo[finite_rows]
    abs_err = abs_error(c, h, l)
    row_scale = np.abs(h).max(axis=1, keepdims=True)
    ulp_err = abs_err / ulp(h, l, fmt)
    return metrics | {
        "max_abs_err": float(abs_err.max()),
        "max_row_rel_err": float((abs_err / row_scale).max()),
        "max_ulp_err": float(ulp_err.max()),
        "median_ulp_err": float(np.median(ulp_err)),
    }


def failure(exc: BaseException) -> dict:
    """The status and message of a cell whose path raised: `unsupported` where the framework declares
    it cannot run the combination (NotImplementedError, which path entries and implementations
    raise), else `error`. Never matched on error text."""
    status = UNSUPPORTED if isinstance(exc, NotImplementedError) else ERROR
    first_line = (str(exc).strip().splitlines() or [""])[0][:300]
    return {"status": status, "message": f"{type(exc).__name__}: {first_line}"}
