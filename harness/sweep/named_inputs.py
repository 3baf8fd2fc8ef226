"""The grid of a loss measured on named arrays (binary cross-entropy's logits and targets, KL's teacher and
student): its entry (harness.losses) says how its inputs are made, which settings it sweeps, its exact
references and its paths; this module walks that grid through the one loop (calls.measure_input).

A unit of work is, as in the cross-entropy grid, one input rounded to one dtype: per family and size one
base draw, per combination of the settings the family varies over (the others are None) and per scale
the float64 arrays, each rounded once per dtype so that every framework and the reference see the same
bits. A setting the paths take as a keyword (`entry.options`: pos_weight, temperature) is passed to the
path and the reference alike, an array one (pos_weight) rounded to the cell's dtype. A finite loss below
zero, a sign the exact value never has, is the status `negative`.
"""

from __future__ import annotations

import functools
import inspect
import itertools

import numpy as np

from harness import backends, losses, mechanisms
from harness.dtypes import DTYPES, FloatFormat, round_to
from harness.exact.dd import ExactValue
from harness.exact.head import divided
from harness.exact.reduction import exact_reduced
from harness.paths.options import CellOptions
from harness.sweep import metrics, named_files, named_options
from harness.sweep.calls import call, measure_input
from harness.sweep.cells import gradient_by, record_failed

PLAIN = CellOptions()  # no ignored rows, no class weights, no reduction
ARRAY_OPTIONS = ("pos_weight",)  # options handed to a path as an array of the cell's dtype


def setting_grid(entry, settings: dict, family: str) -> list[dict]:
    """Every combination of the loss's settings that a family's cells vary over; the rest None."""
    varied = entry.load("inputs").family_settings(family)
    lists = [settings[name] if name in varied else (None,) for name, _ in entry.settings]
    return [dict(zip(entry.setting_names, combo, strict=True)) for combo in itertools.product(*lists)]


def bases(sweep, entry, family: str):
    """(n_rows, n_classes, base) per size of a family: a draw per size, or the given arrays (their shape)."""
    if family in named_files.GIVEN:
        arrays = named_files.given(entry, family, sweep.file, sweep.inline)
        yield (*next(iter(arrays.values())).shape, arrays)
        return
    make = entry.load("inputs")
    for n_rows, n_classes in itertools.product(sweep.n_rows, sweep.n_classes):
        yield n_rows, n_classes, make.base(n_rows, n_classes, sweep.seed)


def n_inputs(sweep) -> int:
    """How many inputs (family, size, settings, scale) the grid has."""
    entry = losses.entry(sweep.loss)
    sizes = {f: 1 if f in named_files.GIVEN else len(sweep.n_rows) * len(sweep.n_classes) for f in sweep.families}
    per_family = [len(setting_grid(entry, sweep.loss_settings, f)) * sizes[f] for f in sweep.families]
    return sum(per_family) * len(sweep.scales)


def n_units(sweep) -> int:
    return n_inputs(sweep) * len(sweep.dtypes)


def n_cells(sweep) -> int:
    per_unit = len(sweep.frameworks) * len(sweep.paths) + len(sweep.custom_paths)
    return n_units(sweep) * per_unit * len(sweep.option_grid)


def path_options(entry, settings: dict) -> dict:
    """The settings a path and the reference take as keywords, where set."""
    return {name: settings[name] for name in entry.options if settings.get(name) is not None}


