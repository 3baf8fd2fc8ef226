"""The registry of loss paths: one table keyed by (framework, path).

Each framework module (`numpy_paths`, `torch_paths`, `jax_paths`) holds a `PATHS` dict of small
pure functions ``(logits, labels) -> per-row loss`` in its own array type, a `GRADIENTS` dict of
``(logits, labels) -> d(sum of the losses)/d(logits)`` with the same keys, plus the conversions to
and from NumPy. Frameworks are imported only when a sweep asks for them.

Adding a path is adding one `PathSpec` here and one function per framework. Each spec carries its
formula and the dtype each framework accumulates it in (`accumulation_dtype`); `path_table()`
renders both for the README.

Block and chunk sizes: the `online` path works through the classes in blocks of `block_size`, the
`chunked` path in chunks of `chunk_size`. `configure(chunk_size=..., block_size=...)` sets them for
everything compiled afterwards: each framework's `compile` / `compile_gradient` binds the values
current at that moment (JAX traces once per compiled function, so a later change would otherwise
be ignored). The functions also take them as keyword arguments, e.g. ``PATHS["online"](x, y,
block_size=64)``; left out (None), the current setting is used.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
from dataclasses import dataclass, field
from types import ModuleType

INPUT = "input dtype"  # accumulates in the dtype under test, as written


@dataclass(frozen=True)
class PathSpec:
    """One loss path: its formula and, per framework, the dtype its sums and logs are carried in.

    `accumulation[framework]` maps an input dtype to the dtype its sums of exponentials accumulate
    in, where the two differ (absent: the input dtype); `accumulation_note[framework]` says where
    each operation rounds.
    """

    name: str
    formula: str
    accumulation: dict[str, dict[str, str]] = field(default_factory=dict)
    accumulation_note: dict[str, str] = field(default_factory=dict)


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

PATH_SPECS = (
    PathSpec(
        "naive",
        "-log(exp(x[y]) / sum(exp(x))): unshifted softmax, then log",
        {"numpy": _FLOAT16_IN_FLOAT32, "torch": _HALF_IN_FLOAT32, "jax": _HALF_IN_FLOAT32},
        {"numpy": _NUMPY_SUMS, "torch": _TORCH_SUMS, "jax": _XLA},
    ),
    PathSpec(
        "softmax_log",
        "-log(softmax(x)[y]) with the framework's own softmax",
        {"numpy": _FLOAT16_IN_FLOAT32, "torch": _HALF_IN_FLOAT32, "jax": _HALF_IN_FLOAT32},
        {"numpy": "scipy.special.softmax; " + _NUMPY_SUMS, "torch": _TORCH_SOFTMAX, "jax": _XLA},
    ),
    PathSpec(
        "log_softmax_nll",
        "-log_softmax(x)[y]: the framework's log-softmax, then NLL",
        {"numpy": _FLOAT16_IN_FLOAT32, "torch": _HALF_IN_FLOAT32, "jax": _HALF_IN_FLOAT32},
        {"numpy": _NUMPY_SUMS, "torch": _TORCH_LOG_SOFTMAX, "jax": _XLA},
    ),
    PathSpec(
        "fused",
        "the framework's single cross-entropy call",
        {"numpy": {"float16": "float32", "bfloat16": "float64"}, "torch": _HALF_IN_FLOAT32, "jax": _HALF_IN_FLOAT32},
        {
            "numpy": "scipy.special.logsumexp(x) - x[y]; SciPy promotes bfloat16 to float64 and returns float64; "
            + _NUMPY_SUMS,
            "torch": "F.cross_entropy = log_softmax + nll; " + _TORCH_LOG_SOFTMAX,
            "jax": "optax: jax.nn.logsumexp(x) - x[y]; " + _XLA,
        },
    ),
    PathSpec(
        "upcast_fused",
        "fused(float32(x)), cast back to the input dtype: mixed precision (float64 logits are cast down too)",
        {"numpy": _ALWAYS_FLOAT32, "torch": _ALWAYS_FLOAT32, "jax": _ALWAYS_FLOAT32},
        {f: "float32 by definition, whatever the input dtype" for f in ("numpy", "torch", "jax")},
    ),
    PathSpec(
        "log1p_lse",
        "log1p(s) - (x[y] - m), s = sum_{j != argmax} exp(x[j] - m), m = max(x): lse = m + log1p(s) "
        "(Blanchard, Higham & Higham 2021)",
        {"numpy": _FLOAT16_IN_FLOAT32, "torch": _HALF_IN_FLOAT32, "jax": _HALF_IN_FLOAT32},
        {"numpy": _NUMPY_SUMS, "torch": _TORCH_SUMS, "jax": _XLA},
    ),
    PathSpec(
        "online",
        "m + log(d) - x[y]; from m = -inf, d = 0, per block B of block_size classes: m' = max(m, max(B)), "
        "d' = d exp(m - m') + sum(exp(B - m')) (Milakov & Gimelshein 2018)",
        {"numpy": _FLOAT16_IN_FLOAT32, "torch": _HALF_IN_FLOAT32, "jax": _HALF_IN_FLOAT32},
        {"numpy": _NUMPY_SUMS, "torch": _TORCH_SUMS, "jax": _XLA},
    ),
    PathSpec(
        "chunked",
        "logaddexp(...logaddexp(lse(C1), lse(C2))..., lse(CK)) - x[y] over chunks C of chunk_size classes, "
        "lse(C) = max(C) + log(sum(exp(C - max(C)))) (the framework's logsumexp where it has one)",
        {"numpy": _FLOAT16_IN_FLOAT32, "torch": _HALF_IN_FLOAT32, "jax": _HALF_IN_FLOAT32},
        {
            "numpy": "max + log(sum(exp(x - max))) per chunk written with NumPy ops, np.logaddexp; " + _NUMPY_SUMS,
            "torch": "torch.logsumexp per chunk, torch.logaddexp; " + _TORCH_SUMS,
            "jax": "jax.nn.logsumexp per chunk, jnp.logaddexp = max + log1p(exp(-|a - b|)); " + _XLA,
        },
    ),
)
PATHS_BY_NAME = {spec.name: spec for spec in PATH_SPECS}
PATH_FORMULAS = {spec.name: spec.formula for spec in PATH_SPECS}
PATH_NAMES = tuple(PATH_FORMULAS)  # the four original paths first, then the new ones


@dataclass(frozen=True)
class FrameworkSpec:
    name: str
    module: str
    packages: tuple[str, ...]  # import names that must be present
    install: str  # what to pip install


FRAMEWORKS = {
    spec.name: spec
    for spec in (
        FrameworkSpec("numpy", "harness.paths.numpy_paths", ("numpy", "scipy", "ml_dtypes"), "numpy scipy ml_dtypes"),
        FrameworkSpec("torch", "harness.paths.torch_paths", ("torch",), "torch"),
        FrameworkSpec("jax", "harness.paths.jax_paths", ("jax", "optax"), "jax optax"),
    )
}


def accumulation_dtype(framework: str, path: str, dtype: str) -> str:
    """The dtype `path` carries its sums and logs in, in `framework`, for logits of `dtype`."""
    return PATHS_BY_NAME[path].accumulation.get(framework, {}).get(dtype, dtype)


def accumulation_summary(path: str, framework: str) -> str:
    """'input dtype', or the exceptions, e.g. 'float32 for float16, bfloat16; else input dtype'."""
    exceptions = PATHS_BY_NAME[path].accumulation.get(framework, {})
    by_target: dict[str, list[str]] = {}
    for source, target in exceptions.items():
        by_target.setdefault(target, []).append(source)
    if set(exceptions) == {"float16", "bfloat16", "float32", "float64"} and len(by_target) == 1:
        return f"{next(iter(by_target))} always"
    parts = [f"{target} for {', '.join(sources)}" for target, sources in by_target.items()]
    return "; ".join([*parts, "else " + INPUT]) if parts else INPUT


def path_table() -> str:
    """Markdown table of every path: formula and accumulation dtype per framework (for the README)."""
    header = (
        "Accumulation dtype: the dtype the sums of exponentials are carried in, per framework.\n\n"
        "| path | formula | numpy | torch | jax |\n|---|---|---|---|---|"
    )
    rows = [
        f"| `{spec.name}` | {spec.formula} | "
        + " | ".join(accumulation_summary(spec.name, f) for f in FRAMEWORKS)
        + " |"
        for spec in PATH_SPECS
    ]
    return "\n".join([header, *rows])


@dataclass
class PathSettings:
    """Sizes of the class-axis pieces. Defaults give several pieces on the default 1000-class grid."""

    chunk_size: int = 256  # `chunked`: 4 chunks of 1000 classes (memory-efficient losses use ~4096-32768)
    block_size: int = 128  # `online`: 8 blocks of 1000 classes


SETTINGS = PathSettings()


def configure(chunk_size: int | None = None, block_size: int | None = None) -> PathSettings:
    """Set the chunk and/or block size for paths compiled from now on; returns the settings."""
    for name, value in (("chunk_size", chunk_size), ("block_size", block_size)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
        setattr(SETTINGS, name, value)
    return SETTINGS


def size_or_setting(name: str, value: int | None) -> int:
    """`value` if given, else the current setting `name` ('chunk_size' or 'block_size')."""
    return getattr(SETTINGS, name) if value is None else value


def with_settings(fn):
    """`fn` with the current chunk/block size bound, for those of them it takes and leaves unset
    (default None): a size already given, e.g. by functools.partial, is kept."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a callable without a signature (a C function) takes no sizes
        return fn
    bound = {
        name: getattr(SETTINGS, name)
        for name in ("chunk_size", "block_size")
        if name in params and params[name].default is None
    }
    return functools.partial(fn, **bound) if bound else fn


def missing_packages(framework: str) -> list[str]:
    return [p for p in FRAMEWORKS[framework].packages if importlib.util.find_spec(p) is None]


def load(framework: str) -> ModuleType:
    """The framework's module: PATHS, GRADIENTS, to_native, to_numpy, compile, compile_gradient, version."""
    return importlib.import_module(FRAMEWORKS[framework].module)


def is_unsupported(exc: BaseException) -> bool:
    """Whether an exception says the framework cannot run this combination (vs. a failure)."""
    if isinstance(exc, NotImplementedError):
        return True
    text = str(exc).lower()
    return any(s in text for s in ("not implemented for", "not supported", "unsupported"))
