"""Error metrics of computed losses against the exact reference: the one place they are defined.

The exact value is a double-double (hi, lo) times 2**exponent (an integer array, 0 except for
values below 2**-960; see `harness.exact.dd.ExactValue`). Errors are measured in float64 from it,
never from a rounded copy, in the scaled domain: err = |(computed 2**-exponent - hi) - lo|, where
the shift is exact and computed - hi is exact whenever the two are close (Sterbenz), so sub-ulp
float64 errors survive, and an exact value too small for float64 still counts: a computed 0
against it has relative error 1 and an ulp error of exact / (the dtype's smallest subnormal).

An error in ulps is err / ulp(exact), the ulp taken in the output dtype at the exact value:
ulp(v) = 2**(max(e, emin) - p + 1) with e = floor(log2 |v|), p the dtype's significand bits and
emin its smallest normal exponent (so subnormal and zero exact values get the subnormal spacing).
"""

from __future__ import annotations

import numpy as np

from harness.dtypes import FloatFormat

OK, INF, NAN, ERROR, UNSUPPORTED, INPUT_INF = "ok", "inf", "nan", "error", "unsupported", "input_inf"
EXACT_OVERFLOW, EXACT_UNDERFLOW = "exact_overflow", "exact_underflow"
UNDEFINED = "undefined"  # the exact value is undefined (a mean over no kept rows): not a failure
NEGATIVE = "negative"  # a finite loss below zero, which the exact one never is (harness.sweep.named_inputs)
STATUSES = (OK, INF, NAN, ERROR, UNSUPPORTED, INPUT_INF, EXACT_OVERFLOW, EXACT_UNDERFLOW, UNDEFINED, NEGATIVE)
FAILED = (INF, NAN, ERROR, NEGATIVE)  # the path itself broke
CORRECTLY_ROUNDED = (EXACT_OVERFLOW, EXACT_UNDERFLOW)  # inf or 0 because the exact value rounds to it
GOOD = (OK,) + CORRECTLY_ROUNDED  # the path did not break; errors are over the finite rows

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


def exponent_of(hi: np.ndarray, lo: np.ndarray, exponent=0) -> np.ndarray:
    """floor(log2 |(hi + lo) 2**exponent|) as float (-inf for zero), exact also just below a power of two."""
    mantissa, e = np.frexp(hi)
    e = np.array(np.add(e, exponent) if np.ndim(exponent) != 0 or exponent != 0 else e, dtype=np.float64)
    e -= 1.0  # in place: a 0-d array stays an array
    power_of_two = np.abs(mantissa) == 0.5  # rare: only there can a low part of the other sign matter
    if power_of_two.any():
        just_below = power_of_two & (np.asarray(lo) != 0) & (np.signbit(lo) != np.signbit(hi))
        e[just_below] -= 1.0
    e[np.asarray(hi) == 0] = -np.inf
    return e


def _ulp_exponent(hi, lo, fmt: FloatFormat, exponent=0, binade=None) -> np.ndarray:
    """log2 of `fmt`'s spacing at the exact value: an integer, at least fmt's subnormal spacing
    (`binade`: exponent_of(hi, lo, exponent), if already at hand)."""
    binade = exponent_of(hi, lo, exponent) if binade is None else binade
    return (np.maximum(binade, fmt.min_exponent) - fmt.precision + 1).astype(np.int64)


def ulp(hi: np.ndarray, lo: np.ndarray, fmt: FloatFormat, exponent=0) -> np.ndarray:
    """Spacing of `fmt` at the exact value (hi + lo) 2**exponent."""
    return np.ldexp(1.0, _ulp_exponent(hi, lo, fmt, exponent))


