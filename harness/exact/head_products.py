"""Error-free products A @ B.T of float64-held (or double-double) matrices (Ozaki scheme).

Each row of A (and of B) is scaled by its own power of two 2**a (2**c) above its largest entry,
then cut into slices of beta bits (integers below 2**beta held in float64; slice k is worth
2**(a - k beta) times its integers). beta is the largest with 4 n (2**beta - 1)**2 <= 2**53, so one
slice product, and a sum of up to four of them, is an integer below 2**53: exact in float64
whatever order BLAS adds in. Slicing stops when a side has no bits left (counted from the data:
rows of float16 or bfloat16 entries need one or two slices), or after K slices,
K beta >= floor_bits + 4 - 53 + 2 log2 n; what is left of a side (its tail, with a double-double
operand's low parts) goes through one plain float64 product with the other side, whose error
gamma_n n 2**-(K beta) is below 2**-(floor_bits + 4), as is the rounding of the two tail products'
float64 sum (at most 2 n 2**-(K beta) 2**-53), one term of Sum2. Slice pairs wholly below
2**-(floor_bits + log2 n + 4) are skipped. Products of equal weight are summed exactly, then all
terms with Ogita-Rump-Oishi's Sum2. Proved bound, per entry, with S = sum_t |A_it B_jt| and at
most 16 terms in Sum2 (its error is below gamma_15**2 S < 2**-98 S):

    |computed - exact| <= 2**-98 S + 2**-floor_bits 2**(a_i + c_j),   2**a_i <= 2 max_t |A_it|.

The second term is zero when the splitting is error-free: no tail and no slice pair skipped.
Each slice pair and each tail costs one BLAS float64 product (dgemm) of the full size; the sums
of the terms run a few rows at a time (in cache), and an `addend` (a bias) is one more term.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from harness.exact import dd
from harness.exact.dd import ExactValue

_BLOCK_ENTRIES = 2**21  # rows of B per block: at most this many entries
_CACHE_ENTRIES = 2**15  # the sums of the products' terms, rows of about this many entries at a time
_LEVEL_PAIRS = 4  # slice products of one weight summed exactly in float64, at most this many at once


def slice_bits(n: int) -> int:
    """The largest beta with 4 n (2**beta - 1)**2 <= 2**53: four slice products sum exactly."""
    beta = 26
    while _LEVEL_PAIRS * n * (2**beta - 1) ** 2 > 2**53:
        beta -= 1
    return beta


def _row_exponents(hi, exponent):
    """Per row the smallest a with every |entry| < 2**a (0 for a zero row)."""
    if np.ndim(exponent) == 0:  # one exponent: the row's largest magnitude decides
        top = np.abs(hi).max(axis=1)
        return np.where(top == 0, 0, np.frexp(top)[1] + exponent)
    binade = np.where(hi != 0, np.frexp(hi)[1] + exponent, np.iinfo(np.int64).min)
    top = binade.max(axis=1)
    return np.where(top == np.iinfo(np.int64).min, 0, top)


class _Split(NamedTuple):
    """Entries in (-1, 1) = sum_k parts[k-1] 2**(-k beta) (integer-valued parts) + tail."""

    parts: list[np.ndarray]
    head: np.ndarray | None  # the parts' sum, exact: the entries with their bits below the parts cut off
    tail: np.ndarray | None  # what is left, plus a double-double operand's low parts; None if 0


def _split(hi, lo, beta: int, most: int, keep_head: bool = True) -> _Split:
    """Slices of beta bits, at most `most` of them, of scaled entries hi (+ lo) in (-1, 1); the
    head only where asked (B's is never used)."""
    rest, parts = hi.copy(), []
    while len(parts) < most and rest.any():
        rest *= 2.0**beta
        part = np.trunc(rest)
        rest -= part  # exact: the fraction of a float64
        parts.append(part)
    np.ldexp(rest, -beta * len(parts), out=rest)
    head = hi - rest if keep_head else None
    if lo is not None:
        rest += lo
    return _Split(parts, head, rest if rest.any() else None)


class Operand(NamedTuple):
    """(hi + lo) 2**exponent, (rows, n); lo None for float64-held inputs, exponent 0 or per entry."""

    hi: np.ndarray
    lo: np.ndarray | None = None
    exponent: np.ndarray | int = 0

    def rows(self, start: int, stop: int) -> Operand:
        return Operand(*(part if np.ndim(part) == 0 else part[start:stop] for part in self))

    def scaled(self, row_exponent):
        """hi and lo times 2**-row_exponent: entries in (-1, 1)."""
        shift = self.exponent - row_exponent[:, None]
        return np.ldexp(self.hi, shift), None if self.lo is None else np.ldexp(self.lo, shift)


def exact_product(a: Operand, b: Operand, floor_bits: int, addend=None) -> ExactValue:
    """A @ B.T (+ addend[j] in every row, one more term in Sum2) as an ExactValue: A split once,
    B in blocks of rows (memory)."""
    n = a.hi.shape[1]
    beta = slice_bits(n)
    floor = floor_bits + math.ceil(math.log2(max(n, 1))) + 4
    most = max(1, math.ceil((floor_bits + 4 - 53 + 2 * math.log2(max(n, 1))) / beta))  # then the tail
    a_row = _row_exponents(a.hi, a.exponent)
    a_split = _split(*a.scaled(a_row), beta, most)
    shape = (a.hi.shape[0], b.hi.shape[0])
    hi, lo, exponent = np.empty(shape), np.empty(shape), np.empty(shape, dtype=np.int64)
    step = max(1, _BLOCK_ENTRIES // max(n, 1))
    for start in range(0, shape[1], step):
        block = b.rows(start, start + step)
        b_row = _row_exponents(block.hi, block.exponent)
        b_hi, b_lo = block.scaled(b_row)
        b_split = _split(b_hi, b_lo, beta, most, keep_head=False)
        weighted = _level_sums(a_split.parts, b_split.parts, beta, floor)
        tails = []  # A B.T = heads' product + A's tail B.T + A's head B's tail.T
        if a_split.tail is not None:
            tails.append(a_split.tail @ b_hi.T)
        if b_split.tail is not None:
            tails.append(a_split.head @ b_split.tail.T)
        if tails:  # one Sum2 term: their float64 sum's rounding is below 2**-(floor_bits + 4) too
            weighted.append(sum(tails[1:], tails[0]))
        more = None if addend is None else addend[None, start : start + step]
        out = tuple(part[:, start : start + step] for part in (hi, lo, exponent))
        _summed_into(out, weighted, a_row, b_row, more)
    return ExactValue(hi, lo, exponent)


def _summed_into(out, weighted, a_row, b_row, addend) -> None:
    """Sum2 of the terms (plus addend, in units of 2**(a + c): exact, or below 2**-1074 of them)
    as ExactValues into out, a few rows at a time: the elementwise passes stay in cache."""
    rows = max(1, _CACHE_ENTRIES // max(len(b_row), 1))
    for start in range(0, len(a_row), rows):
        units = a_row[start : start + rows, None] + b_row[None, :]
        terms = [term[start : start + rows] for term in weighted]
        if addend is not None:
            terms.append(np.ldexp(addend, -units))
        value = _exact_value(*_sum2(terms, units.shape), units)
        for part, values in zip(out, value, strict=True):
            part[start : start + rows] = values


def _level_sums(a_parts, b_parts, beta: int, floor: int) -> list[np.ndarray]:
    """Exact float64 terms of A @ B.T in units of 2**(a + c): slice products of one weight
    2**(-beta level), up to four at a time, for the levels above the floor."""
    weighted = []
    for level in range(2, len(a_parts) + len(b_parts) + 1):
        if (level - 2) * beta >= floor:
            break
        pairs = [(k, level - k) for k in range(1, level) if k <= len(a_parts) and level - k <= len(b_parts)]
        for start in range(0, len(pairs), _LEVEL_PAIRS):
            total = sum(a_parts[k - 1] @ b_parts[m - 1].T for k, m in pairs[start : start + _LEVEL_PAIRS])
            weighted.append(np.ldexp(total, -beta * level))
    return weighted


def _sum2(terms, shape):
    """Ogita-Rump-Oishi Sum2: hi + lo = the sum of float64 arrays as if in twice the precision."""
    if not terms:
        return np.zeros(shape), np.zeros(shape)
    hi, lo = terms[0], np.zeros(shape)
    for term in terms[1:]:
        hi, error = dd.two_sum(hi, term)
        lo += error
    return dd.fast_two_sum(hi, lo)


def _exact_value(hi, lo, exponent) -> ExactValue:
    """(hi + lo) 2**exponent in the ExactValue convention: exponent 0 from 2**-960 up."""
    held_hi, held_lo = np.ldexp(hi, exponent), np.ldexp(lo, exponent)  # exact where held
    deep = ~(np.abs(held_hi) >= dd.HELD_FROM)  # zeros too: they keep their exponent, as normalized does
    value = ExactValue(held_hi, held_lo, np.zeros(np.shape(hi), dtype=np.int64))
    if deep.any():
        exponent = np.broadcast_to(exponent, np.shape(hi))[deep]
        mantissa, binade = np.frexp(hi[deep])
        small = dd.normalized(mantissa, np.ldexp(lo[deep], -binade), exponent + binade)
        for part, rows in zip(value, small, strict=True):
            part[deep] = rows
    return value
