"""The path entries: one entry per way of computing the loss, in the spirit of PyTorch's OpInfo.

An entry (`PathEntry`) holds everything the harness knows about one path: its name, formula and
source; per framework the dtype its sums are carried in and a note on where each operation rounds;
the failure mechanisms theory predicts for it (`mechanisms`, read by the breakdown); whether it has
a gradient; and, per framework, the reason it has no implementation where it has none
(`unsupported`). The implementations themselves live beside this file, one module per framework
(`numpy_paths`, `torch_paths`, `jax_paths`, ...), as a `PATHS` dict of small pure functions
``(logits, labels) -> per-row loss`` in the framework's own array type; NumPy's backward passes are
written by hand (`GRADIENTS`), the others come from the backend's autodiff. `implementation()` finds
one, `path_table()` renders the entries for the README, and tests and plot styles are generated
from the entries, so a new path is one entry plus one function per framework.

Block and chunk sizes are passed, never set globally: `online` takes ``block_size=``, `chunked`
``chunk_size=``; `bind_sizes` binds a sweep's values to a function that takes them.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
from dataclasses import dataclass, field
from types import ModuleType

from harness.backends import FRAMEWORKS
from harness.mechanisms import PROBABILITY_CLIP, SUM_OVERFLOW, TARGET_UNDERFLOW

INPUT = "input dtype"  # accumulates in the dtype under test, as written


@dataclass(frozen=True)
class PathEntry:
    """One loss path and everything known about it.

    `accumulation[framework]` maps an input dtype to the dtype its sums of exponentials accumulate
    in, where the two differ (absent: the input dtype); `accumulation_note[framework]` says where
    each operation rounds. `mechanisms` are the failure mechanisms theory predicts, in the order
    they are checked. `unsupported[framework]` is the reason a framework has no implementation.
    `rounds_once[framework]`: the input dtypes in which the framework forms the target probability
    in float32 and rounds it once (torch.softmax, tf.nn.softmax for float16/bfloat16); elsewhere a
    path that exponentiates rounds exp(x) to the input dtype before dividing by the sum, and that
    double rounding can take a probability of 0.5-0.75 smallest subnormals to 0.
    """

    name: str
    formula: str
    source: str
    mechanisms: tuple[str, ...] = ()
    accumulation: dict[str, dict[str, str]] = field(default_factory=dict)
    accumulation_note: dict[str, str] = field(default_factory=dict)
    gradient: bool = True
    unsupported: dict[str, str] = field(default_factory=dict)
    rounds_once: dict[str, tuple[str, ...]] = field(default_factory=dict)


_HALF_IN_FLOAT32 = {"float16": "float32", "bfloat16": "float32"}
_FLOAT16_IN_FLOAT32 = {"float16": "float32"}
_ALWAYS_FLOAT32 = {dtype: "float32" for dtype in ("float16", "bfloat16", "float32", "float64")}

# How the notes were checked (torch 2.13, jax 0.10.2, NumPy 2.4 on CPU): each path's float16 and
# bfloat16 losses compared bit for bit with NumPy emulations that round to the input dtype after
# chosen operations (2 scales x 256 rows x 1000 classes, half of them confident rows). NumPy and
# torch matched the rule stated on every finite row; JAX on 98-100% of rows, the rest one rounding
# apart (XLA fuses and reorders a little). XLA_FLAGS=--xla_allow_excess_precision=false changed nothing.
_NUMPY_SUMS = (
    "each op rounds to the input dtype; float16 sums accumulate in float32 (NumPy's pairwise sum of "
    "half floats), bfloat16 (ml_dtypes) sums accumulate one by one in bfloat16"
)
_TORCH_SUMS = "each op rounds to the input dtype; CPU sums accumulate float16/bfloat16 in float32"
_TORCH_SOFTMAX = "torch.softmax computes float16/bfloat16 in float32 and rounds once"
_TORCH_LOG_SOFTMAX = (
    "log_softmax sums float16/bfloat16 in float32, rounds the sum and its log to the input dtype, "
    "then x - max - log(sum) in float32, rounded once"
)
_XLA = (
    "XLA CPU computes each float16/bfloat16 op in float32 and rounds it to the input dtype (x / s "
    "as x * (1 / s); a float16 multiply-add may be contracted); jnp.sum and jax.nn's sums accumulate "
    "in float32"
)

# MLX 0.32.4 and TensorFlow 2.21 on the CPU, measured with 4096 equal logits (a stalled float16 or
# bfloat16 sum shows in the loss) and hand-checkable rows.
_MLX_EXP = "mx.exp computes in float32 (float64 exp: float32 accuracy and range)"
_MLX_SUM = "mx.sum accumulates float16/bfloat16 in float32"
_MLX = {
    "naive": "exp and the division round to the input dtype; " + _MLX_SUM + "; " + _MLX_EXP,
    "softmax_log": "mx.softmax (precise=False) sums exp in the input dtype: float16 stalls at 2048, bfloat16 "
    "at 256; " + _MLX_EXP,
    "log_softmax_nll": "x - mx.logsumexp(x); mx.logsumexp accumulates float16/bfloat16 in float32, "
    "rounds the result once; " + _MLX_EXP,
    "fused": "nn.losses.cross_entropy on the CPU: mx.logsumexp(x - max) - (x[y] - max); mx.logsumexp "
    "accumulates float16/bfloat16 in float32; " + _MLX_EXP,
    "upcast_fused": "float32 by definition, whatever the input dtype",
    "log1p_lse": "each op rounds to the input dtype; " + _MLX_SUM + "; " + _MLX_EXP,
    "online": "each op rounds to the input dtype; " + _MLX_SUM + "; " + _MLX_EXP,
    "chunked": "mx.logsumexp per chunk (float32 inside for float16/bfloat16), mx.logaddexp in the input "
    "dtype; " + _MLX_EXP,
}
_TF_OPS = "each op computes float16/bfloat16 in float32 and rounds to the input dtype"
_TF_SUM = "tf.reduce_sum accumulates float16/bfloat16 in float32"
_TF_XENT = "tf.nn.sparse_softmax_cross_entropy_with_logits computes float16/bfloat16 in float32, rounds once"
_TF = {
    "naive": _TF_OPS + "; " + _TF_SUM,
    "softmax_log": "tf.nn.softmax accumulates float16/bfloat16 in float32, rounds once; " + _TF_OPS,
    "log_softmax_nll": "tf.nn.log_softmax accumulates float16/bfloat16 in float32, rounds once",
    "fused": _TF_XENT + " (Keras SparseCategoricalCrossentropy(from_logits=True) calls the same kernel)",
    "upcast_fused": "float32 by definition, whatever the input dtype",
    "log1p_lse": _TF_OPS + "; " + _TF_SUM,
    "online": _TF_OPS + "; " + _TF_SUM,
    "chunked": "tf.reduce_logsumexp per chunk = max + log(reduce_sum(exp(x - max))), each op rounded to "
    "the input dtype, sums in float32; the merge max + log1p(exp(-|a - b|)) in the input dtype",
    "keras_probs": "tf.nn.softmax (float32 inside), clipped to [1e-7, 1 - 1e-7] in the input dtype, log, then "
    + _TF_XENT,
}

_EVERY = tuple(FRAMEWORKS)  # every backend (harness.backends discovers them)

ENTRIES = (
    PathEntry(
        "naive",
        "-log(exp(x[y]) / sum(exp(x))): unshifted softmax, then log",
        source="the textbook definition and the seed article's NumPy loss (np.exp(x) / np.sum(np.exp(x)), unshifted): "
        "softmax, then log",
        mechanisms=(SUM_OVERFLOW, TARGET_UNDERFLOW),
        accumulation={
            "numpy": _FLOAT16_IN_FLOAT32,
            "torch": _HALF_IN_FLOAT32,
            "jax": _HALF_IN_FLOAT32,
            "mlx": _HALF_IN_FLOAT32,
            "tensorflow": _HALF_IN_FLOAT32,
        },
        accumulation_note={
            "numpy": _NUMPY_SUMS,
            "torch": _TORCH_SUMS,
            "jax": _XLA,
            "mlx": _MLX["naive"],
            "tensorflow": _TF["naive"],
        },
    ),
    PathEntry(
        "softmax_log",
        "-log(softmax(x)[y]) with the framework's own softmax",
        source="scipy.special.softmax, torch.softmax, jax.nn.softmax, mx.softmax, tf.nn.softmax",
        mechanisms=(TARGET_UNDERFLOW,),
        accumulation={
            "numpy": _FLOAT16_IN_FLOAT32,
            "torch": _HALF_IN_FLOAT32,
            "jax": _HALF_IN_FLOAT32,
            "mlx": {},
            "tensorflow": _HALF_IN_FLOAT32,
        },
        rounds_once={"torch": ("float16", "bfloat16"), "tensorflow": ("float16", "bfloat16")},
        accumulation_note={
            "numpy": "scipy.special.softmax; " + _NUMPY_SUMS,
            "torch": _TORCH_SOFTMAX,
            "jax": _XLA,
            "mlx": _MLX["softmax_log"],
            "tensorflow": _TF["softmax_log"],
        },
    ),
    PathEntry(
        "log_softmax_nll",
        "-log_softmax(x)[y]: the framework's log-softmax, then NLL",
        source="nn.LogSoftmax + nn.NLLLoss (PyTorch docs); jax.nn.log_softmax; x - mx.logsumexp(x); tf.nn.log_softmax",
        mechanisms=(),
        accumulation={
            "numpy": _FLOAT16_IN_FLOAT32,
            "torch": _HALF_IN_FLOAT32,
            "jax": _HALF_IN_FLOAT32,
            "mlx": _HALF_IN_FLOAT32,
            "tensorflow": _HALF_IN_FLOAT32,
        },
        accumulation_note={
            "numpy": _NUMPY_SUMS,
            "torch": _TORCH_LOG_SOFTMAX,
            "jax": _XLA,
            "mlx": _MLX["log_softmax_nll"],
            "tensorflow": _TF["log_softmax_nll"],
        },
    ),
    PathEntry(
        "fused",
        "the framework's single cross-entropy call",
        source="scipy.special.logsumexp; F.cross_entropy; optax.softmax_cross_entropy_with_integer_labels; "
        "mlx.nn.losses.cross_entropy; tf.nn.sparse_softmax_cross_entropy_with_logits",
        mechanisms=(),
        accumulation={
            "numpy": {"float16": "float32", "bfloat16": "float64"},
            "torch": _HALF_IN_FLOAT32,
            "jax": _HALF_IN_FLOAT32,
            "mlx": _HALF_IN_FLOAT32,
            "tensorflow": _HALF_IN_FLOAT32,
        },
        accumulation_note={
            "numpy": "scipy.special.logsumexp(x) - x[y]; SciPy promotes bfloat16 to float64 and returns float64; "
            + _NUMPY_SUMS,
            "torch": "F.cross_entropy = log_softmax + nll; " + _TORCH_LOG_SOFTMAX,
            "jax": "optax: jax.nn.logsumexp(x) - x[y]; " + _XLA,
            "mlx": _MLX["fused"],
            "tensorflow": _TF["fused"],
        },
    ),
    PathEntry(
        "upcast_fused",
        "fused(float32(x)), cast back to the input dtype: mixed precision (float64 logits are cast down too)",
        source="mixed-precision training (autocast runs the loss in float32)",
        mechanisms=(),
        accumulation={
            "numpy": _ALWAYS_FLOAT32,
            "torch": _ALWAYS_FLOAT32,
            "jax": _ALWAYS_FLOAT32,
            "mlx": _ALWAYS_FLOAT32,
            "tensorflow": _ALWAYS_FLOAT32,
        },
        accumulation_note={f: "float32 by definition, whatever the input dtype" for f in _EVERY},
    ),
    PathEntry(
        "log1p_lse",
        "log1p(s) - (x[y] - m), s = sum_{j != argmax} exp(x[j] - m), m = max(x): lse = m + log1p(s) "
        "(Blanchard, Higham & Higham 2021)",
        source="Blanchard, Higham & Higham, IMA J. Numer. Anal. 41 (2021)",
        mechanisms=(),
        accumulation={
            "numpy": _FLOAT16_IN_FLOAT32,
            "torch": _HALF_IN_FLOAT32,
            "jax": _HALF_IN_FLOAT32,
            "mlx": _HALF_IN_FLOAT32,
            "tensorflow": _HALF_IN_FLOAT32,
        },
        accumulation_note={
            "numpy": _NUMPY_SUMS,
            "torch": _TORCH_SUMS,
            "jax": _XLA,
            "mlx": _MLX["log1p_lse"],
            "tensorflow": _TF["log1p_lse"],
        },
    ),
    PathEntry(
        "online",
        "m + log(d) - x[y]; from m = -inf, d = 0, per block B of block_size classes: m' = max(m, max(B)), "
        "d' = d exp(m - m') + sum(exp(B - m')) (Milakov & Gimelshein 2018)",
        source="Milakov & Gimelshein, arXiv:1805.02867 (2018)",
        mechanisms=(),
        accumulation={
            "numpy": _FLOAT16_IN_FLOAT32,
            "torch": _HALF_IN_FLOAT32,
            "jax": _HALF_IN_FLOAT32,
            "mlx": _HALF_IN_FLOAT32,
            "tensorflow": _HALF_IN_FLOAT32,
        },
        accumulation_note={
            "numpy": _NUMPY_SUMS,
            "torch": _TORCH_SUMS,
            "jax": _XLA,
            "mlx": _MLX["online"],
            "tensorflow": _TF["online"],
        },
    ),
    PathEntry(
        "chunked",
        "logaddexp(...logaddexp(lse(C1), lse(C2))..., lse(CK)) - x[y] over chunks C of chunk_size classes, "
        "lse(C) = max(C) + log(sum(exp(C - max(C)))) (the framework's logsumexp where it has one)",
        source="vocabulary-chunked losses (torchtune, Cut Cross-Entropy, Wijmans et al. 2025)",
        mechanisms=(),
        accumulation={
            "numpy": _FLOAT16_IN_FLOAT32,
            "torch": _HALF_IN_FLOAT32,
            "jax": _HALF_IN_FLOAT32,
            "mlx": _HALF_IN_FLOAT32,
            "tensorflow": _HALF_IN_FLOAT32,
        },
        accumulation_note={
            "numpy": "max + log(sum(exp(x - max))) per chunk written with NumPy ops, np.logaddexp; " + _NUMPY_SUMS,
            "torch": "torch.logsumexp per chunk, torch.logaddexp; " + _TORCH_SUMS,
            "jax": "jax.nn.logsumexp per chunk, jnp.logaddexp = max + log1p(exp(-|a - b|)); " + _XLA,
            "mlx": _MLX["chunked"],
            "tensorflow": _TF["chunked"],
        },
    ),
)
ENTRIES += (
    PathEntry(
        "keras_probs",
        "-log(clip(softmax(x), 1e-7, 1 - 1e-7)[y]) renormalised: Keras sparse_categorical_crossentropy "
        "(from_logits=False) on softmax outputs",
        source="Keras losses with from_logits=False (the probability route)",
        mechanisms=(PROBABILITY_CLIP,),
        accumulation={"tensorflow": _HALF_IN_FLOAT32},
        accumulation_note={"tensorflow": _TF["keras_probs"]},
        unsupported=dict.fromkeys(
            (f for f in _EVERY if f != "tensorflow"),
            "Keras only: its probability route clips at keras.config.epsilon()",
        ),
    ),
)
ENTRIES_BY_NAME = {entry.name: entry for entry in ENTRIES}
PATH_NAMES = tuple(ENTRIES_BY_NAME)  # the four textbook paths first, then the shipped ones
DEFAULT_CHUNK_SIZE = 256  # `chunked`: 4 chunks of 1000 classes (memory-efficient losses use ~4096-32768)
DEFAULT_BLOCK_SIZE = 128  # `online`: 8 blocks of 1000 classes


def frameworks_of(entry: PathEntry) -> tuple[str, ...]:
    """The frameworks an entry is described for (those with an accumulation note)."""
    return tuple(entry.accumulation_note)


def double_rounding(framework: str, path: str, dtype: str) -> bool:
    """Whether the path's target probability is exp(x) rounded to `dtype`, then divided and rounded
    again (theory's target underflow can then come up to ln(1.5) early: harness.outputs.explain)."""
    entry = ENTRIES_BY_NAME[path]
    return TARGET_UNDERFLOW in entry.mechanisms and dtype not in entry.rounds_once.get(framework, ())


def accumulation_dtype(framework: str, path: str, dtype: str) -> str:
    """The dtype `path` carries its sums and logs in, in `framework`, for logits of `dtype`."""
    return ENTRIES_BY_NAME[path].accumulation.get(framework, {}).get(dtype, dtype)


def accumulation_summary(path: str, framework: str) -> str:
    """'input dtype', or the exceptions, e.g. 'float32 for float16, bfloat16; else input dtype'."""
    entry = ENTRIES_BY_NAME[path]
    if framework in entry.unsupported:
        return "not available"
    exceptions = entry.accumulation.get(framework, {})
    by_target: dict[str, list[str]] = {}
    for source, target in exceptions.items():
        by_target.setdefault(target, []).append(source)
    if set(exceptions) == {"float16", "bfloat16", "float32", "float64"} and len(by_target) == 1:
        return f"{next(iter(by_target))} always"
    parts = [f"{target} for {', '.join(sources)}" for target, sources in by_target.items()]
    return "; ".join([*parts, "else " + INPUT]) if parts else INPUT


def path_table(frameworks) -> str:
    """Markdown table of every path: formula, source and accumulation dtype per framework (for the README)."""
    frameworks = tuple(frameworks)
    header = (
        "Accumulation dtype: the dtype the sums of exponentials are carried in, per framework.\n\n"
        f"| path | formula | source | {' | '.join(frameworks)} |\n|---|---|---|{'---|' * len(frameworks)}"
    )
    rows = [
        f"| `{entry.name}` | {entry.formula} | {entry.source} | "
        + " | ".join(accumulation_summary(entry.name, f) for f in frameworks)
        + " |"
        for entry in ENTRIES
    ]
    return "\n".join([header, *rows])


def path_records() -> list[dict]:
    """The entries as plain records (for the run folder's paths.json: outputs read it, never this module)."""
    return [
        {
            "path": e.name,
            "formula": e.formula,
            "source": e.source,
            "mechanisms": list(e.mechanisms),
            "gradient": e.gradient,
            "accumulation": e.accumulation,
            "unsupported": e.unsupported,
        }
        for e in ENTRIES
    ]


def bind_sizes(fn, chunk_size: int | None = None, block_size: int | None = None):
    """`fn` with the given chunk/block size bound, for those of them it takes and leaves unset
    (default None): a size already given, e.g. by functools.partial, is kept."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a callable without a signature (a C function) takes no sizes
        return fn
    given = {"chunk_size": chunk_size, "block_size": block_size}
    bound = {
        name: value
        for name, value in given.items()
        if value is not None and name in params and params[name].default is None
    }
    return functools.partial(fn, **bound) if bound else fn


def size_or_default(name: str, value: int | None) -> int:
    """`value`, or the default chunk/block size when it is None."""
    if value is not None:
        return value
    return DEFAULT_CHUNK_SIZE if name == "chunk_size" else DEFAULT_BLOCK_SIZE


def implementations_module(framework: str) -> ModuleType:
    """The framework's path implementations, `harness.paths.<framework>_paths` (imports the framework)."""
    return importlib.import_module(f"harness.paths.{framework}_paths")


class Unsupported(NotImplementedError):
    """A framework cannot run this combination; the message says why (a row with status unsupported)."""


def loss_function(framework: str, path: str):
    """The path's loss in `framework`; raises Unsupported with the entry's reason where it has none."""
    entry = ENTRIES_BY_NAME[path]
    if framework in entry.unsupported:
        raise Unsupported(entry.unsupported[framework])
    return implementations_module(framework).PATHS[path]


def paths_of(framework: str) -> tuple[str, ...]:
    """The paths a framework implements: every entry that does not declare it unsupported."""
    return tuple(entry.name for entry in ENTRIES if framework not in entry.unsupported)