def _scaled_error(computed, hi, lo, exponent):
    """(|computed 2**-exponent - (hi + lo)|, where that passed float64's range): the error in the
    exact value's scaled domain, from which every unit below is one ldexp away."""
    computed = np.asarray(computed, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        if np.ndim(exponent) == 0 and exponent == 0:  # the common case: nothing scaled, nothing beyond
            return np.abs((computed - hi) - lo), None
        scaled = np.abs((np.ldexp(computed, -np.asarray(exponent, dtype=np.int64)) - hi) - lo)
        return scaled, np.isinf(scaled) & np.isfinite(computed)


def _in_units(error, computed, exponent, unit) -> np.ndarray:
    """A _scaled_error as |computed - (hi + lo) 2**exponent| / 2**unit.

    Where computed 2**-exponent passes float64's range (a computed value far above an exact one
    below 2**-960) the exact value is below computed's last bit, and the error is |computed|.
    """
    scaled, beyond = error
    with np.errstate(invalid="ignore", over="ignore"):
        shift = np.subtract(exponent, unit)
        if not np.issubdtype(shift.dtype, np.integer):  # a unit from float exponents: inf stays unscaled
            shift = np.where(np.isfinite(shift), shift, 0).astype(np.int64)
        in_units = _times_power_of_two(scaled, shift)
        if beyond is None or not beyond.any():
            return in_units
        computed = np.asarray(computed, dtype=np.float64)
        return np.where(beyond, np.ldexp(np.abs(computed), -np.asarray(unit, dtype=np.int64)), in_units)


def _times_power_of_two(x: np.ndarray, shift) -> np.ndarray:
    """ldexp(x, shift), the same bits: where every shift is a normal float64's exponent (the usual
    case), x times 2**shift made from its bits, about four times faster than ldexp with an array
    of int64 exponents. Both round the exact product once (only underflow or overflow rounds)."""
    shift = np.asarray(shift)
    if shift.size and shift.dtype.kind == "i" and -1022 <= shift.min() and shift.max() <= 1023:
        return x * ((shift.astype(np.int64) + 1023) << 52).view(np.float64)
    return np.ldexp(x, shift)


def _error_in_units(computed, hi, lo, exponent, unit) -> np.ndarray:
    """|computed - (hi + lo) 2**exponent| / 2**unit, from the error in the scaled domain."""
    return _in_units(_scaled_error(computed, hi, lo, exponent), computed, exponent, unit)


def abs_error(computed: np.ndarray, hi: np.ndarray, lo: np.ndarray, exponent=0) -> np.ndarray:
    """|computed - exact| in float64 (0 where it is below 2**-1075)."""
    return _error_in_units(computed, hi, lo, exponent, 0)


def ulp_error(computed: np.ndarray, hi: np.ndarray, lo: np.ndarray, fmt: FloatFormat, exponent=0) -> np.ndarray:
    return _error_in_units(computed, hi, lo, exponent, _ulp_exponent(hi, lo, fmt, exponent))


def rel_error(computed: np.ndarray, hi: np.ndarray, lo: np.ndarray, exponent=0) -> np.ndarray:
    """|computed - exact| / |exact|; 0 for an exact hit, inf for a miss of an exact 0."""
    mantissa, e = np.frexp(hi)  # |hi| = |mantissa| 2**e
    err = _error_in_units(computed, hi, lo, exponent, e + np.asarray(exponent, dtype=np.int64))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # beyond float64: inf
        return np.where(err == 0, 0.0, err / np.abs(mantissa))


def _row_relative_error(computed, hi, lo, exponent, error=None, binade=None) -> np.ndarray:
    """Each entry's error over its row's largest exact entry, the scale taken in powers of two
    (`error` and `binade`: the _scaled_error and exponent_of already at hand, if any). A row whose
    exact entries are all zero (an ignored row) reads 0 where it is hit, inf where it is not."""
    binade = exponent_of(hi, lo, exponent) if binade is None else binade
    top = binade.max(axis=1, keepdims=True)  # floor(log2) of the row's largest entry
    top = np.where(np.isfinite(top), top, 0.0).astype(np.int64)
    if np.ndim(exponent) == 0 and exponent == 0:  # the row's largest first: ldexp keeps the order
        largest = np.ldexp(np.abs(hi).max(axis=1, keepdims=True), -top)  # in [1, 2)
    else:
        largest = np.ldexp(np.abs(hi), exponent - top).max(axis=1, keepdims=True)
    error = _scaled_error(computed, hi, lo, exponent) if error is None else error
    in_units = _in_units(error, computed, exponent, top)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = in_units / largest
    # a row whose exact entries are all 0 (an ignored row): 0 if hit, else inf; never 0/0 = NaN
    return np.where(largest == 0, np.where(in_units == 0, 0.0, np.inf), relative)


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


def output_status(computed: np.ndarray, hi=None, lo=None, fmt: FloatFormat | None = None, exponent=0) -> str:
    """The status of one cell's output: per-row losses, or a gradient (rows, classes).

    `nan` if any entry is NaN. Infinite entries: `exact_overflow` if each is the correctly rounded
    value (the exact value rounds to inf of that sign in `fmt`), else `inf`. Otherwise
    `exact_underflow` if some row is all zeros where the exact row is not, and each such row
    rounds to 0 entrywise; else `ok` (a wrong 0 shows in the errors). Without the exact values
    (hi, lo, fmt): `nan`, `inf` or `ok`.
    """
    computed = np.asarray(computed, dtype=np.float64)
    if np.isnan(computed).any():
        return NAN
    infinite = np.isinf(computed)
    if fmt is None:
        return INF if infinite.any() else OK
    if infinite.any():
        correct = fmt.rounds_to_inf(hi, lo) & (np.sign(hi) == np.sign(computed))
        return EXACT_OVERFLOW if correct[infinite].all() else INF
    rows = len(computed)
    if rows == 0:  # no kept row (reduction none with every row ignored): nothing to be wrong
        return OK
    zero = (computed == 0).reshape(rows, -1).all(axis=1)
    underflowed = zero & ~(np.asarray(hi) == 0).reshape(rows, -1).all(axis=1)
    if not underflowed.any():
        return OK
    to_zero = fmt.rounds_to_zero(hi, lo, np.broadcast_to(exponent, np.shape(hi))).reshape(rows, -1).all(axis=1)
    return EXACT_UNDERFLOW if to_zero[underflowed].all() else OK


def cell_metrics(
    computed: np.ndarray, hi: np.ndarray, lo: np.ndarray, fmt: FloatFormat, bound=None, exponent=0
) -> dict:
    """Status and error summary of one cell; errors are over its finite rows (NaN if none).

    `bound` is the per-row absolute error bound (lse_bound): bound_ulp is its largest value in
    ulps, frac_within_bound the fraction of finite rows whose error is within it. bound_ulp is
    never inf: a bound beyond float64's range in ulps (an absolute bound on a tiny exact loss)
    reads as the largest float64, 1.8e308. `exponent` scales the exact values (see module doc).
    """
    computed = np.asarray(computed, dtype=np.float64)
    finite = np.isfinite(computed)
    metrics = {"status": output_status(computed, hi, lo, fmt, exponent), "n_nonfinite": int((~finite).sum())}
    if not finite.any():
        return metrics | {name: np.nan for name in METRIC_COLUMNS[1:]}
    exponent = np.broadcast_to(np.asarray(exponent, dtype=np.int64), np.shape(hi))
    c, h, l, k = computed[finite], hi[finite], lo[finite], exponent[finite]
    abs_err = abs_error(c, h, l, k)
    ulp_err = ulp_error(c, h, l, fmt, k)
    metrics |= {
        "max_abs_err": float(abs_err.max()),
        "median_abs_err": float(np.median(abs_err)),
        "max_rel_err": float(rel_error(c, h, l, k).max()),
        "max_ulp_err": float(ulp_err.max()),
        "median_ulp_err": float(np.median(ulp_err)),
    }
    if bound is None:
        return metrics | {"bound_ulp": np.nan, "frac_within_bound": np.nan}
    with np.errstate(over="ignore"):
        bound_ulp = np.minimum(bound / ulp(hi, lo, fmt, exponent), np.finfo(np.float64).max)
    return metrics | {
        "bound_ulp": float(bound_ulp.max()),
        "frac_within_bound": float((abs_err <= bound[finite]).mean()),
    }


GRAD_METRIC_COLUMNS = ("n_nonfinite", "max_abs_err", "max_row_rel_err", "max_ulp_err", "median_ulp_err")


def gradient_metrics(computed: np.ndarray, hi: np.ndarray, lo: np.ndarray, fmt: FloatFormat, exponent=0) -> dict:
    """Status and error summary of one cell's gradient (rows, classes) against the exact one.

    max_row_rel_err divides each entry's error by its row's largest exact entry: the scale that
    matters to an optimiser step, where an ulp error in a tiny probability does not. Rows with
    any non-finite entry are counted in n_nonfinite and left out of the errors.
    """
    computed = np.asarray(computed, dtype=np.float64)
    finite_rows = np.isfinite(computed).all(axis=1)
    metrics = {"status": output_status(computed, hi, lo, fmt, exponent), "n_nonfinite": int((~finite_rows).sum())}
    if not finite_rows.any():
        return metrics | {name: np.nan for name in GRAD_METRIC_COLUMNS[1:]}
    c, h, l, k = computed, hi, lo, 0
    if np.any(exponent):  # some entry scaled (exact values below 2**-960); else the fast route
        k = np.broadcast_to(np.asarray(exponent, dtype=np.int64), np.shape(hi))
    if not finite_rows.all():
        c, h, l = computed[finite_rows], hi[finite_rows], lo[finite_rows]
        k = k if np.ndim(k) == 0 else k[finite_rows]
    ulp_err = np.empty(c.shape)
    worst = np.zeros(2)  # max abs error, max row-relative error
    step = max(1, _BLOCK_ENTRIES // max(1, c.shape[1]))
    for i in range(0, len(c), step):  # blocks of rows stay in cache: 2-3x faster on 10**7 entries
        rows = slice(i, i + step)
        block_k = k if np.ndim(k) == 0 else k[rows]
        worst = np.maximum(worst, _gradient_errors(c[rows], h[rows], l[rows], fmt, block_k, ulp_err[rows]))
    return metrics | {
        "max_abs_err": float(worst[0]),
        "max_row_rel_err": float(worst[1]),
        "max_ulp_err": float(ulp_err.max()),
        "median_ulp_err": float(np.median(ulp_err, overwrite_input=True)),  # ours: no copy
    }


_BLOCK_ENTRIES = 2**16


def _gradient_errors(c, h, l, fmt: FloatFormat, k, ulp_out) -> np.ndarray:
    """One block of rows: (max abs error, max row-relative error), its ulp errors into ulp_out;
    one scaled error and one binade per entry, shared by the three."""
    error = _scaled_error(c, h, l, k)
    binade = exponent_of(h, l, k)
    ulp_out[...] = _in_units(error, c, k, _ulp_exponent(h, l, fmt, k, binade))
    if np.ndim(k) != 0 or error[1] is not None:
        abs_max = _in_units(error, c, k, 0).max()
        return np.array([abs_max, _row_relative_error(c, h, l, k, error, binade).max()])
    # exponent 0: the error is absolute, and a row's largest relative error is its largest error
    # over the row's scale (ldexp and division by a positive number keep the order)
    row_max = error[0].max(axis=1, keepdims=True)
    return np.array([row_max.max(), _row_relative_error(row_max, h, l, k, (row_max, None), binade).max()])


def failure(exc: BaseException) -> dict:
    """The status and message of a cell whose path raised: `unsupported` where the framework declares
    it cannot run the combination (NotImplementedError, which path entries and implementations
    raise), else `error`. Never matched on error text."""
    status = UNSUPPORTED if isinstance(exc, NotImplementedError) else ERROR
    first_line = (str(exc).strip().splitlines() or [""])[0][:300]
    return {"status": status, "message": f"{type(exc).__name__}: {first_line}"}


def undefined(computed) -> dict:
    """The row of a cell whose exact value is undefined (a mean over no kept rows), with what it returned."""
    shown = np.array2string(np.asarray(computed), precision=6, threshold=4)
    return {"status": UNDEFINED, "message": f"exact value undefined (mean over no kept rows); returned {shown}"}


def status_in(statuses, wanted) -> np.ndarray:
    """Which of `statuses` (a column or array of status names) are among `wanted`, as a boolean array: set
    lookups, as a pandas mask over Arrow-backed strings costs about a millisecond and the reports ask it of
    every group."""
    wanted = frozenset(wanted)
    values = statuses.to_numpy() if hasattr(statuses, "to_numpy") else statuses
    return np.fromiter((s in wanted for s in values), dtype=bool, count=len(values))
