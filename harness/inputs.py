"""Logits for the sweep: made once per (family, scale, size, seed) in float64.

Every family scales the same standard-normal draw z, so moving along the scale grid changes the
magnitude of the logits and nothing else. Rounding to each dtype happens later, once, so that
every framework sees bit-identical inputs (see `harness.dtypes.round_to`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FAMILIES = {
    "spread": lambda z, scale: scale * z,  # logits spread wider: exp overflows, p underflows
    "offset": lambda z, scale: z + scale,  # common shift: the exact loss is unchanged
}

LABEL_CHOICES = ("random", "adversarial")


@dataclass(frozen=True)
class Draw:
    """The random part of a sweep's inputs: z ~ N(0, 1) of shape (n_rows, n_classes), labels."""

    z: np.ndarray
    labels: np.ndarray


def draw(n_rows: int, n_classes: int, seed: int) -> Draw:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n_rows, n_classes))
    labels = rng.integers(0, n_classes, size=n_rows)
    return Draw(z=z, labels=labels)


def make_logits(family: str, scale: float, base: Draw) -> np.ndarray:
    """The float64 logits of one family at one scale."""
    return FAMILIES[family](base.z, float(scale))


def choose_labels(logits: np.ndarray, base: Draw, label: str) -> np.ndarray:
    """`random`: the drawn labels; `adversarial`: each row's smallest logit (the largest loss)."""
    if label == "adversarial":
        return np.argmin(logits, axis=1)
    return base.labels
