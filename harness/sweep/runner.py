"""The runner: walks the grid and measures each cell, one journal record per cell.

It is the only place that loops over the accuracy grid. Each input is made once per (family,
size, scale), rounded once per dtype, and its exact reference is computed once, before any
framework sees it. Writing the run's results is harness.pipeline's job (this layer never
imports outputs).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from harness import backends, losses
from harness.dtypes import DTYPES, FloatFormat, round_to
from harness.exact.dd import ExactValue
from harness.paths import build
from harness.paths import custom as custom_paths
from harness.sweep import head_runner, inputs, metrics, named_inputs, option_cells, option_inputs
from harness.sweep.calls import call, measure_input
from harness.sweep.cells import GridInput, per_row
from harness.sweep.config import SweepConfig, given_draw

log = logging.getLogger(__name__)


def name_order(loss: str = losses.DEFAULT) -> dict:
    """The order of a loss's table rows: frameworks, then its built-in paths (harness.losses.path_names)."""
    return {"framework": list(backends.FRAMEWORKS), "path": list(losses.path_names(loss))}


NAME_ORDER = name_order()  # the default loss's


@dataclass(frozen=True)
class Exact:
    """The exact values of one input, computed once: loss (hi + lo) 2**exponent, its error bound, the gradient."""

    hi: np.ndarray
    lo: np.ndarray
    bound: np.ndarray | None  # None where the loss entry declares no error bound
    gradient: ExactValue | None
    exponent: np.ndarray | int = 0  # nonzero only for losses below 2**-960 (see harness.exact.dd)


def exact_values(held: np.ndarray, labels: np.ndarray, fmt: FloatFormat, gradient: bool, loss=losses.DEFAULT) -> Exact:
    """The loss entry's exact references (harness.losses) on one rounded input, and its error bound
    (None where the entry declares none: bound_ulp is NaN then)."""
    entry = losses.entry(loss)
    value = entry.load("exact")(held, labels, fmt.precision)
    bound = entry.load("error_bound")(held, labels, value.to_float64(), fmt) if entry.error_bound_at else None
    exact_gradient = entry.load("exact_gradient")(held, labels) if gradient else None
    return Exact(value.hi, value.lo, bound, exact_gradient, value.exponent)


def quantities_of(loss: str, held: np.ndarray, labels: np.ndarray, exact: Exact) -> dict:
    """Theory's quantities of one rounded input, as the loss entry computes them from its exact
    per-row losses (cross-entropy: cells.input_quantities); max_exact_loss where it declares none."""
    entry = losses.entry(loss)
    values = np.ldexp(exact.hi, exact.exponent)
    if not entry.quantities_at:
        return {"max_exact_loss": float(values.max())}
    return entry.load("quantities")(held, labels, values)


def measure_gradient(impl: build.Implementation, native, backend, exact: Exact, fmt: FloatFormat) -> dict:
    if impl.gradient is None and not impl.unsupported:
        return {"status": metrics.UNSUPPORTED, "message": impl.no_gradient}
    gradient = call(impl.gradient, native, backend, fmt.name, impl.unsupported)
    if gradient.error is not None:
        return gradient.failure
    hi, lo, exponent = exact.gradient
    return metrics.gradient_metrics(gradient.values, hi, lo, fmt, exponent) | {"message": gradient.note}


def measure_cell(
    impl: build.Implementation, native, backend, exact: Exact, labels, fmt: FloatFormat, rows: bool
) -> dict:
    """The journal record of one cell: its loss metrics, and per-row errors and gradient metrics if asked."""
    loss = call(impl.loss, native, backend, fmt.name, impl.unsupported)
    if loss.error is not None:
        record = {"cell": loss.failure}
    else:
        cell = metrics.cell_metrics(loss.values, exact.hi, exact.lo, fmt, exact.bound, exact.exponent)
        record = {"cell": cell | {"message": loss.note}}
        if rows:
            record["rows"] = per_row(labels, loss.values, exact.hi, exact.lo, fmt, exact.exponent)
    if exact.gradient is not None:
        record["grad"] = measure_gradient(impl, native, backend, exact, fmt)
    return record


class PlainInput(GridInput):
    """A cell at its default options: the loss entry's exact references on the rounded input, and
    each path called as compiled (harness.paths.build). The other kind of grid input, with loss
    options or -inf logits, is harness.sweep.option_cells.OptionInput; calls.measure_input walks either."""

    def __init__(self, implementations, labels, fmt: FloatFormat, device: str, loss=losses.DEFAULT, **want):
        super().__init__(implementations, fmt, device, **want)
        self.labels, self.loss = labels, loss

    def prepare_rounded(self, rounded, logits, shared: dict) -> tuple[dict, bool]:
        self.rounded, self.held = rounded, rounded.astype(np.float64)  # exact: what the reference sees
        self.max_logit = float(self.held.max())
        return {"max_logit": self.max_logit}, bool(np.isfinite(self.held).all())

    def quantities(self) -> dict:
        """The exact values (kept for the paths) and theory's quantities of the input."""
        self.exact = exact_values(self.held, self.labels, self.fmt, self.gradient, self.loss)
        return {"max_logit": self.max_logit} | quantities_of(self.loss, self.held, self.labels, self.exact)

    def transfer(self, backend, on):
        return backend.to_native(self.rounded, self.labels, on)

    def measurer(self, place, native):
        """measure(path, impl) -> the journal record of one cell of this framework."""
        backend, exact, labels, fmt, rows = place.backend, self.exact, self.labels, self.fmt, self.rows
        return lambda path, impl: measure_cell(impl, native, backend, exact, labels, fmt, rows)


