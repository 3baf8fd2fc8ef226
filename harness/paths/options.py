"""Loss options (reduction, ignored rows, class weights, label smoothing, z-loss, soft-cap, dense
targets): what each framework's paths support, and the composition people write by hand.

The rule. `fused` uses the library's own options where the library has them (torch
F.cross_entropy, optax, mlx.nn.losses.cross_entropy, Keras; NumPy composes around SciPy); every
other path composes by hand around its per-row loss, the way users write it:

- soft-cap: x' = c tanh(x / c) before the path (Gemma 2);
- label smoothing: base + e (x'[y] - mean(x')) = (1 - e)(lse - x'[y]) + e (lse - mean x');
- z-loss: + z lse^2, lse = base + x'[y] (the unsmoothed base; PaLM, T5X);
- class weights: each row's loss times w[y]; ignored rows dropped by a mask;
- reduction: sum = sum(w l) over kept rows, mean = sum(w l) / sum(w[y]) over kept rows
  (as F.cross_entropy(weight=, ignore_index=) defines it); none: per row, 0 at ignored rows.

A combination a framework cannot express raises `Unsupported` (a NotImplementedError, so the
runner records status unsupported) with the reason. Each framework's module
(`harness.paths.<framework>_options`) exposes the same API:
``loss_with_options(path, path_fn, x, y, arrays, options) -> loss`` (per row, or one value), where
`arrays` are the option inputs in the framework's own types (`NativeArrays`), and an `OPS` table of
the few operations the composition needs.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import asdict, dataclass
from types import SimpleNamespace

from harness.mechanisms import OTHER_CLASS_UNDERFLOW  # noqa: F401 (target=dense softmax_log: 0 * log(0) = NaN)
from harness.paths import Unsupported

REDUCTIONS = ("none", "mean", "sum")
TARGETS = ("index", "dense")
CLASS_WEIGHTS = (None, "random")
IGNORE_INDEX = -100  # torch's ignore_index default; Keras's ignore_class takes it too
OPTION_NAMES = (
    "reduction",
    "ignore_fraction",
    "class_weights",
    "label_smoothing",
    "z_loss",
    "softcap",
    "target",
)
DENSE_PATHS = ("softmax_log", "log_softmax_nll", "fused")  # paths written with a probability target


@dataclass(frozen=True)
class CellOptions:
    """The option values of one cell: each is a sweep setting and a column of every table."""

    reduction: str = "none"
    ignore_fraction: float = 0.0
    class_weights: str | None = None
    label_smoothing: float = 0.0
    z_loss: float = 0.0
    softcap: float | None = None
    target: str = "index"

    @property
    def is_default(self) -> bool:
        """True for the bare per-row loss every earlier sweep measured."""
        return self == CellOptions()

    def columns(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class NativeArrays:
    """One input's option arrays in a framework's own types.

    kept: rows not ignored (bool, N); safe_labels: labels with ignored rows set to 0 (so a path
    that picks x[y] can run on every row); ignore_labels: labels with ignored rows set to -100
    (for a library's ignore index); weights: per-class weights in x's dtype, or None; targets:
    dense targets (1 - e) onehot + e / C rounded to x's dtype, or None (target=index).
    """

    kept: object
    safe_labels: object
    ignore_labels: object
    weights: object = None
    targets: object = None
    any_ignored: bool = False

    def packed(self) -> dict:
        """The arrays alone (those not None), to hand a compiled loss as its argument: a jitted
        function folds the arrays it closes over into constants, which costs XLA seconds a cell."""
        names = ("kept", "safe_labels", "ignore_labels", "weights", "targets")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


# --- which paths support which options, per framework ------------------------------------------

_LIBRARY = {
    "numpy": "scipy.special.logsumexp(x') - x'[y], every option composed by hand (SciPy has no loss options)",
    "torch": "F.cross_entropy(weight=, ignore_index=-100, label_smoothing=, reduction=); probability targets "
    "for dense (their mean divides by N: with ignored rows or weights, reduced by hand); soft-cap and z-loss by "
    "hand (then the reduction too); weight= with label_smoothing= unsupported (another loss)",
    "jax": "optax.softmax_cross_entropy_with_integer_labels; optax.smooth_labels + optax.softmax_cross_entropy "
    "for smoothing and dense; ignored rows, weights, reduction, soft-cap and z-loss by hand",
    "mlx": "nn.losses.cross_entropy(weights=w[y], label_smoothing=) per row (its weights are per target; its mean "
    "divides by N); dense: probability targets smoothed beforehand; mask, reduction, soft-cap and z-loss by hand",
    "tensorflow": "Keras SparseCategoricalCrossentropy(from_logits=True, ignore_class=-100); "
    "CategoricalCrossentropy(from_logits=True, label_smoothing=) on one-hot targets for smoothing and dense; "
    "weights, reduction, soft-cap and z-loss by hand",
}
OPTION_SUPPORT = {
    "fused": _LIBRARY,
    "other paths": "composed by hand around the path's per-row loss (see harness.paths.options)",
    "dense": "softmax_log (the seed article's sum(-log(softmax(x)) * t)), log_softmax_nll (-sum(log_softmax(x) * t)) "
    "and fused; other paths pick x[y] and have no dense form",
}
OTHER_CLASS_UNDERFLOW_NOTE = (
    "sum(-log(softmax(x)) * t) is NaN once any class with t_j = 0 has a probability that rounds to 0 "
    "(x_j - lse(x) below the dtype's exp underflow threshold), long before the target's does: "
    "0 * -log(0) = 0 * inf"
)
NO_DENSE = "target=dense: {path} picks the label's entry and has no probability-target form (dense: {dense})"
TORCH_WEIGHTED_SMOOTHING = (
    "F.cross_entropy with weight= and label_smoothing= weights the smoothing term by every class's weight, "
    "e sum_j w_j (lse - x_j) / C, not by the label's weight: a different loss"
)
NUMPY_NO_GRADIENT = "NumPy's backward passes are written by hand for the built-in paths; a custom NumPy path has none"
NUMPY_GRADIENT = "by hand: the reverse sweep of the composition around the path's own backward pass"


def framework_module(framework: str):
    """`harness.paths.<framework>_options` (imports the framework)."""
    return importlib.import_module(f"harness.paths.{framework}_options")


def check_supported(framework: str, path: str, options: CellOptions) -> None:
    """Raise Unsupported with the reason where `framework`'s `path` cannot run `options`."""
    if options.target == "dense" and path not in DENSE_PATHS:
        raise Unsupported(NO_DENSE.format(path=path, dense=", ".join(DENSE_PATHS)))
    if framework == "torch" and path == "fused" and options.class_weights and options.label_smoothing:
        raise Unsupported(TORCH_WEIGHTED_SMOOTHING)


def own_options(fn) -> tuple[str, ...]:
    """The options a custom path implements itself: those it takes as keyword arguments
    (e.g. `def capped(x, y, softcap)`); the option layer passes them and applies the rest."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return ()
    return tuple(name for name in OPTION_NAMES if name in params)


def option_gradient(backend, fn):
    """The gradient of a composed loss `fn`: its backward pass by hand where it carries one (NumPy's
    `fn.gradient`), else the backend's autodiff of it; None where neither exists (a custom NumPy path)."""
    by_hand = getattr(fn, "gradient", None)
    if by_hand is None and backend.autodiff_gradient is None:
        return None
    return by_hand or backend.autodiff_gradient(fn)


def option_function(framework: str, path: str, path_fn, arrays: NativeArrays, options: CellOptions):
    """(x, y) -> the loss with `options`, for the backend to compile and differentiate. Give it
    y = arrays.packed() (the labels with the ignored rows marked, weights, targets), so a compiler
    takes them as arguments; any other y is ignored in favour of `arrays` themselves. Where the
    framework's module writes the backward pass by hand (NumPy's built-in paths), the loss carries
    it as `.gradient`, (x, y) -> d(sum of the loss)/dx."""
    check_supported(framework, path, options)
    module = framework_module(framework)
    own = own_options(path_fn) if path not in module.BUILTIN_PATHS else ()
    for name in ("label_smoothing", "z_loss", "softcap", "target"):
        if own and name not in own and getattr(options, name) != getattr(CellOptions(), name):
            raise Unsupported(f"custom path {path} implements {', '.join(own)} itself; it does not take {name}")

    def given(y):
        return NativeArrays(**y, any_ignored=arrays.any_ignored) if isinstance(y, dict) else arrays

    def loss(x, y):
        return module.loss_with_options(path, path_fn, x, y, given(y), options, own=own)

    if hasattr(module, "gradient_with_options") and path in module.BUILTIN_PATHS:  # NumPy: by hand
        loss.gradient = lambda x, y: module.gradient_with_options(path, path_fn, x, given(y), options)
    return loss


# --- the composition by hand, written once over a framework's OPS --------------------------------


def softcapped(ops: SimpleNamespace, x, options: CellOptions):
    """c tanh(x / c), or x without a soft-cap."""
    if options.softcap is None:
        return x
    c = ops.scalar(x, options.softcap)
    return c * ops.tanh(x / c)


def composed_rows(ops: SimpleNamespace, path: str, path_fn, x, arrays: NativeArrays, options: CellOptions, own=()):
    """Per-row losses (before weights and the mask) of a path composed by hand with the options."""
    if own:
        mine = {name: getattr(options, name) for name in own}
        return path_fn(x, arrays.safe_labels, **mine)
    xc = softcapped(ops, x, options)
    if options.target == "dense":
        return dense_rows(ops, path, xc, arrays.targets) + z_term(ops, xc, ops.logsumexp(xc), options)
    base = path_fn(xc, arrays.safe_labels)
    picked = ops.pick(xc, arrays.safe_labels)
    rows = base
    if options.label_smoothing:
        rows = rows + ops.scalar(x, options.label_smoothing) * (picked - ops.mean_rows(xc))
    return rows + z_term(ops, xc, base + picked, options)


def dense_rows(ops: SimpleNamespace, path: str, x, targets):
    """sum(-log p * t), as the seed article writes it, with the path's own log-probabilities: softmax
    then log (NaN as 0 * inf once another class's probability underflows: `OTHER_CLASS_UNDERFLOW`),
    or the log-softmax. Written -sum(log(softmax(x)) * t) instead, TensorFlow's graph optimiser
    (tf.function) rewrites log(softmax) into log_softmax and the NaN disappears; this form keeps it."""
    log_p = ops.log(ops.softmax(x)) if path == "softmax_log" else ops.log_softmax(x)
    return ops.sum_rows(-log_p * targets)


def z_term(ops: SimpleNamespace, x, lse, options: CellOptions):
    """z lse^2, or 0 without a z-loss."""
    if not options.z_loss:
        return ops.scalar(x, 0.0)
    return ops.scalar(x, options.z_loss) * lse * lse


def reduced(ops: SimpleNamespace, rows, arrays: NativeArrays, options: CellOptions, weighted: bool = False):
    """Weights, mask and reduction by hand: rows (N,) -> per row, sum or weighted mean.

    `weighted`: the rows already carry w[y] (a library applied the weights)."""
    w = None if arrays.weights is None else ops.take(arrays.weights, arrays.safe_labels)
    if w is not None and not weighted:
        rows = rows * w
    zero = ops.scalar(rows, 0.0)
    rows = ops.where(arrays.kept, rows, zero) if arrays.any_ignored else rows
    if options.reduction == "none":
        return rows
    total = ops.total(rows)
    if options.reduction == "sum":
        return total
    if w is None:
        count = ops.total(ops.cast_like(arrays.kept, rows))
    else:
        count = ops.total(ops.where(arrays.kept, w, zero) if arrays.any_ignored else w)
    return total / count


def compose(ops: SimpleNamespace, path: str, path_fn, x, arrays: NativeArrays, options: CellOptions, own=()):
    """The whole loss of a path composed by hand."""
    return reduced(ops, composed_rows(ops, path, path_fn, x, arrays, options, own), arrays, options)


def option_table(frameworks) -> str:
    """Markdown: how each framework's paths take the options (for the README; a test keeps it current)."""
    header = "| framework | `fused` | other paths | gradient |\n|---|---|---|---|"
    rows = [
        f"| {f} | {_LIBRARY[f]} | composed by hand around the per-row loss | "
        + (NUMPY_GRADIENT if f == "numpy" else "autodiff of the composed loss")
        + " |"
        for f in frameworks
    ]
    return "\n".join([header, *rows])
