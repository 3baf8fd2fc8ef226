"""Ignored rows and class weights for a loss measured on named arrays (binary cross-entropy, KL), composed
by hand around its per-row or per-element losses, as users write them:

    none: w * l        sum: sum(w * l)        mean: sum(w * l) / sum(m)

where m is 0 on an ignored row (`ignore_fraction`) and 1 elsewhere, and w = m times the class's weight
(`class_weights=random`, binary cross-entropy's labels: the last axis). The mask multiplies, so an
ignored row whose loss overflows still turns the sum into NaN (0 * inf), as it does in the code people
write. The mean divides by the kept count, not by the sum of weights: PyTorch's `weight=` of
`binary_cross_entropy_with_logits` and Keras's sample weights both divide by the count (cross-entropy's
`weight=` divides by the weights' sum). The exact reference is the same composition of the exact losses.
The ignored rows and the class weights are drawn as cross-entropy's are (harness.sweep.option_inputs).
"""

from __future__ import annotations

import numpy as np

from harness.dtypes import round_to
from harness.exact.dd import ExactValue
from harness.exact.head import divided
from harness.exact.reduction import exact_reduced, weighted
from harness.paths.options import CellOptions
from harness.sweep import option_inputs


def composed(options: CellOptions) -> bool:
    """Whether a cell's losses are weighted or masked by hand (not the framework's plain mean or sum)."""
    return options.ignore_fraction > 0 or options.class_weights is not None


class Weights:
    """One input's weights w and mask m, each of the losses' shape (per element or per row), in float64."""

    def __init__(self, entry, options: CellOptions, shape: tuple[int, ...], seed: int):
        rows = shape[0]
        losses_shape = shape if entry.per == "element" else (rows,)
        kept = ~option_inputs.ignored_rows(rows, options.ignore_fraction, seed)
        self.mask = np.broadcast_to(kept.reshape((rows,) + (1,) * (len(losses_shape) - 1)), losses_shape).astype(float)
        self.weights = self.mask.copy()
        if options.class_weights is not None:
            self.weights = self.weights * option_inputs.class_weights(shape[-1], seed)
        self.count = int(self.mask.sum())

    def rounded(self, dtype: str) -> tuple[np.ndarray, np.ndarray]:
        """(w, m) in the cell's dtype: exact in every dtype (multiples of 1/8 in [1/2, 2], 0 and 1)."""
        return round_to(self.weights, dtype), round_to(self.mask, dtype)

    def exact(self, losses: ExactValue, reduction: str) -> ExactValue | None:
        """The exact w * l, its sum, or the sum over the kept count (None when no row is kept)."""
        if reduction == "none":
            return weighted(losses, self.weights.ravel())
        total = exact_reduced(losses, self.weights.ravel(), np.ones(losses.hi.size, bool), "sum")
        if reduction == "sum":
            return total
        return divided(total, self.count) if self.count else None

    def exact_gradient(self, gradient: ExactValue, reduction: str) -> ExactValue:
        """d/dx of the composition: w times each loss's gradient (a row's w over its classes), over the
        kept count for the mean."""
        shape = gradient.hi.shape
        w = np.broadcast_to(self.weights.reshape(self.weights.shape + (1,) * (len(shape) - self.weights.ndim)), shape)
        flat = ExactValue(gradient.hi.ravel(), gradient.lo.ravel(), np.broadcast_to(gradient.exponent, shape).ravel())
        scaled = weighted(flat, np.ascontiguousarray(w).ravel())
        scaled = ExactValue(*(part.reshape(shape) for part in scaled))
        if reduction == "mean" and self.count:
            return divided(scaled, self.count)
        return scaled


def reduced(loss, reduction: str, backend):
    """loss(*arrays) composed with the weights and mask, taken as the backends take two arguments: the
    first array, and the others with w and m after them, (a, (b, ..., w, m)) -> w * l, sum(w * l) or
    sum(w * l) / sum(m), with the framework's own multiply, sum and divide."""

    def total(values):
        return values.sum() if hasattr(values, "sum") else backend.reduce(values, "sum")

    def compose(first, packed):
        *others, weights, mask = packed
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):  # NumPy's 0 * inf and 0 / 0 are rows
            products = loss(first, *others) * weights
            if reduction == "none":
                return products
            return total(products) if reduction == "sum" else total(products) / total(mask)

    return compose


def packed(arrays: list) -> list:
    """[a, b, ..., w, m] as a composed loss takes them: [a, (b, ..., w, m)]."""
    return [arrays[0], tuple(arrays[1:])]


def hand_gradient(gradient, reduction: str, count: int):
    """A hand-written backward (NumPy's) of the composition: w times each loss's gradient, over the kept
    count for the mean (divided as the plain mean's backward is, by the count in the dtype)."""

    def backward(first, packed):
        *others, weights, _ = packed
        g = gradient(first, *others)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            g = g * weights.reshape(weights.shape + (1,) * (g.ndim - weights.ndim))
            return g / np.asarray(count, dtype=g.dtype) if reduction == "mean" else g

    return backward
