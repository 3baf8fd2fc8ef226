"""Exact references for the loss as trained: label smoothing, z-loss, soft-cap, dense targets,
masked logits, class weights, ignored rows, the mean or sum over the kept rows, and gradients.

Per row, with x' the logits (or c tanh(x / c) with a soft-cap) and t the target,
loss = sum_j t_j (lse(x') - x'_j) + z lse(x')^2, t = (1 - e) onehot(y) + e / C (or a given dense
target); class weights scale the row by w[y]; sum and mean run over the kept rows (mean divides by
sum_i w[y_i]); an ignored row is 0. Outputs of more than 24 significand bits take the double-double
route (`harness.exact.options_dd`, 2**-75 relative), the others the float64 route
(`harness.exact.options_float64`, 2**-44), which leaves rows that may underflow to the
double-double one; reductions are `harness.exact.reduction`. Masked (-inf) logits give the
formula's exact value (+inf where a -inf class has t_j > 0). The bounds and the undefined cases:
docs/pages/explanation/exact-reference.md, "Bounds, module by module".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.exact import dd
from harness.exact.dd import ExactValue
from harness.exact.options_dd import _as_dd, _block_gradient, _block_losses, _div
from harness.exact.options_float64 import SOFTCAP_UP_TO, float64_gradient, float64_losses
from harness.exact.reduction import REDUCTIONS, _sum, exact_reduced
from harness.exact.reference import FLOAT64_ROUTE_UP_TO

__all__ = ["LossOptions", "exact_option_gradient", "exact_reduced", "exact_row_losses", "row_weights"]
TARGETS = ("index", "dense")
BLOCK_ELEMENTS = 2**18  # logits per block of rows: bounded temporaries for 10**7 rows


@dataclass(frozen=True, eq=False)
class LossOptions:
    """The options of one loss as trained (the arrays are the dtype-rounded ones the framework sees)."""

    label_smoothing: float = 0.0
    z_loss: float = 0.0
    softcap: float | None = None
    class_weights: np.ndarray | None = None  # (classes,) >= 0, or None: w = 1
    target: str = "index"
    dense_targets: np.ndarray | None = None  # (rows, classes) >= 0; None: (1 - e) onehot + e / C
    ignored: np.ndarray | None = None  # (rows,) bool: rows whose label is the ignore index

    def __post_init__(self):
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={self.label_smoothing} is outside [0, 1)")
        if not self.z_loss >= 0.0 or not np.isfinite(self.z_loss):
            raise ValueError(f"z_loss={self.z_loss} must be finite and >= 0")
        if self.softcap is not None and not (0.0 < self.softcap < np.inf):
            raise ValueError(f"softcap={self.softcap} must be > 0 (or None)")
        if self.target not in TARGETS:
            raise ValueError(f"target={self.target!r} is not one of {', '.join(TARGETS)}")


def _checked(logits, labels, options: LossOptions):
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"logits must be (rows, classes>=2), got shape {x.shape}")
    rows, classes = x.shape
    ignored = np.zeros(rows, bool) if options.ignored is None else np.asarray(options.ignored, bool)
    labels = np.zeros(rows, np.int64) if labels is None else np.asarray(labels)
    if ignored.shape != (rows,) or labels.shape != (rows,):
        raise ValueError(f"need labels and ignored (rows,) = ({rows},), got {labels.shape}, {ignored.shape}")
    if labels.dtype.kind not in "iu" or np.any((labels[~ignored] < 0) | (labels[~ignored] >= classes)):
        raise ValueError(f"kept labels must be integers in [0, {classes}), got {labels[~ignored][:8].tolist()}")
    weights = options.class_weights
    if weights is not None and (np.shape(weights) != (classes,) or not np.all(np.asarray(weights) >= 0)):
        raise ValueError(f"class_weights must be (classes,) = ({classes},), finite, >= 0")
    targets = options.dense_targets
    if targets is not None:
        targets = np.asarray(targets, dtype=np.float64)
        if targets.shape != x.shape or not np.all((targets >= 0) & (targets < np.inf)):
            raise ValueError(f"dense_targets must be {x.shape}, finite, >= 0, got {targets.shape}")
    return x, np.where(ignored, 0, labels).astype(np.int64), ignored, targets


def row_weights(labels, options: LossOptions) -> np.ndarray:
    """w[y_i] of each kept row (1 without class weights), 0 for ignored rows: the mean's divisor."""
    labels = np.asarray(labels)
    ignored = np.zeros(len(labels), bool) if options.ignored is None else np.asarray(options.ignored, bool)
    safe = np.where(ignored, 0, labels)
    w = np.ones(len(labels)) if options.class_weights is None else np.asarray(options.class_weights, float)[safe]
    return np.where(ignored, 0.0, w)


