"""The exact values of one head input (h, W, b, labels rounded to a dtype), each computed once: the
per-row loss under a reduction, and the gradients with respect to h, W and b for the upstream
gradient each reduction needs. Ignored rows (the ignore index) have loss 0 and upstream 0; the
mean divides by the kept count in double-double."""

from __future__ import annotations

import numpy as np

from harness.dtypes import FloatFormat
from harness.exact import dd
from harness.exact.dd import ExactValue
from harness.exact.head import divided, exact_head_gradients, exact_head_loss, exact_logits


def upstream_none(n_rows: int) -> np.ndarray:
    """The non-uniform upstream gradient of reduction none: 1, 1.25, 1.5, 1.75, 1, ... (exact everywhere)."""
    return 1.0 + (np.arange(n_rows) % 4) / 4.0


def reduced_loss(loss: ExactValue, reduction: str, kept: np.ndarray | None = None) -> ExactValue:
    """The exact loss under a reduction: per row (0 at ignored rows), or the sum of the kept rows
    (mean: that sum / the kept count) in double-double."""
    if kept is not None:
        loss = ExactValue(np.where(kept, loss.hi, 0.0), np.where(kept, loss.lo, 0.0), loss.exponent)
    if reduction == "none":
        return loss
    with np.errstate(under="ignore"):
        hi, lo = np.ldexp(loss.hi, loss.exponent), np.ldexp(loss.lo, loss.exponent)
        total_h, total_l = dd.sum_rows(hi[None, :], lo[None, :])
        if reduction == "mean":
            total_h, total_l = _divide(total_h, total_l, n_kept(len(loss.hi), kept))
    return ExactValue(total_h, total_l, np.zeros(1, dtype=np.int64))


def n_kept(n_rows: int, kept: np.ndarray | None) -> int:
    return n_rows if kept is None else int(np.count_nonzero(kept))


def _divide(hi, lo, n: int):
    """(hi + lo) / n in double-double (one Newton step on the float64 quotient)."""
    q = hi / n
    p_h, p_l = dd.two_prod(q, np.float64(n))
    r = ((hi - p_h) - p_l + lo) / n
    return dd.fast_two_sum(q, r)


class ExactHead:
    """The exact values of one rounded input, each computed once on first use. `kept` (bool per
    row, None: every row) marks the rows whose label is not the ignore index."""

    def __init__(self, h, W, b, labels, fmt: FloatFormat):
        self.args, self.fmt = (h, W, b, labels), fmt
        self._logits = None
        self._loss = None
        self._grads: dict = {}

    def logits(self):
        """The exact logits (double-double), shared by the loss and the gradients."""
        if self._logits is None:
            self._logits = exact_logits(*self.args[:3])
        return self._logits

    def loss(self, reduction: str, kept: np.ndarray | None = None) -> ExactValue:
        if self._loss is None:
            self._loss = exact_head_loss(*self.args, output_precision=self.fmt.precision, logits=self.logits())
        return reduced_loss(self._loss, reduction, kept)

    def gradients(self, reduction: str, kept: np.ndarray | None = None):
        """dL/dh, dL/dW, dL/db of sum(u * loss) (none), of the sum, or of the mean (the sum's over
        the kept count, `divided` in double-double); ignored rows have upstream 0."""
        n = len(self.args[3])
        kept = None if kept is None or kept.all() else kept
        key = ("none" if reduction == "none" else "sum", None if kept is None else kept.tobytes())
        if key not in self._grads:
            upstream = upstream_none(n) if reduction == "none" else None
            if kept is not None:
                upstream = np.where(kept, 1.0 if upstream is None else upstream, 0.0)
            self._grads[key] = exact_head_gradients(
                *self.args, upstream=upstream, output_precision=self.fmt.precision, logits=self.logits()
            )
        grads = self._grads[key]
        if reduction != "mean":
            return grads
        count = n_kept(n, kept)
        return type(grads)(*(None if g is None else divided(g, count) for g in grads))