class Paths:
    """Each (framework, path)'s loss and gradient, compiled once per dtype and options for the run."""

    def __init__(self, loss: str, customs: dict):
        self.entry = losses.entry(loss)
        self.module = self.entry.load("paths")
        self.customs = customs  # (framework, name) -> fn(*arrays), user paths of this loss
        self.compiled: dict = {}

    def unsupported(self, framework: str, path: str, options: dict) -> str:
        if (framework, path) in self.customs:
            defaults = {name: values[0] for name, values in self.entry.settings}
            takes = _keywords(self.customs[framework, path], self.entry.options)
            missing = [n for n in options if n not in takes and options[n] != defaults[n]]
            return f"custom path {path} takes no {missing[0]} keyword" if missing else ""
        return self.module.unsupported_reason(framework, path, options)

    def callables(self, framework, path, fmt: FloatFormat, options: dict, device, reduction="none", count=None):
        """(loss, gradient or None) of one path in one dtype and options, reduced (`mean` or `sum` of its
        losses by the framework's own mean or sum, in the same call), compiled by its backend. With a kept
        `count` (ignored rows or class weights) the losses are composed with weights and a mask handed in
        after the arrays (harness.sweep.named_options)."""
        key = (framework, path, fmt.name, tuple(sorted(options.items())), device, reduction, count)
        if key not in self.compiled:
            backend = backends.load(framework)
            bound = {name: _option(backend, name, value, fmt, device) for name, value in options.items()}
            if (framework, path) in self.customs:  # the options it takes as keywords (checked by unsupported)
                fn = self.customs[framework, path]
                takes = _keywords(fn, self.entry.options)
                loss, gradient = functools.partial(fn, **{n: v for n, v in bound.items() if n in takes}), None
            else:
                module = self.module.implementations_module(framework)
                loss = functools.partial(module.PATHS[path], **bound)
                gradient = module.GRADIENTS.get(path)
                gradient = None if gradient is None else functools.partial(gradient, **bound)
            if count is not None:
                loss, gradient = (
                    named_options.reduced(loss, reduction, backend),
                    self.composed_gradient(backend, loss, gradient, reduction, count),
                )
            elif reduction != "none":
                loss, gradient = (
                    reduced(loss, reduction, backend),
                    self.reduced_gradient(backend, loss, gradient, reduction),
                )
            self.compiled[key] = (
                backend.compile(loss),
                None if gradient is None else backend.compile_gradient(gradient),
            )
        return self.compiled[key]

    def reduced_gradient(self, backend, loss, gradient, reduction: str):
        """The gradient of the reduced loss: the framework's autodiff of it, with respect to the entry's
        differentiated array; NumPy's hand-written backward of the sum, divided by the count for a mean."""
        if gradient is None:
            return None
        if backend.autodiff_gradient is None:
            return functools.partial(_divided_gradient, gradient, reduction, self.entry)
        return self.autodiff(backend, reduced(loss, reduction, backend))

    def composed_gradient(self, backend, loss, gradient, reduction: str, count: int):
        """The gradient of the weighted, masked losses (their sum for `none`): the framework's autodiff of
        the composition; NumPy's hand-written backward times the weights (over the count for a mean)."""
        if gradient is None:
            return None
        if backend.autodiff_gradient is None:
            return named_options.hand_gradient(gradient, reduction, count)
        total = named_options.reduced(loss, "sum" if reduction == "none" else reduction, backend)
        by_arrays = self.autodiff(backend, lambda *arrays: total(*named_options.packed(list(arrays))))
        return lambda first, packed: by_arrays(first, *packed)

    def autodiff(self, backend, total):
        """The framework's gradient of a scalar total(*arrays) with respect to the differentiated array: the
        backends differentiate their first argument, so it goes first and the others follow as one tuple."""
        at = self.entry.arrays.index(self.entry.differentiated)

        def first(x, others):
            args = list(others)
            args.insert(at, x)
            return total(*args)

        by_first = backend.autodiff_gradient(first)

        def in_order(*arrays):
            return by_first(arrays[at], tuple(a for i, a in enumerate(arrays) if i != at))

        return in_order


