"""The path entries of the binary cross-entropy over logits: one per way of computing it.

Each is a `harness.paths.PathEntry` (name, formula, source, the mechanisms theory predicts, per
framework the reason it has no implementation) plus `option_unsupported`: per option, the
frameworks whose call has no such argument and why (optax's sigmoid_binary_cross_entropy has no
pos_weight). The implementations live beside this file, one module per framework
(`torch_paths`, ...), as ``PATHS[name](logits, targets, pos_weight=None)``; `implementation()`
finds one or raises `Unsupported` with the declared reason, never by trying the call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.backends import FRAMEWORKS
from harness.losses import check_path_names, implementations_of
from harness.losses.binary_cross_entropy.theory import (
    CANCELLATION,
    EXP_OVERFLOW,
    LOG_CLAMP,
    PROBABILITY_CLIP,
    SIGMOID_ROUNDS_TO_ONE,
    SIGMOID_ROUNDS_TO_ZERO,
    SOFTPLUS_THRESHOLD,
)
from harness.paths import PathEntry, Unsupported

POS_WEIGHT = "pos_weight"


@dataclass(frozen=True)
class BCEPathEntry(PathEntry):
    """A PathEntry with, per option, the frameworks whose call lacks it: {option: {framework: reason}}."""

    option_unsupported: dict[str, dict[str, str]] = field(default_factory=dict)


_SCIPY_HALF = {"float16": "float32", "bfloat16": "float32"}
_MLX_FLOAT32 = {"float64": "float32"}
_NUMPY_NOTE = "scipy.special ufuncs compute float16 and bfloat16 in float32, each result rounded to the input dtype"
_MLX_NOTE = (
    "mx.sigmoid, mx.exp and mx.logaddexp on float64 have float32's accuracy and range "
    "(sigmoid(1) = 0.73105857266, sigmoid(-100) = 0, softplus(-100) = 0)"
)
_NO_PROBS = "probability-input BCE"

ENTRIES = (
    BCEPathEntry(
        "naive",
        "-(w t log(s) + (1 - t) log(1 - s)), s = sigmoid(x)",
        source="the textbook definition, after the framework's sigmoid (scipy.special.expit, torch.sigmoid, "
        "jax.nn.sigmoid, mx.sigmoid, tf.sigmoid)",
        mechanisms=(SIGMOID_ROUNDS_TO_ONE, SIGMOID_ROUNDS_TO_ZERO, EXP_OVERFLOW),
        accumulation={"numpy": _SCIPY_HALF, "mlx": _MLX_FLOAT32},
        accumulation_note={"numpy": _NUMPY_NOTE, "mlx": _MLX_NOTE},
    ),
    BCEPathEntry(
        "probs",
        "the framework's probability-input BCE on sigmoid(x): logs clamped at -100 (PyTorch, MLX) or "
        "probabilities clipped to [1e-7, 1 - 1e-7] (Keras)",
        source="F.binary_cross_entropy(torch.sigmoid(x), t); keras.ops.binary_crossentropy(t, tf.sigmoid(x), "
        "from_logits=False); mlx.nn.losses.binary_cross_entropy(mx.sigmoid(x), t, with_logits=False)",
        mechanisms=(LOG_CLAMP, PROBABILITY_CLIP, SIGMOID_ROUNDS_TO_ONE, SIGMOID_ROUNDS_TO_ZERO),
        accumulation={"mlx": _MLX_FLOAT32},
        accumulation_note={"mlx": _MLX_NOTE},
        unsupported={
            "numpy": f"SciPy has no {_NO_PROBS}",
            "jax": f"optax has no {_NO_PROBS} (only sigmoid_binary_cross_entropy, on logits)",
        },
        option_unsupported={
            POS_WEIGHT: {
                "torch": "F.binary_cross_entropy has no pos_weight (only an elementwise weight)",
                "mlx": "mlx.nn.losses.binary_cross_entropy has no pos_weight (only elementwise weights)",
                "tensorflow": "keras.ops.binary_crossentropy has no pos_weight",
            }
        },
    ),
    BCEPathEntry(
        "with_logits",
        "the framework's fused BCE on logits",
        source="F.binary_cross_entropy_with_logits ((1 - t) x - (1 + (w - 1) t) logsigmoid(x)); "
        "optax.sigmoid_binary_cross_entropy (-t log_sigmoid(x) - (1 - t) log_sigmoid(-x)); "
        "tf.nn.sigmoid_cross_entropy_with_logits (max(x, 0) - x t + log1p(exp(-|x|))) or "
        "tf.nn.weighted_cross_entropy_with_logits with pos_weight; mlx binary_cross_entropy(with_logits=True) "
        "(logaddexp(0, x) - x t); SciPy: (1 - t) x - (1 + (w - 1) t) log_expit(x)",
        mechanisms=(CANCELLATION,),
        accumulation={"numpy": _SCIPY_HALF, "mlx": _MLX_FLOAT32},
        accumulation_note={"numpy": _NUMPY_NOTE, "mlx": _MLX_NOTE},
        option_unsupported={
            POS_WEIGHT: {
                "jax": "optax.sigmoid_binary_cross_entropy has no pos_weight",
                "mlx": "mlx.nn.losses.binary_cross_entropy has no pos_weight (only elementwise weights)",
            }
        },
    ),
    BCEPathEntry(
        "log_sigmoid",
        "-(w t logsigmoid(x) + (1 - t) logsigmoid(-x))",
        source="scipy.special.log_expit, F.logsigmoid, jax.nn.log_sigmoid, mlx.nn.log_sigmoid, tf.math.log_sigmoid",
        mechanisms=(),
        accumulation={"numpy": _SCIPY_HALF, "mlx": _MLX_FLOAT32},
        accumulation_note={"numpy": _NUMPY_NOTE, "mlx": _MLX_NOTE},
    ),
    BCEPathEntry(
        "softplus",
        "softplus(x) - t x; with pos_weight (1 - t + w t) softplus(x) - w t x",
        source="np.logaddexp(0, x), F.softplus (x itself above threshold=20), jax.nn.softplus, mlx.nn.softplus, "
        "tf.math.softplus (x itself above -(ln eps + 2))",
        mechanisms=(SOFTPLUS_THRESHOLD, CANCELLATION),
        accumulation={"numpy": _SCIPY_HALF, "mlx": _MLX_FLOAT32},
        accumulation_note={"numpy": _NUMPY_NOTE, "mlx": _MLX_NOTE},
    ),
)
ENTRIES_BY_NAME = {entry.name: entry for entry in ENTRIES}
PATH_NAMES = tuple(ENTRIES_BY_NAME)
FRAMEWORK_NAMES = tuple(FRAMEWORKS)


def implementations_module(framework: str):
    """The framework's BCE implementations (imports the framework)."""
    return implementations_of("harness.losses.binary_cross_entropy", framework)


def unsupported_reason(framework: str, path: str, options: dict | None = None) -> str:
    """Why `framework` cannot run `path` with `options` ('' where it can), from the declarations only."""
    entry = ENTRIES_BY_NAME[path]
    if framework in entry.unsupported:
        return entry.unsupported[framework]
    for option, value in (options or {}).items():
        if value is not None and framework in entry.option_unsupported.get(option, {}):
            return entry.option_unsupported[option][framework]
    return ""


def implementation(framework: str, path: str, options: dict | None = None):
    """The path's loss function in `framework`; Unsupported with the declared reason where it has none."""
    reason = unsupported_reason(framework, path, options)
    if reason:
        raise Unsupported(reason)
    return implementations_module(framework).PATHS[path]


def check_paths(names) -> None:
    """One line naming a path this loss does not have, and the valid choices."""
    check_path_names("binary_cross_entropy", names, PATH_NAMES)
