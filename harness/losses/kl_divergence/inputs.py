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


GIVEN = ("file", "inline")  # the given families (harness.sweep.named_files): their arrays are read, not drawn
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


# The sweep's side (harness.sweep.named_inputs): a base per (rows, classes, seed), the arrays of a family
# at a scale under the loss's settings, the settings checked in one line, theory's quantities.
def base(n_rows: int, n_classes: int, seed: int) -> Draw:
    return draw(n_rows, n_classes, seed)


def arrays(family: str, base: Draw, scale: float, settings: dict) -> dict:
    if family in GIVEN:  # both models' given logits scaled
        return {"teacher": float(scale) * base["teacher"], "student": float(scale) * base["student"]}
    if family == "near":
        return near(base, scale, settings["delta"])
    return independent(base, scale)


def family_settings(family: str) -> tuple[str, ...]:
    """The settings a family's cells vary over: delta only moves the near family's student."""
    if family in GIVEN:
        return ("temperature",)
    return ("delta", "temperature") if family == "near" else ("temperature",)


def check_settings(settings: dict) -> None:
    """Each delta a finite number >= 0, each temperature a finite number > 0."""
    for delta in settings["delta"]:
        if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not np.isfinite(delta) or delta < 0:
            raise ConfigError(f"kl_divergence.delta must be a finite number >= 0, got {delta!r}")
    for temperature in settings["temperature"]:
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise ConfigError(f"kl_divergence.temperature must be a number > 0, got {temperature!r}")
        check_inputs(np.zeros((1, 2)), np.zeros((1, 2)), float(temperature))


def _log_softmax(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log-softmax of z (rows, classes) in float64 (to about 2**-50: theory's quantities, not a
    reference), and each row's log-sum-exp."""
    top = z.max(axis=1, keepdims=True)
    lse = top + np.log(np.exp(z - top).sum(axis=1, keepdims=True))
    return z - lse, lse


def quantities(held: dict, loss: np.ndarray, settings: dict) -> dict:
    """The quantities theory states its thresholds in: the largest logit; the smallest log-probability of
    the teacher (its probability rounds to 0 past the underflow threshold: NaN in the naive path) and of
    the student (inf), at the temperature; the largest and smallest exact loss; and the largest condition
    number of a row's KL, kappa = sum_j p_j (|t_j| + |lse(t)| + |s_j| + |lse(s)|) / (T KL): the sizes a
    path subtracts to form log p - log q (each log-probability is a logit minus a log-sum-exp), over KL,
    so that rounding to u leaves an error of about u kappa KL per term."""
    temperature = float(settings["temperature"])
    t, s = held["teacher"] / temperature, held["student"] / temperature
    (log_p, lse_t), (log_q, lse_s) = _log_softmax(t), _log_softmax(s)
    p = np.exp(log_p)
    sizes = (p * (np.abs(t) + np.abs(lse_t) + np.abs(s) + np.abs(lse_s))).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        kappa = sizes * temperature**2 / loss  # loss / T**2: the exact per-row KL
    return {
        "max_logit": float(max(held["teacher"].max(), held["student"].max())),
        "min_teacher_log_prob": float(log_p.min()),
        "min_student_log_prob": float(log_q.min()),
        "max_exact_loss": float(loss.max()),
        "min_exact_loss": float(loss.min()),
        "max_condition": float(kappa.max()),
    }


def estimate(held: dict, settings: dict) -> np.ndarray:
    """Each row's loss in plain float64, sum p (log p - log q) T**2: right in size where it is large (for
    telling an overflow that is correct from one that is not), noise where it is tiny."""
    temperature = float(settings["temperature"])
    (log_p, _), (log_q, _) = _log_softmax(held["teacher"] / temperature), _log_softmax(held["student"] / temperature)
    return temperature**2 * (np.exp(log_p) * (log_p - log_q)).sum(axis=1)