def _keywords(fn, options) -> set[str]:
    """The keyword arguments a callable takes by name (every option, for one taking **kwargs)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return set()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return set(options) | {p.name for p in parameters}
    return {p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def reduced(loss, reduction: str, backend):
    """loss(*arrays) reduced by the framework's own mean or sum: the array's methods, or the backend's
    `reduce` where its arrays have none (TensorFlow's reduce_mean, reduce_sum)."""

    def reduce(*arrays):
        values = loss(*arrays)
        if hasattr(values, "mean"):
            return values.mean() if reduction == "mean" else values.sum()
        return backend.reduce(values, reduction)

    return reduce


def _divided_gradient(gradient, reduction: str, entry, *arrays):
    """A hand-written backward of the sum, for the sum; divided by the count of losses for the mean."""
    g = gradient(*arrays)
    if reduction == "sum":
        return g
    shape = arrays[entry.arrays.index(entry.differentiated)].shape
    count = int(np.prod(shape)) if entry.per == "element" else shape[0]
    return g / np.asarray(count, dtype=g.dtype)


def _option(backend, name: str, value, fmt: FloatFormat, device: str):
    """An option as a path takes it: a number, or (pos_weight) an array of the cell's dtype."""
    if name in ARRAY_OPTIONS:
        return backend.transfer(round_to(np.asarray(float(value)), fmt.name), device)
    return float(value)


def named(entry, path: str) -> dict:
    """A row's path and the failure mechanisms its entry declares (None for a custom path)."""
    declared = entry.load("paths").ENTRIES_BY_NAME.get(path)
    return {"path": path, "mechanisms": None if declared is None else mechanisms.joined(declared.mechanisms)}


def loss_status(computed: np.ndarray, hi, lo, fmt: FloatFormat, exponent) -> str:
    """metrics.output_status, and `negative` for a finite loss below zero."""
    status = metrics.output_status(computed, hi, lo, fmt, exponent)
    if status in metrics.GOOD and (computed < 0).any():
        return metrics.NEGATIVE
    return status


class NamedInput:
    """One input of a named-array loss rounded to one dtype, for calls.measure_input: cells named
    (framework, path); the exact loss and gradient from the entry; each path called on the same bits."""

    def __init__(self, sweep, paths: Paths, settings: dict, fmt: FloatFormat, options=PLAIN):
        self.entry, self.paths, self.fmt, self.device = paths.entry, paths, fmt, sweep.device
        self.reduction, self.cell_options, self.seed = options.reduction, options, sweep.seed
        self.weights = None  # named_options.Weights where rows are ignored or classes weighted
        self.settings, self.options = settings, path_options(paths.entry, settings)
        self.gradient = sweep.gradient
        self.cells = {(f, p): None for f in sweep.frameworks for p in sweep.paths}
        self.cells |= {fp: None for fp in paths.customs}

    def todo(self, cell: dict, done) -> dict:
        from harness.sweep.journal import cell_key

        return {fp: None for fp in self.cells if cell_key(cell | {"framework": fp[0], "path": fp[1]}) not in done}

    def prepare(self, arrays: dict, shared: dict) -> tuple[dict, bool]:
        """Round the arrays to the dtype, once for every reduction of the input (kept in `shared`)."""
        if shared.get("dtype") != self.fmt.name:
            shared.clear()
            shared["dtype"] = self.fmt.name
            shared["rounded"] = {name: round_to(array, self.fmt.name) for name, array in arrays.items()}
        self.shared, self.rounded = shared, shared["rounded"]
        self.held = {name: array.astype(np.float64) for name, array in self.rounded.items()}
        if named_options.composed(self.cell_options):
            shape = self.held[self.entry.differentiated].shape
            self.weights = named_options.Weights(self.entry, self.cell_options, shape, self.seed)
        finite = all(np.isfinite(array).all() for array in self.held.values())
        return {}, bool(finite)

    def input_inf(self, cell: dict, todo, record) -> None:
        status = {"status": metrics.INPUT_INF, "message": f"inputs overflow {self.fmt.name}"}
        for framework, path in todo:
            where = cell | {"framework": framework, "device": backends.row_device(framework, self.device)}
            where |= named(self.entry, path) | {"gradient_by": gradient_by(framework)}
            record({"cell": where | status} | ({"grad": status} if self.gradient else {}))

    def quantities(self) -> dict:
        """The exact loss (and gradient) of the rounded input under the reduction, and theory's quantities
        (of the unreduced losses); the unreduced exact values are computed once per input and dtype."""
        args = [self.held[name] for name in self.entry.arrays]
        if "exact" not in self.shared:
            exact = self.entry.load("exact")(*args, self.fmt.precision, **self.options)
            self.shared["exact"] = ExactValue(exact.hi.ravel(), exact.lo.ravel(), _exponents(exact))
            self.shared["gradient"] = (
                self.entry.load("exact_gradient")(*args, **self.options) if self.gradient else None
            )
        exact, gradient = self.shared["exact"], self.shared["gradient"]
        values = np.ldexp(exact.hi, exact.exponent)
        found = self.entry.load("quantities")(self.held, values, self.settings)
        if self.weights is not None:
            exact = self.weights.exact(exact, self.reduction)
            gradient = None if gradient is None else self.weights.exact_gradient(gradient, self.reduction)
        elif self.reduction != "none":
            exact = exact_reduced(exact, None, np.ones(len(exact.hi), bool), self.reduction)
            count = len(values) if self.entry.per == "element" else self.held[self.entry.differentiated].shape[0]
            gradient = divided(gradient, count) if gradient is not None and self.reduction == "mean" else gradient
        self.exact = None if exact is None else (exact.hi, exact.lo, _exponents(exact))
        self.exact_gradient = gradient
        return found

    def transfer(self, backend, on):
        arrays = [self.rounded[name] for name in self.entry.arrays]
        if self.weights is None:
            return [backend.transfer(array, on) for array in arrays]
        arrays += self.weights.rounded(self.fmt.name)
        return named_options.packed([backend.transfer(array, on) for array in arrays])

    def failed(self, record, cell: dict, place, cells: dict, exc: BaseException) -> None:
        names = [path for _, path in cells]
        record_failed(record, cell | place.facts, names, exc, self.gradient, lambda path: named(self.entry, path))

    def measure(self, place, native, cells: dict, cell: dict):
        for _, path in cells:
            record = self.measure_path(place, native, path)
            record["cell"] = cell | place.facts | named(self.entry, path) | record["cell"]
            yield record

    def measure_path(self, place, native, path: str) -> dict:
        fmt = self.fmt
        unsupported = self.paths.unsupported(place.framework, path, self.options)
        loss_fn = gradient_fn = None
        if not unsupported:
            count = None if self.weights is None else self.weights.count
            on = (place.framework, path, fmt, self.options, place.device, self.reduction, count)
            loss_fn, gradient_fn = self.paths.callables(*on)
        loss = call(loss_fn, native, place.backend, fmt.name, unsupported)
        if loss.error is not None:
            record = {"cell": loss.failure}
        elif self.exact is None:  # a mean over no kept rows
            record = {"cell": metrics.undefined(loss.values)}
        else:
            hi, lo, exponent = self.exact
            values = np.atleast_1d(loss.values).ravel()
            cell = metrics.cell_metrics(values, hi, lo, fmt, None, exponent)
            cell["status"] = loss_status(values, hi, lo, fmt, exponent)
            record = {"cell": cell | {"message": loss.note}}
        if self.exact_gradient is not None:
            record["grad"] = self.measure_gradient(place, native, gradient_fn, unsupported)
        return record

    def measure_gradient(self, place, native, gradient_fn, unsupported: str) -> dict:
        if gradient_fn is None and not unsupported:
            return {"status": metrics.UNSUPPORTED, "message": "no gradient for this path"}
        gradient = call(gradient_fn, native, place.backend, self.fmt.name, unsupported)
        if gradient.error is not None:
            return gradient.failure
        if self.exact is None:  # the gradient of a mean over no kept rows
            return metrics.undefined(gradient.values)
        hi, lo, exponent = self.exact_gradient
        shape = self.held[self.entry.differentiated].shape
        computed = gradient.values.reshape(shape)
        return metrics.gradient_metrics(computed, hi, lo, self.fmt, exponent) | {"message": gradient.note}


def option_columns(entry, options: CellOptions) -> dict:
    """A cell's loss options as columns: reduction, and the ones the loss takes (its entry's `loss_options`)."""
    return {name: getattr(options, name) for name in ("reduction", *entry.loss_options)}


def measure_units(sweep, record, done=frozenset(), units=None, describe=None, customs=None) -> None:
    """Measure the grid's units of work that `units` yields (increasing; all when None): unit
    i * len(dtypes) + j is the i-th input (family, size, settings, scale) rounded to the j-th dtype."""
    entry = losses.entry(sweep.loss)
    make = entry.load("inputs")
    paths = Paths(sweep.loss, customs or {})
    units = iter(units) if units is not None else itertools.count()
    wanted, per_input, index = next(units, None), len(sweep.dtypes), -1
    for family in sweep.families:
        for n_rows, n_classes, base in bases(sweep, entry, family):
            for settings in setting_grid(entry, sweep.loss_settings, family):
                for scale in sweep.scales:
                    index += 1
                    if wanted is None:
                        return
                    if wanted >= (index + 1) * per_input:
                        continue
                    arrays = make.arrays(family, base, scale, settings)
                    key = {"loss": sweep.loss, "family": family, "scale": scale, "n_rows": n_rows}
                    key |= {"n_classes": n_classes, "device": sweep.device} | settings
                    for j, dtype in enumerate(sweep.dtypes):
                        if wanted != index * per_input + j:
                            continue
                        if describe is not None:
                            describe(f"{family} {_words(settings)} scale={scale:.3g} {dtype}")
                        shared: dict = {}  # the rounding and the exact losses, for every reduction
                        for options in sweep.option_grid:
                            variant = NamedInput(sweep, paths, settings, DTYPES[dtype], options)
                            at = key | option_columns(entry, options)
                            measure_input(arrays, dtype, at, record, done, variant, shared)
                        wanted = next(units, None)
                        if wanted is None:
                            return


def _exponents(value: ExactValue) -> np.ndarray:
    return np.broadcast_to(value.exponent, value.hi.shape).ravel()


def _words(settings: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in settings.items() if v is not None)
