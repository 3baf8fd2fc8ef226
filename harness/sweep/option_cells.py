"""Cells with loss options (or the `masked` family): the loss as trained against the exact references
of harness.exact.options.

A cell whose options are all at their defaults, on a family without -inf logits, is measured by the
runner's plain route, bit for bit as before. Every other cell comes here: the option inputs are made
once per input (harness.sweep.option_inputs), each framework runs its path through its option layer
(harness.paths.<framework>_options), and the result (per kept row, or one reduced value) is measured
like any cell; metrics of a reduced cell are those of its single value. Where the exact value is
undefined (a mean over no kept rows) the status is `undefined` and the message records what the
framework returned.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from harness import paths
from harness.dtypes import FloatFormat
from harness.exact.dd import ExactValue
from harness.exact.options import LossOptions, exact_option_gradient, exact_reduced, exact_row_losses, row_weights
from harness.exact.reference import by_row_blocks
from harness.mechanisms import OTHER_CLASS_UNDERFLOW, joined
from harness.paths import options as opt
from harness.sweep import metrics
from harness.sweep.calls import Call, call
from harness.sweep.cells import GridInput, named, per_row, target_quantities
from harness.sweep.option_inputs import OptionInputs, native_arrays, option_inputs


def raw_losses(frameworks, path_names, customs: dict, chunk_size=None, block_size=None) -> dict:
    """(framework, path) -> the uncompiled per-row loss (sizes bound), user-supplied paths included;
    the option layer composes around these and the backend compiles the whole."""
    found = {}
    for framework in frameworks:
        for path in path_names:
            module_paths = getattr(paths.implementations_module(framework), "PATHS", {})
            if path in module_paths:
                found[(framework, path)] = paths.bind_sizes(module_paths[path], chunk_size, block_size)
    return found | dict(customs)


def needs_options(options: opt.CellOptions | None, family: str) -> bool:
    """Whether a cell takes this route: options off their defaults, or a family with -inf logits."""
    return options is not None and (not options.is_default or family == "masked")


def exact_loss_options(inputs: OptionInputs, options: opt.CellOptions) -> LossOptions:
    """A cell's options as the exact references take them, with its drawn weights, targets and mask."""
    return LossOptions(
        label_smoothing=options.label_smoothing,
        z_loss=options.z_loss,
        softcap=options.softcap,
        class_weights=inputs.weights,
        target=options.target,
        ignored=~inputs.kept,
    )


