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
import itertools

import numpy as np

from harness import backends, losses, mechanisms
from harness.dtypes import DTYPES, FloatFormat, round_to
from harness.sweep import metrics
from harness.sweep.calls import call, measure_input
from harness.sweep.cells import gradient_by, record_failed

ARRAY_OPTIONS = ("pos_weight",)  # options handed to a path as an array of the cell's dtype


def setting_grid(entry, settings: dict, family: str) -> list[dict]:
    """Every combination of the loss's settings that a family's cells vary over; the rest None."""
    varied = entry.load("inputs").family_settings(family)
    lists = [settings[name] if name in varied else (None,) for name, _ in entry.settings]
    return [dict(zip(entry.setting_names, combo, strict=True)) for combo in itertools.product(*lists)]


def sizes(sweep) -> list[tuple[int, int]]:
    return list(itertools.product(sweep.n_rows, sweep.n_classes))


def n_inputs(sweep) -> int:
    """How many inputs (family, size, settings, scale) the grid has."""
    entry = losses.entry(sweep.loss)
    per_family = [len(setting_grid(entry, sweep.loss_settings, family)) for family in sweep.families]
    return sum(per_family) * len(sizes(sweep)) * len(sweep.scales)


def n_units(sweep) -> int:
    return n_inputs(sweep) * len(sweep.dtypes)


def n_cells(sweep) -> int:
    return n_units(sweep) * (len(sweep.frameworks) * len(sweep.paths) + len(sweep.custom_paths))


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
            return ""
        return self.module.unsupported_reason(framework, path, options)

    def callables(self, framework: str, path: str, fmt: FloatFormat, options: dict, device: str):
        """(loss, gradient or None) of one path in one dtype and options, compiled by its backend."""
        key = (framework, path, fmt.name, tuple(sorted(options.items())), device)
        if key not in self.compiled:
            backend = backends.load(framework)
            bound = {name: _option(backend, name, value, fmt, device) for name, value in options.items()}
            if (framework, path) in self.customs:
                loss, gradient = self.customs[framework, path], None
            else:
                module = self.module.implementations_module(framework)
                loss, gradient = module.PATHS[path], module.GRADIENTS.get(path)
            self.compiled[key] = (
                backend.compile(functools.partial(loss, **bound)),
                None if gradient is None else backend.compile_gradient(functools.partial(gradient, **bound)),
            )
        return self.compiled[key]


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

    def __init__(self, sweep, paths: Paths, settings: dict, fmt: FloatFormat):
        self.entry, self.paths, self.fmt, self.device = paths.entry, paths, fmt, sweep.device
        self.settings, self.options = settings, path_options(paths.entry, settings)
        self.gradient = sweep.gradient
        self.cells = {(f, p): None for f in sweep.frameworks for p in sweep.paths}
        self.cells |= {fp: None for fp in paths.customs}

    def todo(self, cell: dict, done) -> dict:
        from harness.sweep.journal import cell_key

        return {fp: None for fp in self.cells if cell_key(cell | {"framework": fp[0], "path": fp[1]}) not in done}

    def prepare(self, arrays: dict, shared: dict) -> tuple[dict, bool]:
        self.rounded = {name: round_to(array, self.fmt.name) for name, array in arrays.items()}
        self.held = {name: array.astype(np.float64) for name, array in self.rounded.items()}
        finite = all(np.isfinite(array).all() for array in self.held.values())
        return {}, bool(finite)

    def input_inf(self, cell: dict, todo, record) -> None:
        status = {"status": metrics.INPUT_INF, "message": f"inputs overflow {self.fmt.name}"}
        for framework, path in todo:
            where = cell | {"framework": framework, "device": backends.row_device(framework, self.device)}
            where |= named(self.entry, path) | {"gradient_by": gradient_by(framework)}
            record({"cell": where | status} | ({"grad": status} if self.gradient else {}))

    def quantities(self) -> dict:
        """The exact loss (and gradient) of the rounded input, and theory's quantities."""
        args = [self.held[name] for name in self.entry.arrays]
        exact = self.entry.load("exact")(*args, self.fmt.precision, **self.options)
        self.exact = (exact.hi.ravel(), exact.lo.ravel(), np.broadcast_to(exact.exponent, exact.hi.shape).ravel())
        self.exact_gradient = self.entry.load("exact_gradient")(*args, **self.options) if self.gradient else None
        values = np.ldexp(self.exact[0], self.exact[2])
        return self.entry.load("quantities")(self.held, values, self.settings)

    def transfer(self, backend, on):
        return [backend.transfer(self.rounded[name], on) for name in self.entry.arrays]

    def failed(self, record, cell: dict, place, cells: dict, exc: BaseException) -> None:
        names = [path for _, path in cells]
        record_failed(record, cell | place.facts, names, exc, self.gradient, lambda path: named(self.entry, path))

    def measure(self, place, native, cells: dict, cell: dict):
        for _, path in cells:
            record = self.measure_path(place, native, path)
            record["cell"] = cell | place.facts | named(self.entry, path) | record["cell"]
            yield record

    def measure_path(self, place, native, path: str) -> dict:
        fmt, hi, lo, exponent = self.fmt, *self.exact
        unsupported = self.paths.unsupported(place.framework, path, self.options)
        loss_fn = gradient_fn = None
        if not unsupported:
            loss_fn, gradient_fn = self.paths.callables(place.framework, path, fmt, self.options, place.device)
        loss = call(loss_fn, native, place.backend, fmt.name, unsupported)
        if loss.error is not None:
            record = {"cell": loss.failure}
        else:
            values = loss.values.ravel()
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
        hi, lo, exponent = self.exact_gradient
        shape = self.held[self.entry.differentiated].shape
        computed = gradient.values.reshape(shape)
        return metrics.gradient_metrics(computed, hi, lo, self.fmt, exponent) | {"message": gradient.note}


def measure_units(sweep, record, done=frozenset(), units=None, describe=None, customs=None) -> None:
    """Measure the grid's units of work that `units` yields (increasing; all when None): unit
    i * len(dtypes) + j is the i-th input (family, size, settings, scale) rounded to the j-th dtype."""
    entry = losses.entry(sweep.loss)
    make = entry.load("inputs")
    paths = Paths(sweep.loss, customs or {})
    units = iter(units) if units is not None else itertools.count()
    wanted, per_input, index = next(units, None), len(sweep.dtypes), -1
    for family in sweep.families:
        for n_rows, n_classes in sizes(sweep):
            base = make.base(n_rows, n_classes, sweep.seed)
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
                        variant = NamedInput(sweep, paths, settings, DTYPES[dtype])
                        measure_input(arrays, dtype, key, record, done, variant)
                        wanted = next(units, None)
                        if wanted is None:
                            return


def _words(settings: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in settings.items() if v is not None)
