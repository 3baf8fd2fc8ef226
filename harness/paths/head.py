"""The language-model head paths: cross-entropy of h @ W.T + b without handing the harness the logits.

A head path takes hidden states h (rows, d), a weight W (classes, d), an optional bias b (classes,)
and labels y, and returns the loss under a `reduction` (none: per row; mean; sum). Its entry
(`HeadEntry`) holds its name, formula and source, a note per framework on where it rounds, and the
reason a framework has no implementation. The implementations live beside this file, one module
per framework (`numpy_head`, `torch_head`, `jax_head`, `mlx_head`, `tensorflow_head`), as
`LOSSES[path](h, W, b, y, reduction, chunk_size)`; their gradients with respect to h, W and b come
from `gradients(...)` in the same module (by hand in NumPy, by autodiff elsewhere).

`mode` says how a path is run: `eager`, or `compiled` (torch.compile for PyTorch, mx.compile for
MLX, tf.function(jit_compile=True), i.e. XLA, for TensorFlow). NumPy has no compiled mode (its
`compiled` rows are `unsupported`); JAX is always jitted, so its `eager` rows run jitted too and say
so. TensorFlow's `eager` is op by op; tf.function without XLA is not a mode of its own, since it gave
eager's bits on every logit path (harness.backends.tensorflow).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from harness.backends import FRAMEWORKS

# the frameworks with a head module beside this file (`<name>_head.py`), in the backends' order
HEAD_FRAMEWORKS = tuple(f for f in FRAMEWORKS if (Path(__file__).parent / f"{f}_head.py").is_file())
_NOT_TORCH = tuple(f for f in HEAD_FRAMEWORKS if f != "torch")
MODES = ("eager", "compiled")
REDUCTIONS = ("none", "mean", "sum")
ACC_POLICIES = ("accurate", "balanced", "compact")  # torch.nn.LinearCrossEntropyOptions(acc_policy=...)

# Checked at 64 x 512 x 1000 (torch 2.13, jax 0.10.2, mlx 0.32.4, tensorflow 2.21, CPU): 99.8% (float16) and
# 99.99% (bfloat16) of the entries equal a float32 product rounded once to the dtype; the rest differ by the
# sum's order.
_HALF_MATMUL = "float16/bfloat16 products accumulate in float32 and round once to the dtype"
_TORCH_ONLY = "PyTorch only: F.linear_cross_entropy's LinearCrossEntropyOptions"
_BY_HAND = "by hand: a Python loop over vocabulary chunks, each chunk's logits as in linear_fused, running max "


def _torch_only(reason: str) -> dict[str, str]:
    return dict.fromkeys(_NOT_TORCH, reason)


@dataclass(frozen=True)
class HeadEntry:
    """One head path: what it computes, where each framework rounds, and why a framework has none."""

    name: str
    formula: str
    source: str
    notes: dict[str, str] = field(default_factory=dict)
    unsupported: dict[str, str] = field(default_factory=dict)


def _policy(policy: str) -> HeadEntry:
    return HeadEntry(
        f"linear_chunked_{policy}",
        f"F.linear_cross_entropy(h, W, y, options=LinearCrossEntropyOptions(acc_policy='{policy}'))",
        source="PyTorch 2.13 torch.nn.functional.linear_cross_entropy",
        notes={"torch": f"batch-chunked (chunking_method='auto'), acc_policy='{policy}'"},
        unsupported=_torch_only(_TORCH_ONLY),
    )


ENTRIES = (
    HeadEntry(
        "linear_fused",
        "cross_entropy(h @ W.T + b, y): the logits materialised in the dtype, then the framework's fused loss",
        source="the unfused head: scipy.special.logsumexp; F.linear + F.cross_entropy; h @ W.T + optax",
        notes={
            "numpy": "h @ W.T in BLAS float32 for float16/bfloat16 (NumPy has no half BLAS), rounded to the "
            "dtype, then scipy.special.logsumexp(x) - x[y] (float64 inside for bfloat16)",
            "torch": "F.linear (CPU: " + _HALF_MATMUL + "), then F.cross_entropy",
            "jax": "h @ W.T (XLA CPU: " + _HALF_MATMUL + "), then optax.softmax_cross_entropy_with_integer_labels",
            "mlx": "h @ W.T (MLX CPU: " + _HALF_MATMUL + "), then nn.losses.cross_entropy (x - max, then "
            "mx.logsumexp: float16/bfloat16 sums in float32; mx.exp is a float32 polynomial, so float64 "
            "exponentials have float32's accuracy)",
            "tensorflow": "tf.matmul (CPU: " + _HALF_MATMUL + "; float32 as NumPy's BLAS), then "
            "tf.nn.sparse_softmax_cross_entropy_with_logits (float16/bfloat16 in float32 inside); subnormal "
            "float32/float64/bfloat16 results flushed to zero",
        },
    ),
    HeadEntry(
        "linear_chunked",
        "lse over vocabulary chunks of head.chunk_size classes: m' = max(m, max(z_C)), "
        "s' = s exp(m - m') + sum(exp(z_C - m')), z_C = h @ W_C.T + b_C; loss = m + log(s) - z_y "
        "(PyTorch: its fused F.linear_cross_entropy with LinearCrossEntropyOptions())",
        source="torchtune / Megatron / Cut Cross-Entropy style chunking; PyTorch 2.13 F.linear_cross_entropy",
        notes={
            "numpy": "by hand: a loop over vocabulary chunks, each chunk's logits in the dtype ("
            + _HALF_MATMUL
            + "), running max and sum in the dtype (float16 sums in float32)",
            "torch": "F.linear_cross_entropy with LinearCrossEntropyOptions() (acc_policy and chunking_method "
            "'auto': on the CPU 'accurate' for float16/bfloat16, else 'compact')",
            "jax": "jax.lax.scan over vocabulary chunks (running max, held out of the gradient, and sum in the "
            "dtype), jitted; gradients by jax.grad through the scan",
            "mlx": _BY_HAND + "(held out of the gradient) and sum in the dtype (mx.sum of float16/bfloat16 in "
            "float32, rounded once); exponentials as in linear_fused; gradients by mx.grad",
            "tensorflow": _BY_HAND + "(held out of the gradient) and sum in the dtype (float16/bfloat16 ops "
            "computed in float32, each rounded once); gradients by tf.GradientTape",
        },
    ),
    *(_policy(p) for p in ACC_POLICIES),
    HeadEntry(
        "linear_ce_reference",
        "F.linear_cross_entropy(h, W, y, options=None): PyTorch's reference (unchunked) path",
        source="PyTorch 2.13 torch.nn.functional.linear_cross_entropy",
        notes={"torch": "options=None: linear, then cross_entropy, as PyTorch's reference"},
        unsupported=_torch_only("PyTorch only: F.linear_cross_entropy"),
    ),
    HeadEntry(
        "cce_torch_compile",
        "Cut Cross-Entropy's linear_cross_entropy(e, c, targets, impl='torch_compile')",
        source="Apple ml-cross-entropy (Wijmans et al. 2025), package cut-cross-entropy",
        notes={"torch": "the package's torch.compile implementation (logits in float32 inside)"},
        unsupported=_torch_only("PyTorch only: Cut Cross-Entropy"),
    ),
)
ENTRIES_BY_NAME = {entry.name: entry for entry in ENTRIES}
HEAD_PATH_NAMES = tuple(ENTRIES_BY_NAME)
DEFAULT_HEAD_PATHS = ("linear_fused", "linear_chunked")

MODE_UNSUPPORTED = {("numpy", "compiled"): "NumPy has no compiled mode"}
MODE_NOTE = {
    ("jax", "eager"): "JAX is always jitted: eager runs jax.jit too",
    ("jax", "compiled"): "jax.jit",
    ("torch", "compiled"): "torch.compile (Inductor, CPU)",
    ("mlx", "compiled"): "mx.compile (CPU: fused kernels built by the C++ compiler at first call)",
    ("tensorflow", "compiled"): "tf.function(jit_compile=True): XLA, as Keras 3's jit_compile='auto'",
}


def implementations_module(framework: str) -> ModuleType:
    """`harness.paths.<framework>_head` (imports the framework)."""
    return importlib.import_module(f"harness.paths.{framework}_head")


def unsupported_reason(framework: str, path: str, mode: str) -> str:
    """Why (framework, path, mode) cannot run, '' where it can (the entry's reason, then the mode's)."""
    entry = ENTRIES_BY_NAME[path]
    if framework not in HEAD_FRAMEWORKS:
        return f"no head paths in {framework} yet"
    return entry.unsupported.get(framework) or MODE_UNSUPPORTED.get((framework, mode), "")


def path_table() -> str:
    """Markdown table of the head paths and where each framework rounds (for the README)."""
    header = f"| path | formula | {' | '.join(HEAD_FRAMEWORKS)} |\n|---|---|{'---|' * len(HEAD_FRAMEWORKS)}"
    rows = [
        f"| `{e.name}` | {e.formula} | "
        + " | ".join(e.notes.get(f) or f"- ({e.unsupported.get(f, '')})" for f in HEAD_FRAMEWORKS)
        + " |"
        for e in ENTRIES
    ]
    return "\n".join([header, *rows])
