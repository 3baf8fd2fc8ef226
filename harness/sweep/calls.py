"""The one call-and-record and the one walk over frameworks that every kind of run shares.

Every kind of run (the grid, the loss options, the head, the edge cases, the bisection) measures an
input the same way: per framework it loads the backend, picks the device the rows run on, records
what the backend measured there, enters the dtype's scope and hands the arrays over
(`each_framework`); a transfer that raises is a row per cell with its status, and the framework's
memory goes back when its cells are done. Then per path it calls a loss or a gradient (`call`):
a declared reason not to call, an exception or a result read back in another dtype all end in a
`Call`, never in a crash. What each kind of run makes of a Call (metrics, an edge outcome, a break
status) is its own; the loop around both, from the cells not yet done to the last framework's
rows, is one too (`measure_input`), whatever kind of input it walks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from harness import backends, paths
from harness.sweep import metrics
from harness.sweep.cells import compute, measured_facts


@dataclass(frozen=True)
class Call:
    """What one loss or gradient call gave: its values (float64, in the dtype) and a note, or the failure."""

    values: np.ndarray | None = None
    note: str = ""  # e.g. "returned float32; rounded to bfloat16"
    error: BaseException | None = None  # what it raised (paths.Unsupported where it was not called)

    @property
    def failure(self) -> dict:
        """The status and message of a failed call (harness.sweep.metrics.failure)."""
        return metrics.failure(self.error)


def call(fn, args, backend, dtype: str, unsupported: str = "", read=compute) -> Call:
    """Run fn(*args) and read it back as float64 in `dtype` (`read`: harness.sweep.cells.compute);
    `unsupported`, a declared reason, is the call's failure without calling it."""
    try:
        if unsupported:
            raise paths.Unsupported(unsupported)
        values, note = read(fn, args, backend, dtype)
    except Exception as exc:  # a framework that breaks is a row, never a crash
        return Call(error=exc)
    return Call(values, note)


@dataclass(frozen=True)
class Place:
    """Where one framework's cells of one input and dtype run: its backend, device and measured facts."""

    framework: str
    backend: object
    device: str
    facts: dict  # measured_facts: framework, device, flushes_subnormals, exp_*, quotient_flushes, gradient_by


def each_framework(
    frameworks: Iterable[str], dtype: str, device: str, transfer: Callable, failed: Callable
) -> Iterator[tuple[Place, object]]:
    """(place, transfer(backend, device)) for each framework, inside its dtype's scope. A transfer that
    raises goes to failed(place, exc) (its cells become rows with that status) and the framework is
    skipped; every framework's memory is handed back (backend.release_memory) once its cells are done."""
    for framework in dict.fromkeys(frameworks):
        backend = backends.load(framework)
        on = backends.row_device(framework, device)
        place = Place(framework, backend, on, measured_facts(framework, dtype, on))
        with backend.dtype_scope(dtype):
            try:
                native = transfer(backend, on)
            except Exception as exc:  # a transfer that fails is a row per cell, in every kind of run
                failed(place, exc)
            else:
                yield place, native
                del native
        backend.release_memory()


def measure_input(logits, dtype: str, key: dict, record, done, variant, shared=None) -> int:
    """Measure every cell not yet done of one input rounded to one dtype: the one loop of every
    kind of input, which `variant` is (the grid's runner.PlainInput and option_cells.OptionInput, the
    head's head_runner.HeadInput). The variant names its cells (a tuple whose first item is the
    framework), rounds the input and says whether it is finite, supplies the exact values and
    theory's quantities, hands the arrays over and measures each framework's cells; the loop does
    the rest in the same order for every kind: skip the cells in `done`, an overflowing input's
    input_inf rows, a transfer that fails as a row per cell, each framework's memory handed back.

    `key` names the cells (loss, family, scale, sizes, options). Each finished cell goes to
    `record({"cell": ..., ...})` at once; returns how many ran. `shared`, a dict the caller keeps
    per input, holds one dtype's rounding (and what the variant keeps there) for the next variant."""
    cell = key | {"dtype": dtype}
    todo = variant.todo(cell, done)
    if not todo:
        return 0
    overflowing, finite = variant.prepare(logits, {} if shared is None else shared)
    if not finite:
        variant.input_inf(cell | overflowing, todo, record)
        return len(todo)
    cell |= variant.quantities()
    by_framework: dict = {}
    for names, impl in todo.items():
        by_framework.setdefault(names[0], {})[names] = impl

    def failed(place, exc):
        variant.failed(record, cell, place, by_framework[place.framework], exc)

    for place, native in each_framework(by_framework, dtype, variant.device, variant.transfer, failed):
        for measured in variant.measure(place, native, by_framework[place.framework], cell):
            record(measured)
        del native
    return len(todo)
