"""The inputs of the distillation loss: families of (teacher, student) logits as named float64
arrays, and the checks that refuse bad ones in one line before any work.

Drawn families take one base per (rows, classes, seed), two independent z ~ N(0, 1):

- `independent`: teacher = scale * z_t, student = scale * z_s (two unrelated models);
- `near`: teacher = scale * z_t, student = teacher + delta * z_s (a converging student: KL is
  about delta**2 Var_p(z_s) / 2 and every difference-of-sums path cancels as delta shrinks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.errors import ConfigError


@dataclass(frozen=True)
class Draw:
    """Two independent standard-normal (rows, classes) draws."""

    teacher_z: np.ndarray
    student_z: np.ndarray


def draw(n_rows: int, n_classes: int, seed: int) -> Draw:
    rng = np.random.default_rng(seed)
    return Draw(rng.standard_normal((n_rows, n_classes)), rng.standard_normal((n_rows, n_classes)))


def independent(base: Draw, scale: float) -> dict:
    return {"teacher": float(scale) * base.teacher_z, "student": float(scale) * base.student_z}


def near(base: Draw, scale: float, delta: float) -> dict:
    teacher = float(scale) * base.teacher_z
    return {"teacher": teacher, "student": teacher + float(delta) * base.student_z}


FAMILIES = {"independent": independent, "near": near}


def check_inputs(teacher, student, temperature: float = 1.0) -> None:
    """One line naming the bad value: shapes that differ, a temperature that is not positive."""
    t, s = np.asarray(teacher), np.asarray(student)
    if t.shape != s.shape:
        raise ConfigError(f"teacher logits of shape {t.shape} and student logits of shape {s.shape} differ")
    if t.ndim != 2 or t.shape[1] < 2:
        raise ConfigError(f"teacher and student logits must be (rows, classes >= 2), got shape {t.shape}")
    if not (np.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"temperature {temperature!r} is not positive; give a temperature > 0")
