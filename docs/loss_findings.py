"""The findings of the binary cross-entropy and KL divergence studies (bce_sweep, distillation_kl), as
docs/findings.py renders them: sentences whose every number is read from the runs' tables (docs/data/)."""

from __future__ import annotations

import math

import pandas as pd

GOOD = ("ok", "exact_overflow", "exact_underflow")
NAMES = {"numpy": "NumPy", "torch": "PyTorch", "jax": "JAX", "mlx": "MLX", "tensorflow": "TensorFlow"}

# study -> (its table, the columns kept, overrides of its run)
STUDIES = {
    "bce_sweep": (
        "breakdown",
        ("framework", "path", "dtype", "family", "targets", "first_fail_status", "theory_cause", "theory_threshold")
        + ("break_quantity_lo", "break_quantity_hi", "matches_theory"),
        ["frameworks=[numpy,torch,jax,mlx,tensorflow]"],
    ),
    "bce_errors": (
        "errors",
        ("framework", "path", "dtype", "family", "targets", "scale", "status", "max_ulp_err"),
        ["frameworks=[numpy,torch,jax,mlx,tensorflow]"],
    ),
    "distillation_kl": (
        "breakdown",
        ("framework", "path", "dtype", "family", "delta", "first_fail_status", "theory_cause", "theory_threshold")
        + ("break_quantity_lo", "break_quantity_hi", "matches_theory"),
        ["frameworks=[numpy,torch,jax,mlx,tensorflow]"],
    ),
    "kl_errors": (
        "errors",
        ("framework", "path", "dtype", "family", "delta", "scale", "status", "max_ulp_err", "max_exact_loss"),
        ["frameworks=[numpy,torch,jax,mlx,tensorflow]"],
    ),
}
EXPERIMENT = {"bce_errors": "bce_sweep", "kl_errors": "distillation_kl"}


def _worst(e: pd.DataFrame, **where) -> float:
    cells = e[e.status.isin(GOOD)]
    for key, value in where.items():
        cells = cells[cells[key].isin(value if isinstance(value, list | tuple) else [value])]
    return float(cells.max_ulp_err.max())


def _bracket(b: pd.DataFrame, g, **where) -> str:
    rows = b
    for key, value in where.items():
        rows = rows[rows[key] == value]
    lo, hi = g(rows.break_quantity_lo.min(), 5), g(rows.break_quantity_hi.max(), 5)
    return lo if lo == hi else f"{lo} to {hi}"


def _agree(b: pd.DataFrame) -> str:
    broke = b[b.first_fail_status.fillna("").ne("")]
    agree = int(broke.matches_theory.astype(str).eq("True").sum())
    where = "where theory puts them (within 1% of a threshold, or in its range)"
    return f"{agree} of the study's {len(broke)} breaks lie {where}"


def bce(t: dict, g) -> dict[str, str]:
    b, e = t["bce_sweep"], t["bce_errors"]
    accurate = max(_worst(e, framework=f, path="log_sigmoid") for f in ("numpy", "torch"))
    loose = {f: _worst(e, framework=f, path="log_sigmoid", dtype="float32") for f in ("jax", "mlx", "tensorflow")}
    fused = _worst(e, framework="torch", path="with_logits", dtype="float32")
    clamp = _worst(e, framework="torch", path="probs", dtype="float32")
    hard = b[(b.path == "naive") & (b.targets == "hard") & (b.family == "spread")]
    return {
        "bce_use": (
            "**Binary cross-entropy: the log-sigmoid form holds, the others cancel.** NumPy's and PyTorch's "
            f"`-(t logsigmoid(x) + (1 - t) logsigmoid(-x))` never fails and stays within {g(accurate, 3)} ulp in "
            "every dtype; their fused calls (`binary_cross_entropy_with_logits`: (1 - t) x - logsigmoid(x)) and "
            f"`softplus(x) - t x` lose the tiny loss of a confident right answer, {g(fused, 3)} ulps in float32, "
            f"and `F.binary_cross_entropy` on sigmoid outputs, clamped at 100, {g(clamp, 3)}. JAX's, MLX's and "
            f"TensorFlow's log-sigmoid are {g(min(loose.values()), 3)} to {g(max(loose.values()), 3)} ulps off in "
            "float32."
        ),
        "bce_naive": (
            "**Sigmoid, then the textbook formula, breaks at a logit of 16.6 in float32:** once "
            "1 + exp(-x) rounds to 1, log(1 - s) is -inf, and the loss inf (NaN for a target of 1) from "
            f"x = {_bracket(hard, g, framework='torch', dtype='float32')} (theory: 24 ln 2 = "
            f"{g(24 * math.log(2), 5)}); MLX's correctly rounded sigmoid from "
            f"{_bracket(hard, g, framework='mlx', dtype='float32')}, every framework in float16 by "
            f"{_bracket(hard[hard.dtype == 'float16'], g)} and in float64 by "
            f"{_bracket(hard[hard.dtype == 'float64'], g)}. {_agree(b)}."
        ),
    }


def kl(t: dict, g) -> dict[str, str]:
    b, e = t["distillation_kl"], t["kl_errors"]
    near = e[(e.family == "near") & (e.delta == 1e-6)]
    f32 = near[near.dtype == "float32"]
    negative = f32[f32.status == "negative"].groupby(["framework", "path"]).size()
    combos = f32[f32.status != "unsupported"].groupby(["framework", "path"]).size()
    naive = b[(b.path == "naive") & (b.family == "independent") & (b.first_fail_status == "nan")]
    exact_at = f32[f32.scale == f32.scale.min()].max_exact_loss.max()
    return {
        "kl_negative": (
            "**A converging student's KL comes out negative.** With the student 1e-6 x z away from its teacher "
            f"over 32,000 classes (KL about {g(exact_at, 2)}), {len(negative)} of the {len(combos)} "
            "framework/path combinations that run return a negative KL in float32: each log-probability is a "
            "logit minus a log-sum-exp, so a sum of p (log p - log q) carries an error of the logits' size "
            "times the unit roundoff, far above such a KL; the status `negative` marks it."
        ),
        "kl_naive": (
            "**Softmax both, then the sum, is NaN once a teacher probability underflows:** 0 x log 0, "
            "in float32 at a teacher log-probability of "
            f"{_bracket(naive[(naive.dtype == 'float32') & naive.framework.isin(['numpy', 'torch'])], g)} "
            f"(theory: ln(2^-150) = {g(math.log(2.0**-150), 5)}), at "
            f"{_bracket(naive[(naive.dtype == 'float32') & (naive.framework == 'jax')], g)} in JAX, whose division "
            "flushes; `F.kl_div` and the log-target forms take 0 log 0 = 0 and stay finite. "
            f"{_agree(b)}."
        ),
    }


def render(t: dict, g) -> dict[str, str]:
    """The `losses` block: the sentences of both studies."""
    s = {**bce(t, g), **kl(t, g)}
    return {"losses": "\n".join(f"- {s[k]}" for k in ("bce_use", "bce_naive", "kl_negative", "kl_naive"))}
