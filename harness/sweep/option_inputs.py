"""The option inputs, made once per input so every framework sees the same bits: the ignored rows,
the class weights, the dense targets, and the `masked` family's -inf logits.

Each is drawn from its own stream of the sweep's seed, so adding an option never moves another's
draw. Class weights are multiples of 1/8 in [1/2, 2]: exact in every dtype, bfloat16 included.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from harness.dtypes import round_to
from harness.paths.options import IGNORE_INDEX, CellOptions, NativeArrays

_IGNORED, _WEIGHTS, _MASKED = 1, 2, 3  # stream numbers under the sweep's seed


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, 11, stream])


def ignored_rows(n_rows: int, fraction: float, seed: int) -> np.ndarray:
    """round(fraction * n_rows) rows chosen at random (bool mask, True = ignored)."""
    ignored = np.zeros(n_rows, dtype=bool)
    if round(fraction * n_rows) == 0:
        return ignored
    ignored[_rng(seed, _IGNORED).permutation(n_rows)[: round(fraction * n_rows)]] = True
    return ignored


def class_weights(n_classes: int, seed: int) -> np.ndarray:
    """Positive per-class weights k / 8, k in 4..16 (exact in float16 and bfloat16)."""
    return _rng(seed, _WEIGHTS).integers(4, 17, size=n_classes) / 8.0


def dense_targets(labels: np.ndarray, n_classes: int, smoothing: float) -> np.ndarray:
    """(1 - e) onehot(y) + e / C in float64 (rounded to each dtype where used)."""
    targets = np.full((len(labels), n_classes), smoothing / n_classes)
    targets[np.arange(len(labels)), labels] += 1.0 - smoothing
    return targets


def mask_logits(logits: np.ndarray, labels: np.ndarray, fraction: float, seed: int, mask_label: bool = False):
    """The `masked` family: round(fraction * C) logits of each row set to -inf, as vocabulary padding
    is, never the label's unless mask_label (then its exact loss is +inf). Returns a new array."""
    n_rows, n_classes = logits.shape
    k = round(fraction * n_classes)
    if k == 0:
        return logits.copy()
    keys = _rng(seed, _MASKED).random((n_rows, n_classes))
    if not mask_label:
        keys[np.arange(n_rows), labels] = np.inf  # sorts last: never among the k masked
    else:
        keys[np.arange(n_rows), labels] = -np.inf  # sorts first: always masked
    masked = logits.copy()
    np.put_along_axis(masked, np.argsort(keys, axis=1, kind="stable")[:, :k], -np.inf, axis=1)
    return masked


@dataclass
class OptionInputs:
    """One input's option arrays in NumPy: the rows kept, the labels, the weights (or None)."""

    kept: np.ndarray
    labels: np.ndarray
    weights: np.ndarray | None
    n_classes: int

    @functools.cached_property
    def ignore_labels(self) -> np.ndarray:
        """Labels with the ignored rows set to -100 (the ignore index)."""
        return np.where(self.kept, self.labels, IGNORE_INDEX)

    @functools.cached_property
    def safe_labels(self) -> np.ndarray:
        """Labels with the ignored rows set to 0, so that x[y] can be picked on every row."""
        return np.where(self.kept, self.labels, 0)


def option_inputs(labels: np.ndarray, n_classes: int, options: CellOptions, seed: int) -> OptionInputs:
    kept = ~ignored_rows(len(labels), options.ignore_fraction, seed)
    weights = class_weights(n_classes, seed) if options.class_weights == "random" else None
    return OptionInputs(kept, np.asarray(labels), weights, n_classes)


def native_arrays(backend, inputs: OptionInputs, options: CellOptions, dtype: str, device: str) -> NativeArrays:
    """The option arrays in a framework's own types through its backend's bit-exact transfer
    (call inside the backend's dtype_scope). Weights and targets are in `dtype`."""

    def labels_of(values):
        return backend.transfer(np.asarray(values, dtype=np.int64), device)

    def floats_of(values):
        return backend.transfer(round_to(values, dtype), device)

    kept = labels_of(inputs.kept.astype(np.int64)) != 0
    weights = None if inputs.weights is None else floats_of(inputs.weights[None, :])[0]
    targets = None
    if options.target == "dense":
        targets = floats_of(dense_targets(inputs.safe_labels, inputs.n_classes, options.label_smoothing))
    return NativeArrays(
        kept=kept,
        safe_labels=labels_of(inputs.safe_labels),
        ignore_labels=labels_of(inputs.ignore_labels),
        weights=weights,
        targets=targets,
        any_ignored=not bool(inputs.kept.all()),
    )
