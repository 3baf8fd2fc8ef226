"""Logits for the sweep: made once per (family, scale, size) in float64.

Drawn families scale one standard-normal draw z (the same z at every scale), so moving along the
scale grid changes the magnitude of the logits and nothing else. Given families (`file`,
`inline`) scale logits supplied by the user: x = scale * data, so scale 1 is the data as it is.
Rounding to each dtype happens later, once, so that every framework sees bit-identical inputs
(see `harness.dtypes.round_to`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np

from harness.errors import ConfigError
from harness.sweep.families import FAMILIES, GIVEN_FAMILIES  # noqa: F401 (config imports them from here)

LABEL_CHOICES = ("random", "adversarial")


@dataclass(frozen=True)
class Draw:
    """The base of a family's inputs: z ~ N(0, 1) or the given logits (rows, classes), and labels."""

    z: np.ndarray
    labels: np.ndarray


def draw(n_rows: int, n_classes: int, seed: int) -> Draw:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n_rows, n_classes))
    labels = rng.integers(0, n_classes, size=n_rows)
    return Draw(z=z, labels=labels)


def inline_draw(logits, labels) -> Draw:
    """Logits and labels written in the config, checked like a file's."""
    from harness.sweep.logit_files import as_labels, as_logits

    try:
        array = np.array(logits, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"inline.logits must be a list of rows of numbers: {exc}") from None
    x = as_logits(array, source="inline.logits")
    y = as_labels(np.array(labels), x.shape[0], x.shape[1], source="inline.labels")
    return Draw(z=x, labels=y)


def file_draw(settings: dict) -> Draw:
    """Logits and labels from the file named in the `file` settings (see harness.sweep.logit_files)."""
    from harness.sweep.logit_files import load_logits

    if not settings.get("path"):
        raise ConfigError("family 'file' needs file.path=<.npy/.npz/.pt/.mat file>")
    own = inspect.signature(load_logits).parameters  # the group also holds other losses' keys (named_files)
    logits, labels = load_logits(**{k: v for k, v in settings.items() if k in own})
    return Draw(z=logits, labels=labels)


def make_logits(family: str, scale: float, base: Draw) -> np.ndarray:
    """The float64 logits of one family at one scale (read-only: at scale 1 a spread is the draw
    itself, 1 x z being z bit for bit, which spares a copy of a 10**7-row input)."""
    if scale == 1.0 and family in ("spread", "masked", "file", "inline"):
        logits = base.z.view()
    else:
        logits = FAMILIES[family](base.z, float(scale))
    logits.flags.writeable = False
    return logits


def choose_labels(logits: np.ndarray, base: Draw, label: str) -> np.ndarray:
    """`random`: the drawn (or given) labels; `adversarial`: each row's smallest logit."""
    if label == "adversarial":
        return np.argmin(logits, axis=1)
    return base.labels
