"""The path entries of the distillation loss T**2 KL(softmax(t / T) || softmax(s / T)).

Each is a `harness.paths.PathEntry`; the implementations live beside this file, one module per
framework, as ``PATHS[name](teacher, student, temperature=1.0)``. `implementation()` finds one or
raises `Unsupported` with the declared reason.
"""

from __future__ import annotations

from harness.losses import check_path_names, implementations_of
from harness.losses.kl_divergence.theory import CANCELLATION, NEGATIVE_KL, PROBABILITY_CLIP, PROBABILITY_UNDERFLOW
from harness.paths import PathEntry, Unsupported

_MLX_NOTE = "mx.exp computes in float32 for every dtype (float64: float32's accuracy and range)"
_MLX_FLOAT32 = {"float64": "float32"}
_NO_LOG_TARGET = "no KL on log-probability targets"

ENTRIES = (
    PathEntry(
        "naive",
        "T**2 sum p (log p - log q), p = softmax(t / T), q = softmax(s / T) with the framework's softmax",
        source="the textbook definition (scipy.special.softmax, torch.softmax, jax.nn.softmax, mx.softmax, "
        "tf.nn.softmax)",
        mechanisms=(PROBABILITY_UNDERFLOW, CANCELLATION, NEGATIVE_KL),
        accumulation={"mlx": _MLX_FLOAT32},
        accumulation_note={"mlx": _MLX_NOTE},
    ),
    PathEntry(
        "kl_div",
        "the framework's KL on the student's log-probabilities and the teacher's probabilities",
        source="F.kl_div(log_softmax(s / T), softmax(t / T)); optax.kl_divergence; "
        "keras.losses.kl_divergence (p and q clipped to [1e-7, 1]); scipy.special.rel_entr(p, q)",
        mechanisms=(CANCELLATION, NEGATIVE_KL, PROBABILITY_CLIP),
        unsupported={"mlx": "mlx.nn.losses.kl_div_loss takes log-probability targets only (kl_div_log_target)"},
    ),
    PathEntry(
        "kl_div_log_target",
        "the framework's KL on log-probabilities: exp(log p) (log p - log q)",
        source="F.kl_div(log_q, log_p, log_target=True); optax.losses.kl_divergence_with_log_targets; "
        "mlx.nn.losses.kl_div_loss",
        mechanisms=(CANCELLATION, NEGATIVE_KL),
        accumulation={"mlx": _MLX_FLOAT32},
        accumulation_note={"mlx": _MLX_NOTE},
        unsupported={
            "numpy": f"SciPy has {_NO_LOG_TARGET}",
            "tensorflow": f"TensorFlow and Keras have {_NO_LOG_TARGET} (keras.losses.kl_divergence: probabilities)",
        },
    ),
    PathEntry(
        "ce_minus_entropy",
        "T**2 (CE(p, s / T) - CE(p, t / T)): soft-target cross-entropy minus the teacher's entropy",
        source="distillation code: F.cross_entropy with probability targets, optax.softmax_cross_entropy, "
        "mlx.nn.losses.cross_entropy, tf.nn.softmax_cross_entropy_with_logits, scipy.special.log_softmax",
        mechanisms=(CANCELLATION, NEGATIVE_KL, PROBABILITY_UNDERFLOW),
        accumulation={"mlx": _MLX_FLOAT32},
        accumulation_note={"mlx": _MLX_NOTE},
    ),
)
ENTRIES_BY_NAME = {entry.name: entry for entry in ENTRIES}
PATH_NAMES = tuple(ENTRIES_BY_NAME)


def implementations_module(framework: str):
    """The framework's KL implementations (imports the framework)."""
    return implementations_of("harness.losses.kl_divergence", framework)


def unsupported_reason(framework: str, path: str, options: dict | None = None) -> str:
    """Why `framework` has no `path` ('' where it has one), from the declarations only (every path
    takes the temperature)."""
    return ENTRIES_BY_NAME[path].unsupported.get(framework, "")


def implementation(framework: str, path: str, options: dict | None = None):
    """The path's loss function in `framework`; Unsupported with the declared reason where it has none."""
    reason = unsupported_reason(framework, path, options)
    if reason:
        raise Unsupported(reason)
    return implementations_module(framework).PATHS[path]


def check_paths(names) -> None:
    """One line naming a path this loss does not have, and the valid choices."""
    check_path_names("kl_divergence", names, PATH_NAMES)
