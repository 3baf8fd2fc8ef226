"""The inputs of the binary cross-entropy over logits: families of (logits, targets) as named float64
arrays, and the checks that refuse bad ones in one line before any work.

Drawn families take one base per (shape, seed): z ~ N(0, 1) and three target sets of the same
shape, so moving along the scale grid changes the logits and nothing else:

- `spread`: logits = scale * z (sigmoid saturates at both ends as the scale grows);
- `offset`: logits = z + scale, every logit shifted, as a confident model's are.

Targets: `hard` (0 or 1, each with probability 1/2), `smoothed` (hard targets with label smoothing
`smoothing`: 1 - smoothing / 2 and smoothing / 2) and `soft` (uniform in [0, 1], as distillation
targets are).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.errors import ConfigError

TARGET_KINDS = ("hard", "smoothed", "soft")
DEFAULT_SMOOTHING = 0.1


@dataclass(frozen=True)
class Draw:
    """z ~ N(0, 1) and the hard and soft targets of the same shape."""

    z: np.ndarray
    hard: np.ndarray
    soft: np.ndarray


def draw(shape: tuple[int, ...], seed: int) -> Draw:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(shape)
    hard = rng.integers(0, 2, size=shape).astype(np.float64)
    return Draw(z=z, hard=hard, soft=rng.uniform(0.0, 1.0, size=shape))


def targets_of(base: Draw, kind: str, smoothing: float = DEFAULT_SMOOTHING) -> np.ndarray:
    if kind == "hard":
        return base.hard
    if kind == "smoothed":
        return np.where(base.hard == 1.0, 1.0 - smoothing / 2.0, smoothing / 2.0)
    if kind == "soft":
        return base.soft
    raise ConfigError(f"unknown targets {kind!r}; valid choices: {', '.join(TARGET_KINDS)}")


def spread(base: Draw, scale: float, targets: str = "hard", smoothing: float = DEFAULT_SMOOTHING) -> dict:
    return {"logits": float(scale) * base.z, "targets": targets_of(base, targets, smoothing)}


def offset(base: Draw, scale: float, targets: str = "hard", smoothing: float = DEFAULT_SMOOTHING) -> dict:
    return {"logits": base.z + float(scale), "targets": targets_of(base, targets, smoothing)}


GIVEN = ("file", "inline")  # the given families (harness.sweep.named_files): their arrays are read, not drawn
FAMILIES = {"spread": spread, "offset": offset}


def check_inputs(logits, targets, pos_weight=None) -> None:
    """One line naming the bad value: targets outside [0, 1], shapes that differ, a bad pos_weight."""
    x, t = np.asarray(logits), np.asarray(targets)
    if x.shape != t.shape:
        raise ConfigError(f"targets of shape {t.shape} do not match logits of shape {x.shape}: one target per logit")
    bad = ~((t >= 0) & (t <= 1))
    if bad.any():
        raise ConfigError(
            f"target {float(t[bad].flat[0])!r} is outside [0, 1]; targets must be probabilities in [0, 1]"
        )
    if pos_weight is not None:
        w = np.asarray(pos_weight, dtype=np.float64)
        if not np.all(np.isfinite(w) & (w >= 0)):
            raise ConfigError(f"pos_weight {w.tolist()!r} is not finite and non-negative")
        try:
            np.broadcast_shapes(w.shape, x.shape)
        except ValueError:
            raise ConfigError(f"pos_weight of shape {w.shape} does not broadcast to logits {x.shape}") from None


# The sweep's side (harness.sweep.named_inputs): a base per (rows, columns, seed), the arrays of a family
# at a scale under the loss's settings, the settings checked in one line, theory's quantities.
def base(n_rows: int, n_classes: int, seed: int) -> Draw:
    """One draw per size: (n_rows, n_classes) logits, one label per logit."""
    return draw((n_rows, n_classes), seed)


def arrays(family: str, base: Draw, scale: float, settings: dict) -> dict:
    if family in GIVEN:  # the given logits scaled, the targets as given
        return {"logits": float(scale) * base["logits"], "targets": base["targets"]}
    return FAMILIES[family](base, scale, targets=settings["targets"])


def family_settings(family: str) -> tuple[str, ...]:
    """The settings a family's cells vary over: every one, in both families."""
    if family in GIVEN:
        return ("pos_weight",)  # the targets are given
    return ("targets", "pos_weight")


def check_settings(settings: dict) -> None:
    """targets among TARGET_KINDS; each pos_weight None or a finite number >= 0."""
    for kind in settings["targets"]:
        if kind not in TARGET_KINDS:
            raise ConfigError(
                f"unknown targets {kind!r} in binary_cross_entropy.targets; valid choices: {', '.join(TARGET_KINDS)}"
            )
    for weight in settings["pos_weight"]:
        if weight is not None and (
            isinstance(weight, bool) or not isinstance(weight, (int, float)) or not np.isfinite(weight) or weight < 0
        ):
            raise ConfigError(f"binary_cross_entropy.pos_weight must be null or a finite number >= 0, got {weight!r}")


def quantities(held: dict, loss: np.ndarray, settings: dict) -> dict:
    """The quantities theory states its thresholds in: the largest and smallest logit (where sigmoid
    rounds to 1 and to 0) and the largest exact loss."""
    x = held["logits"]
    return {"max_logit": float(x.max()), "min_logit": float(x.min()), "max_exact_loss": float(loss.max())}


def estimate(held: dict, settings: dict) -> np.ndarray:
    """Each element's loss in plain float64, w t softplus(-x) + (1 - t) softplus(x): right in size (for
    telling an overflow that is correct from one that is not)."""
    x, t = held["logits"], held["targets"]
    w = 1.0 if settings.get("pos_weight") is None else float(settings["pos_weight"])
    return w * t * np.logaddexp(0.0, -x) + (1.0 - t) * np.logaddexp(0.0, x)