def _row_blocks(n_rows: int, n_classes: int):
    """Slices of rows of about 2**20 entries: float64 copies of a 10**7-row input stay small."""
    step = max(1, _BLOCK_ENTRIES // n_classes)
    return [slice(i, i + step) for i in range(0, n_rows, step)]


_BLOCK_ENTRIES = 2**20


def _exact_rows(rounded, inputs: OptionInputs, options: opt.CellOptions, precision: int) -> ExactValue:
    """The exact per-row losses, a block of rows at a time (each block held in float64 only while used)."""
    loss_options = exact_loss_options(inputs, options)

    def block(x, rows):  # rows: the block's row numbers, in place of its labels
        ignored = dataclasses.replace(loss_options, ignored=loss_options.ignored[rows])
        return exact_row_losses(x.astype(np.float64), inputs.safe_labels[rows], ignored, precision)

    return by_row_blocks(block, rounded, np.arange(len(rounded)))


def _exact(rounded, labels, options: opt.CellOptions, seed: int, gradient: bool, precision: int = 53, shared=None):
    """The option inputs and the exact loss (per kept row or reduced; None if undefined) and gradient.
    `shared` (a dict per input and dtype) keeps the per-row losses for the next reduction."""
    shared = {} if shared is None else shared
    key = ("rows", dataclasses.replace(options, reduction="none"))
    if key not in shared:
        inputs = option_inputs(labels, rounded.shape[1], options, seed)
        shared[key] = inputs, _exact_rows(rounded, inputs, options, precision)
    inputs, rows = shared[key]
    loss_options = exact_loss_options(inputs, options)
    value = exact_reduced(rows, row_weights(inputs.safe_labels, loss_options), inputs.kept, options.reduction)
    if value is not None and options.reduction == "none":
        value = type(value)(*(np.broadcast_to(part, inputs.kept.shape)[inputs.kept] for part in value))
    grad = None
    if gradient:
        held = rounded.astype(np.float64)
        grad = exact_option_gradient(held, inputs.safe_labels, loss_options, options.reduction, None, precision)
    return inputs, value, grad


def _input_facts(rounded, logits) -> dict:
    """max_logit and max_lse of the logits given (rounded, or soft-capped: seen_logits), in float64, a block of
    rows at a time; and whether every entry is finite or -inf where the input masks a class."""
    max_logit, max_lse, valid = -np.inf, -np.inf, True
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for rows in _row_blocks(*rounded.shape):
            held = rounded[rows].astype(np.float64)
            largest = held.max()  # NaN if any entry is
            if np.isfinite(largest) and np.isfinite(held.min()):  # every entry finite: the usual block
                max_logit = max(max_logit, float(largest))
                reaching = _rows_reaching(held, max(max_lse, float(largest)))
                max_lse = max(max_lse, float(_row_lse(reaching).max(initial=-np.inf)))
                continue
            finite = np.isfinite(held)
            masked = np.zeros_like(finite) if logits is None else np.isneginf(logits[rows])
            valid = valid and (bool(finite.all()) or bool((finite | masked).all()))
            if finite.any():
                max_logit = max(max_logit, float(held.max(where=finite, initial=-np.inf)))
            max_lse = max(max_lse, float(_row_lse(held).max()))
    return {"max_logit": max_logit if np.isfinite(max_logit) else float("nan"), "max_lse": max_lse, "valid": valid}


def _row_lse(held: np.ndarray) -> np.ndarray:
    """Each row's log-sum-exp in float64 (-inf for a row of -inf)."""
    top = held.max(axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)  # a row of -inf: its lse is -inf below
    return top[:, 0] + np.log(np.exp(held - top).sum(axis=1))


def _rows_reaching(held: np.ndarray, floor: float) -> np.ndarray:
    """The rows of finite `held` whose lse may reach `floor` (a lower bound on the largest lse).

    A row's lse is at most its largest logit m plus ln C, so a row whose every logit lies more than
    ln C (and a margin far above float64's rounding of `_row_lse`) below the floor cannot hold the
    maximum. On 10**6 rows of 16 N(0, 1) logits that leaves one row in eleven (token_sweep's
    inputs), each computed by the same formula as before: the same largest lse for about a tenth
    of the exponentials. Where C is large (256 x 32000 at scale 3) every row may reach it."""
    n_classes = held.shape[1]
    threshold = floor - np.log(n_classes) * (1 + 1e-9) - 1e-9 * (abs(floor) + 1)
    rows = np.unique(np.flatnonzero(held.ravel() >= threshold) // n_classes)
    return held[rows]


def _max_exact_loss(exact) -> float:
    """The largest of the cell's exact values (NaN where undefined): what theory's thresholds read."""
    with np.errstate(over="ignore"):
        loss = np.ldexp(exact.hi, exact.exponent) if exact is not None else np.array([])
    return float(loss.max()) if loss.size else float("nan")


@dataclass(frozen=True)
class Run:
    """What every path of one framework shares on one input, dtype and set of options."""

    framework: str
    backend: object
    native: tuple
    arrays: opt.NativeArrays
    inputs: OptionInputs
    options: opt.CellOptions
    fmt: FloatFormat
    exact: ExactValue | None  # per kept row, or one value; None where undefined
    exact_grad: ExactValue | None

    @property
    def arguments(self) -> tuple:
        """(x, the option arrays): what the composed loss is called with (see opt.option_function)."""
        return self.native[0], self.arrays.packed()


def _loss_record(run: Run, loss: Call, rows: bool) -> dict:
    """The loss metrics of one cell (and its per-row errors for reduction none, if asked)."""
    if loss.error is not None:
        return {"cell": loss.failure}
    computed, note = np.atleast_1d(loss.values), loss.note
    if run.exact is None:
        return {"cell": metrics.undefined(computed)}
    if computed.shape != np.shape(run.exact.hi):
        computed = computed[run.inputs.kept]  # reduction none: the kept rows
    hi, lo, exponent = run.exact
    record = {"cell": metrics.cell_metrics(computed, hi, lo, run.fmt, None, exponent) | {"message": note}}
    if rows and run.options.reduction == "none":
        kept = run.inputs.kept
        record["rows"] = per_row(run.inputs.labels[kept], computed, hi, lo, run.fmt, exponent)
        record["rows"]["row"] = np.flatnonzero(kept).tolist()
    return record


def _gradient_record(run: Run, fn) -> dict:
    """The gradient metrics: autodiff of the composed loss, or its backward pass by hand (NumPy's `fn.gradient`)."""
    source = opt.option_gradient(run.backend, fn)
    if source is None:
        return {"status": metrics.UNSUPPORTED, "message": f"NotImplementedError: {opt.NUMPY_NO_GRADIENT}"}
    gradient = call(_compiled(run.backend.compile_gradient, source), run.arguments, run.backend, run.fmt.name)
    if gradient.error is not None:
        return gradient.failure
    if run.exact_grad is None:
        return metrics.undefined(gradient.values)
    hi, lo, exponent = run.exact_grad
    return metrics.gradient_metrics(gradient.values, hi, lo, run.fmt, exponent) | {"message": gradient.note}


def _compiled(compile, fn):
    """fn compiled when first called, inside the call: a compiler that raises is the call's failure."""
    return lambda *args: compile(fn)(*args)


def measure_path(run: Run, path: str, impl, path_fn, rows: bool = False, gradient: bool = False) -> dict:
    """One cell's journal record: loss metrics, per-row errors and gradient metrics as asked."""
    try:
        if impl.unsupported:
            raise paths.Unsupported(impl.unsupported)
        fn = opt.option_function(run.framework, path, path_fn, run.arrays, run.options)
    except Exception as exc:
        failed = metrics.failure(exc)
        return {"cell": failed} | ({"grad": failed} if gradient else {})
    loss = call(_compiled(run.backend.compile, fn), run.arguments, run.backend, run.fmt.name)
    record = _loss_record(run, loss, rows)
    if gradient:
        record["grad"] = _gradient_record(run, fn)
    return record


def seen_logits(rounded, softcap):
    """The logits the loss exponentiates: the rounded logits, or under a soft-cap c their c tanh(x / c)
    in float64 (never past c, whatever the input: an exp there cannot overflow at MLX's 88.0)."""
    if softcap is None:
        return rounded
    with np.errstate(invalid="ignore"):
        return softcap * np.tanh(rounded.astype(np.float64) / softcap)


def _quantities(shared: dict, labels, options, logits) -> dict:
    """Theory's quantities of one input, dtype and soft-cap (harness.mechanisms): max_logit, max_lse,
    the target quantities and, for dense targets, max_class_loss, each of the logits the loss sees
    (seen_logits), computed once and kept in `shared` for the other sets of options."""
    key = options.softcap
    if ("quantities", key) not in shared:
        seen = seen_logits(shared["rounded"], key)
        facts = shared["facts"] if key is None else _input_facts(seen, logits)
        found = {"max_logit": facts["max_logit"], "max_lse": facts["max_lse"]}
        shared[("quantities", key)] = found | target_quantities_by_block(seen, labels)
    found = dict(shared[("quantities", key)])
    if options.target == "dense":  # other-class underflow's quantities
        if ("dense", key) not in shared:
            shared[("dense", key)] = class_quantities(seen_logits(shared["rounded"], key))
        found |= shared[("dense", key)]
    return found


def class_quantities(rounded) -> dict:
    """Other-class underflow's quantities over every row and finite class j of the logits, in float64
    (a block of rows at a time; a masked -inf class has probability exactly 0 and is left out):
    `max_class_loss`, the largest lse(x) - x_j, the loss class j would have as the target, past which
    its probability as a quotient underflows; `max_class_gap`, the largest max_k x_k - x_j, the
    argument a shifted exp(x_j - max) takes, negated, past which the exp gives 0 (within ln C below)."""
    largest = {"max_class_loss": -np.inf, "max_class_gap": -np.inf}
    with np.errstate(invalid="ignore", over="ignore"):
        for rows in _row_blocks(*rounded.shape):
            held = rounded[rows].astype(np.float64)
            least = np.where(np.isfinite(held), held, np.inf).min(axis=1)
            top = np.where(np.isfinite(held), held, -np.inf).max(axis=1)
            for name, upper in (("max_class_loss", _row_lse(held)), ("max_class_gap", top)):
                gaps = upper - least
                largest[name] = max(largest[name], float(np.max(gaps, where=np.isfinite(gaps), initial=-np.inf)))
    return {name: value if np.isfinite(value) else float("nan") for name, value in largest.items()}


def target_quantities_by_block(rounded, labels) -> dict:
    """cells.target_quantities of the logits given (rounded, or soft-capped: seen_logits), a block of rows at a time;
    in a block of finite logits the largest gap comes from `_largest_gap` (the same values, fewer rows)."""
    best = {"max_target_gap": -np.inf, "max_neg_target_logit": -np.inf}
    for rows in _row_blocks(*rounded.shape):
        held, y = rounded[rows].astype(np.float64), labels[rows]
        largest = held.max()  # NaN if any entry is
        if np.isfinite(largest) and np.isfinite(held.min()):  # every entry finite: the usual block
            target = held[np.arange(len(y)), y]
            found = {"max_target_gap": _largest_gap(held, target, largest), "max_neg_target_logit": -target.min()}
        else:
            found = target_quantities(held, y)
        best = {q: max(best[q], found[q]) if np.isfinite(found[q]) else best[q] for q in best}
    return {q: float(v) if np.isfinite(v) else float("nan") for q, v in best.items()}


def _largest_gap(held: np.ndarray, target: np.ndarray, largest: float) -> float:
    """max over rows of (the row's largest logit - its target), of finite `held`. A row's gap is at most
    `largest` - its target, so once the lowest target's row gives a gap g, only rows whose target lies
    at least g below `largest` can exceed it: the row maxima of those alone (on 10**6 rows of 16 N(0, 1)
    logits about one row in six)."""
    lowest = int(np.argmin(target))
    floor = held[lowest].max() - target[lowest]
    # the lowest row itself, whatever rounding does to `largest - floor` (0.1 - 0.30000000000000004 < -0.2)
    rows = np.union1d(np.flatnonzero(target <= largest - floor), [lowest])
    return float((held[rows].max(axis=1) - target[rows]).max())


def _dense_mechanism(path: str, options) -> dict:
    """The article's dense form adds a failure mechanism of its own (harness.paths.options)."""
    if options.target != "dense" or path != "softmax_log":
        return {}
    return {"mechanisms": joined(filter(None, [named(path)["mechanisms"], OTHER_CLASS_UNDERFLOW]))}


class OptionInput(GridInput):
    """A cell with loss options (or -inf logits): the option inputs and exact references of
    harness.exact.options, each path composed with its framework's option layer around its
    uncompiled loss (`losses`, raw_losses). harness.sweep.calls.measure_input walks it; `shared`
    keeps one dtype's input facts and exact per-row losses for the next set of options (a mean and
    a sum share their rows)."""

    def __init__(self, implementations, labels, fmt, device, options: opt.CellOptions, losses: dict, seed, **want):
        super().__init__(implementations, fmt, device, **want)
        self.labels, self.options, self.losses, self.seed = labels, options, losses, seed

    def prepare_rounded(self, rounded, logits, shared: dict) -> tuple[dict, bool]:
        """Whether every entry is finite or -inf where the input masks a class. `logits` is None
        where the runner rounded ahead: none masked there."""
        if "facts" not in shared:
            shared["facts"] = _input_facts(rounded, logits)
        self.rounded, self.logits, self.shared = rounded, logits, shared
        facts = shared["facts"]
        return {"max_logit": facts["max_logit"]}, facts["valid"]

    def quantities(self) -> dict:
        """The option inputs and exact values (kept for the paths) and theory's quantities of the input."""
        found = _exact(
            self.rounded, self.labels, self.options, self.seed, self.gradient, self.fmt.precision, self.shared
        )
        self.inputs, self.exact, self.exact_grad = found
        quantities = _quantities(self.shared, self.labels, self.options, self.logits)
        return {"max_exact_loss": _max_exact_loss(self.exact)} | quantities

    def transfer(self, backend, on):
        arrays = native_arrays(backend, self.inputs, self.options, self.fmt.name, on)
        return backend.to_native(self.rounded, self.labels, on), arrays

    def measurer(self, place, native):
        """measure(path, impl) -> the journal record of one cell of this framework."""
        native, arrays = native
        framework = place.framework
        run = Run(
            framework, place.backend, native, arrays, self.inputs, self.options, self.fmt, self.exact, self.exact_grad
        )

        def measure(path: str, impl) -> dict:
            return measure_path(run, path, impl, self.losses.get((framework, path)), self.rows, self.gradient)

        return measure

    def columns(self, path: str) -> dict:
        return _dense_mechanism(path, self.options)