def _float64_route(options: LossOptions, output_precision: int) -> bool:
    small_cap = options.softcap is None or options.softcap <= SOFTCAP_UP_TO
    return output_precision <= FLOAT64_ROUTE_UP_TO and small_cap


def _by_blocks(x, labels, targets, ignored, routes, *rest, per_entry: bool) -> ExactValue:
    """A route on blocks of rows of about BLOCK_ELEMENTS logits, written into one ExactValue (no
    copies: the gradient of 10**7 x 16 logits is 3.8 GB already); 0 at ignored rows. routes:
    (float64 route or None, dd route); the float64 route leaves its rows `needs_dd` to the other."""
    shape = x.shape if per_entry else x.shape[:1]
    hi, lo, exponent = np.zeros(shape), np.zeros(shape), np.zeros(shape, dtype=np.int64)
    float64_route, dd_route = routes
    step = max(1, BLOCK_ELEMENTS // x.shape[1])
    with np.errstate(invalid="ignore", over="ignore", under="ignore", divide="ignore"):
        for start in range(0, x.shape[0], step):
            b = slice(start, start + step)
            args = (x[b], labels[b], None if targets is None else targets[b])
            block_rest = [part if i == 0 else part[b] for i, part in enumerate(rest)]
            if float64_route is None:
                hi[b], lo[b], exponent[b] = dd_route(*args, *block_rest)
                continue
            hi[b], needs_dd = float64_route(*args, *block_rest)
            if needs_dd.any():
                picked = [part if i == 0 else part[needs_dd] for i, part in enumerate(block_rest)]
                left = [part[needs_dd] if part is not None else None for part in args]
                rows = np.arange(start, min(start + step, x.shape[0]))[needs_dd]
                hi[rows], lo[rows], exponent[rows] = dd_route(*left, *picked)
    hi[ignored], lo[ignored], exponent[ignored] = 0.0, 0.0, 0
    return ExactValue(hi, lo, exponent)


def exact_row_losses(logits, labels, options: LossOptions, output_precision: int = 53) -> ExactValue:
    """The exact loss of each row, unweighted (see `exact_reduced` for w[y]); 0 at ignored rows.
    For outputs of at most 24 significand bits, the float64 route (2**-44, `options_float64`)."""
    x, labels, ignored, targets = _checked(logits, labels, options)
    routes = (float64_losses if _float64_route(options, output_precision) else None, _block_losses)
    return _by_blocks(x, labels, targets, ignored, routes, options, per_entry=False)


# --- gradients ------------------------------------------------------------------------------------


def exact_option_gradient(
    logits, labels, options: LossOptions, reduction: str, upstream=None, output_precision: int = 53
) -> ExactValue | None:
    """d(reduced loss)/d(logits) as an ExactValue (rows, classes), through the soft-cap; the reduced
    loss as `exact_reduced` with `row_weights`. upstream: (rows,) for none, a number for mean and sum
    (default 1). Ignored rows get 0; rows with an infinite or undefined loss NaN; None where the mean
    is undefined (no kept weight)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not one of {', '.join(REDUCTIONS)}")
    x, safe, ignored, targets = _checked(logits, labels, options)
    w = row_weights(safe, options) * ~ignored
    up = np.broadcast_to(np.asarray(1.0 if upstream is None else upstream, dtype=np.float64), w.shape)
    scale = dd.two_prod(w, up)
    if reduction == "mean":
        divisor = _sum(ExactValue.of(w, np.zeros_like(w)))
        if divisor.hi[0] == 0:
            return None
        scale = _div(*scale, *(np.broadcast_to(part, w.shape) for part in _as_dd(divisor)))
    routes = (float64_gradient if _float64_route(options, output_precision) else None, _block_gradient)
    return _by_blocks(x, safe, targets, ignored, routes, options, np.stack(scale, axis=1), per_entry=True)