def compile_implementations(sweep: SweepConfig) -> dict:
    """(framework, path) -> Implementation ready to run (jitted for JAX), user-supplied paths last; a loss
    measured on named arrays compiles its paths as it meets them (harness.sweep.named_inputs)."""
    if sweep.named:
        return {}
    customs = custom_paths.callables(custom_paths.parse(sweep.custom_paths))
    return build.implementations(sweep.frameworks, sweep.paths, customs, sweep.chunk_size, sweep.block_size)


def bases(sweep: SweepConfig):
    """(family, base draw) for every family and size of the sweep."""
    for family in sweep.families:
        for size in sweep.sizes(family):
            if size is None:
                yield family, given_draw(sweep, family)
            else:
                yield family, inputs.draw(*size, sweep.seed)


def input_variant(sweep: SweepConfig, implementations, labels, fmt: FloatFormat, options, family: str):
    """The kind of input a cell is: PlainInput at the default options, or an OptionInput (loss options
    off their defaults, or a family with -inf logits) around the uncompiled losses it composes."""
    want = {"rows": sweep.row_errors, "gradient": sweep.gradient}
    if not option_cells.needs_options(options, family):
        return PlainInput(implementations, labels, fmt, sweep.device, sweep.loss, **want)
    customs = custom_paths.callables(custom_paths.parse(sweep.custom_paths))
    raw = option_cells.raw_losses(sweep.frameworks, sweep.paths, customs, sweep.chunk_size, sweep.block_size)
    return option_cells.OptionInput(implementations, labels, fmt, sweep.device, options, raw, sweep.seed, **want)


RELEASE_ELEMENTS = 2**24  # an input this large is rounded to all its dtypes at once, then its draw let go


def measure_units(sweep: SweepConfig, record, done=frozenset(), implementations=None, units=None, describe=None):
    """Measure the grid's units of work that `units` yields (an increasing iterator of unit numbers;
    all of them when None): unit i * len(dtypes) + j is the i-th input of the grid rounded to its
    j-th dtype, with every loss option. Every cell not in `done` is measured and its journal record
    passed to record(); `describe(text)` is told which unit is being measured (the progress bar).

    At the last scale of a draw of more than RELEASE_ELEMENTS logits (token_sweep's 10**7 rows),
    the input is rounded to its remaining dtypes at once and the float64 draw let go before any
    framework runs: the rounded copies together are no larger than the draw, and each goes when
    its dtype is done (same bits: rounding is elementwise)."""
    if sweep.named:  # a loss measured on named arrays walks its own grid through the same loop
        customs = custom_paths.named_callables(sweep.custom_paths)
        return named_inputs.measure_units(sweep, record, done, units, describe, customs)
    implementations = implementations or compile_implementations(sweep)
    units = iter(units) if units is not None else itertools.count()
    wanted, per_input, index = next(units, None), len(sweep.dtypes), -1
    for family, base in bases(sweep):
        for k, scale in enumerate(sweep.scales):
            index += 1
            if wanted is None:
                return
            if wanted >= (index + 1) * per_input:
                continue  # none of this input's units
            logits = inputs.make_logits(family, scale, base)
            labels = inputs.choose_labels(logits, base, sweep.label)
            if family == "masked":
                fraction, seed = sweep.mask_fraction, sweep.seed
                logits = option_inputs.mask_logits(logits, labels, fraction, seed, sweep.mask_label)
            n_rows, n_classes = logits.shape
            key = {"loss": sweep.loss, "family": family, "scale": scale, "n_rows": n_rows, "n_classes": n_classes}
            key["device"] = sweep.device
            ahead = {}
            last_use = k == len(sweep.scales) - 1 and family != "masked"
            if logits.size > RELEASE_ELEMENTS and last_use and not np.isneginf(logits).any():
                first = wanted - index * per_input
                ahead = {dtype: {"dtype": dtype, "rounded": round_to(logits, dtype)} for dtype in sweep.dtypes[first:]}
                logits = base = None  # the draw's last use: only the rounded copies remain
            for j, dtype in enumerate(sweep.dtypes):
                if wanted != index * per_input + j:
                    continue
                if describe is not None:
                    describe(f"{family} C={n_classes} scale={scale:.3g} {dtype}")
                shared = ahead.pop(dtype, {})  # one dtype's rounding and exact rows, kept across its option cells
                for options in sweep.option_grid:
                    variant = input_variant(sweep, implementations, labels, DTYPES[dtype], options, family)
                    measure_input(logits, dtype, key | options.columns(), record, done, variant, shared)
                    del variant  # its rounded and float64 copies go with it
                del shared
                wanted = next(units, None)
                if wanted is None:
                    return


def n_units(sweep: SweepConfig) -> int:
    """How many units of work (input x dtype) the grid has."""
    if sweep.named:
        return named_inputs.n_units(sweep)
    return sum(len(sweep.sizes(f)) for f in sweep.families) * len(sweep.scales) * len(sweep.dtypes)


def sweep_cells(sweep: SweepConfig, record, done=frozenset(), implementations=None) -> None:
    """Walk the grid in this process; every cell not in `done` is measured and its journal record
    passed to record(). (harness.sweep.workers spreads the grid over several processes.)"""
    if sweep.kind == "head":  # the language-model head has a stage of its own
        return head_runner.sweep_head(sweep, record, done)
    with tqdm(total=sweep.n_cells, initial=len(done), disable=not sweep.progress, desc="cells", unit="cell") as bar:

        def counted(measured: dict) -> None:
            record(measured)
            bar.update(1)

        measure_units(sweep, counted, done, implementations, describe=bar.set_postfix_str)
