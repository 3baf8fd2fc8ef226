"""Inputs of the language-model head: hidden states h, weight W, optional bias b, labels.

Family `head` draws them once in float64: h (rows, d) standard normal, each row centred and
scaled to unit root-mean-square like a LayerNorm output; W (classes, d) ~ N(0, 1/d) and
b ~ N(0, 1), both multiplied by the sweep's `scale`. The logits h @ W.T + b are then about
`scale` times a standard normal, so a scale grid reaches the same extremes as the `spread`
family. Family `head_file` reads arrays `hidden`, `weight`, `labels` and optional `bias` from
`file.path` (.npz, or .pt through the torch backend; never pickle), scaled the same way.
Rounding to each dtype happens once per dtype, in the head runner.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.errors import ConfigError
from harness.sweep.journal import HEAD_COLUMNS  # noqa: F401 (timing.head imports it from here)

HEAD_FAMILIES = ("head", "head_file")
HEAD_FILE_SUFFIXES = (".npz", ".pt", ".pth")
HEAD_ARRAYS = ("hidden", "weight", "labels")  # required in a head file; `bias` optional


@dataclass(frozen=True)
class HeadDraw:
    """The float64 base of a head input: h (rows, d), W (classes, d), b (classes,) or None, labels."""

    hidden: np.ndarray
    weight: np.ndarray
    bias: np.ndarray | None
    labels: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        """(rows, d, classes)."""
        return self.hidden.shape[0], self.hidden.shape[1], self.weight.shape[0]


def draw_head(n_rows: int, n_classes: int, d: int, bias: bool, seed: int) -> HeadDraw:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n_rows, d))
    centred = z - z.mean(axis=1, keepdims=True)
    rms = np.sqrt((centred**2).mean(axis=1, keepdims=True))
    hidden = centred / np.where(rms > 0, rms, 1.0)  # d = 1 leaves a zero row
    weight = rng.standard_normal((n_classes, d)) / np.sqrt(d)
    b = rng.standard_normal(n_classes) if bias else None
    labels = rng.integers(0, n_classes, size=n_rows)
    return HeadDraw(hidden, weight, b, labels)


def scaled(base: HeadDraw, scale: float) -> HeadDraw:
    """W and b times `scale` (so the logits scale with it); h and the labels unchanged."""
    bias = None if base.bias is None else base.bias * scale
    return HeadDraw(base.hidden, base.weight * scale, bias, base.labels)


def float64_logits(draw: HeadDraw) -> np.ndarray:
    """h @ W.T + b in float64: for adversarial labels (each row's smallest logit) only."""
    z = draw.hidden @ draw.weight.T
    return z if draw.bias is None else z + draw.bias


def choose_labels(draw: HeadDraw, label: str) -> np.ndarray:
    return np.argmin(float64_logits(draw), axis=1) if label == "adversarial" else draw.labels


def read_head_file(path) -> HeadDraw:
    """hidden, weight, labels and optional bias from an .npz or .pt file, checked; one line per problem."""
    from pathlib import Path

    from harness.sweep.logit_files import as_labels, pick_array, read_contents

    if not path:
        raise ConfigError("family 'head_file' needs file.path=<.npz or .pt file with hidden, weight, labels>")
    suffix = Path(str(path)).suffix.lower()
    if suffix not in HEAD_FILE_SUFFIXES and Path(str(path)).exists():
        raise ConfigError(
            f"head file {path} must be one of {', '.join(HEAD_FILE_SUFFIXES)}, got {suffix or '(none)'!r}"
        )
    contents = read_contents(path, "head")
    if isinstance(contents, np.ndarray):
        raise ConfigError(f"head file {path} holds one unnamed array; it needs arrays named {', '.join(HEAD_ARRAYS)}")
    arrays = {name: _real(pick_array(contents, name, name, path), name, path) for name in HEAD_ARRAYS}
    bias = _real(pick_array(contents, "bias", "bias", path), "bias", path) if "bias" in contents else None
    hidden, weight = arrays["hidden"], arrays["weight"]
    if hidden.ndim != 2 or weight.ndim != 2 or hidden.shape[1] != weight.shape[1] or weight.shape[0] < 2:
        raise ConfigError(
            f"head file {path}: need hidden (rows, d) and weight (classes >= 2, d) with the same d, "
            f"got hidden {hidden.shape}, weight {weight.shape}"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ConfigError(f"head file {path}: bias must have shape ({weight.shape[0]},), got {bias.shape}")
    labels = as_labels(arrays["labels"], hidden.shape[0], weight.shape[0], source=f"{path}['labels']")
    return HeadDraw(hidden, weight, bias, labels)


def _real(array: np.ndarray, name: str, path) -> np.ndarray:
    if name == "labels":
        return array
    if array.dtype.kind not in "iuf":
        raise ConfigError(f"{name} in head file {path} must be real numbers, got dtype {array.dtype}")
    values = np.asarray(array, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ConfigError(f"{name} in head file {path} has {int((~np.isfinite(values)).sum())} non-finite value(s)")
    return values
