"""The head stage: language-model head paths against the exact head, loss and gradients, timed.

It walks family x class count x scale x dtype x framework x path x mode x reduction. Each input
(h, W, b, labels) is made once in float64, rounded once per dtype; the exact head values (the
per-row loss, and the gradients with respect to h, W and b for each upstream gradient needed:
harness.sweep.head_exact) are computed once per rounded input, before any framework runs. Each
cell is one journal record with the logit cells' keys plus `mode`, `d`, `reduction` and
`ignore_fraction`: its loss metrics ("cell"), gradient metrics per input ("head_grad": h, W, b)
and, with timing on, its loss timing ("timing", at the first reduction and ignore_fraction of the
sweep only). The upstream gradient of reduction `none`
is not uniform: u_i = 1 + (i mod 4) / 4, exact in every dtype.

`ignore_fraction` is swept like reduction: round(f * rows) rows, drawn as the option cells draw
them (harness.sweep.option_inputs.ignored_rows, the sweep's seed), get the ignore index -100 as
their label; the exact head gives them loss 0 and upstream 0, and the mean divides by the kept
count. A mean over no kept rows is `undefined`, as in the option cells.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from harness import backends
from harness.dtypes import DTYPES, FloatFormat, round_to
from harness.exact.dd import ExactValue
from harness.paths import head as head_paths
from harness.paths.options import IGNORE_INDEX
from harness.sweep import head_gradients, head_inputs, journal, metrics
from harness.sweep.calls import Call, call, measure_input
from harness.sweep.cells import input_quantities, measured_facts
from harness.sweep.head_exact import ExactHead, n_kept, upstream_none
from harness.sweep.option_inputs import ignored_rows

log = logging.getLogger(__name__)
WRT = ("h", "W", "b")
NAMES = {"framework": list(head_paths.HEAD_FRAMEWORKS), "path": list(head_paths.HEAD_PATH_NAMES)}


# --- one cell -----------------------------------------------------------------------------------


def _computed(values_and_dtype: tuple[np.ndarray, str], dtype: str) -> tuple[np.ndarray, str]:
    """A result as backend.to_numpy hands it back, in the dtype (rounded once, noted, where the
    framework returned another)."""
    values, returned = values_and_dtype
    if returned == dtype:
        return np.atleast_1d(values), ""
    return np.atleast_1d(round_to(values, dtype).astype(np.float64)), f"returned {returned}; rounded to {dtype}"


def _as_exact(value: ExactValue):
    """Normalised (hi, lo, exponent) with the exponent broadcast to hi's shape, 2-D for gradients."""
    hi, lo, exponent = (np.atleast_2d(np.asarray(part)) for part in value)
    return hi, lo, np.broadcast_to(exponent, hi.shape)


class FirstCall:
    """How a head loss is read back (calls.call's `read`): as harness.sweep.cells.compute does, at least
    one value, and the wall time of this first call kept (compilation, where it compiles)."""

    seconds = 0.0

    def __call__(self, fn, args, backend, dtype: str):
        start = time.perf_counter()
        result = backend.sync(fn(*args))
        self.seconds = time.perf_counter() - start
        return _computed(backend.to_numpy(result), dtype)


def loss_metrics(loss: Call, exact: ExactValue | None, fmt: FloatFormat) -> dict:
    """Loss metrics of one cell's call (exact None: the mean over no kept rows, undefined)."""
    if exact is None:
        return metrics.undefined(loss.values)
    hi, lo, exponent = (np.atleast_1d(np.asarray(p)) for p in exact)
    cell = metrics.cell_metrics(loss.values, hi, lo, fmt, None, np.broadcast_to(exponent, hi.shape))
    return cell | {"message": loss.note}


def gradient_record(returned: list | BaseException, exact, fmt: FloatFormat, with_bias: bool) -> dict:
    """Gradient metrics with respect to h, W and b (b only with a bias) from the gradients a call
    handed back (head_gradients.gradient_values), or the exception it raised; `exact` None: the
    mean over no kept rows, status undefined."""
    with_respect_to = [w for w in WRT if w != "b" or with_bias]
    if isinstance(returned, BaseException):
        return {wrt: metrics.failure(returned) for wrt in with_respect_to}
    record = {}
    for wrt, computed in zip(WRT, returned, strict=True):
        if wrt not in with_respect_to:
            continue
        values, note = _computed(computed, fmt.name)
        if exact is None:
            record[wrt] = metrics.undefined(values)
            continue
        values = values.reshape(1, -1) if values.ndim == 1 else values
        hi, lo, exponent = _as_exact(getattr(exact, wrt))
        record[wrt] = metrics.gradient_metrics(values, hi, lo, fmt, exponent) | {"message": note}
    return record


def mean_over_none(exact: ExactHead, reduction: str, kept) -> bool:
    """A mean over no kept rows: the cell is `undefined`, with no exact value."""
    return reduction == "mean" and n_kept(len(exact.args[3]), kept) == 0


def exact_gradients(exact: ExactHead, reduction: str, kept):
    """The exact gradients of a cell; None for a mean over no kept rows (undefined)."""
    return None if mean_over_none(exact, reduction, kept) else exact.gradients(reduction, kept)


def run_cell(
    framework, path, mode, reduction, native, u, exact: ExactHead, sweep, time_loss=None, kept=None, elsewhere=False
) -> dict:
    """The journal record of one cell (its key is added by the caller); `time_loss` (the timing
    layer's, harness.timing.head.time_loss) times it, where given. `kept`: the rows whose label in
    `native` is not the ignore index (None: every row); a mean over none is `undefined`. With
    `elsewhere`, a gradient call that can run is left to the caller (harness.sweep.head_gradients):
    the record has no "head_grad" then."""
    backend = backends.load(framework)
    fmt = exact.fmt
    reason = head_paths.unsupported_reason(framework, path, mode)
    note = head_paths.MODE_NOTE.get((framework, mode), "")
    record: dict = {}
    ignore = kept is not None and not kept.all()
    undefined = mean_over_none(exact, reduction, kept)
    with_bias = exact.args[2] is not None
    first = FirstCall()
    try:
        if reason:
            raise NotImplementedError(reason)
        build = head_paths.implementations_module(framework).build
        with_ignore = {"ignore": True} if ignore else {}  # older build()s take no ignore
        loss_fn, grad_fn = build(path, reduction, mode, sweep.head["chunk_size"], **with_ignore)
        exact_loss = None if undefined else exact.loss(reduction, kept)
    except Exception as exc:  # a path that cannot be built is a row, never a crash
        loss = Call(error=exc)
    else:
        loss = call(loss_fn, native, backend, fmt.name, read=first)
    if loss.error is None:
        cell = loss_metrics(loss, exact_loss, fmt)
        record["cell"] = cell | {"message": "; ".join(m for m in (note, cell["message"]) if m)}
        if time_loss is not None:
            compiles = mode == "compiled" or framework == "jax"
            recompiles = mode == "compiled" and getattr(backend, "RECOMPILES_PER_THREAD_COUNT", False)
            try:
                record["timing"] = time_loss(
                    loss_fn, native, backend, sweep.timing, first.seconds, compiles, recompiles
                )
            except Exception as exc:  # a timing that breaks fails its cell
                loss = Call(error=exc)
    if loss.error is not None:
        record["cell"] = loss.failure
        if time_loss is not None:
            record["timing"] = loss.failure
        grad_fn = None
    if sweep.gradient:
        if grad_fn is None:
            failed = record["cell"] if record["cell"]["status"] in (metrics.ERROR, metrics.UNSUPPORTED) else {}
            record["head_grad"] = {w: failed for w in WRT if w != "b" or with_bias}
        elif not elsewhere:
            try:
                values = head_gradients.gradient_values(grad_fn, native, u, backend)
            except Exception as exc:
                values = exc
            record["head_grad"] = gradient_record(values, exact_gradients(exact, reduction, kept), fmt, with_bias)
    return record


# --- the walk -----------------------------------------------------------------------------------


def inputs_of(sweep):
    """(settings, family, scale, draw, dtypes, paths) for every input of the head stage; the extra
    class count `head.large_n_classes` runs the chunked paths only, eager, with gradients off."""
    settings = sweep.head
    large = settings.get("large_n_classes")
    for family in sweep.families:
        if family == "head_file":
            bases = [(sweep, head_inputs.read_head_file(sweep.file.get("path")), sweep.dtypes, settings["paths"])]
        else:
            bases = [
                (
                    sweep,
                    head_inputs.draw_head(sweep.n_rows[0], c, settings["d"], settings["bias"], sweep.seed),
                    sweep.dtypes,
                    settings["paths"],
                )
                for c in sweep.n_classes
            ]
            if large:
                chunked = [p for p in settings["paths"] if p not in ("linear_fused", "linear_ce_reference")]
                draw = head_inputs.draw_head(sweep.n_rows[0], large, settings["d"], settings["bias"], sweep.seed)
                loss_only = dataclasses.replace(sweep, gradient=False, mode=("eager",))
                bases.append((loss_only, draw, (settings["large_dtype"],), chunked))
        for of_input, base, dtypes, paths in bases:
            for scale in sweep.scales:
                yield of_input, family, scale, head_inputs.scaled(base, scale), dtypes, paths


def modes_of(sweep, path: str) -> tuple[str, ...]:
    compiled_paths = sweep.head.get("compiled_paths")
    return tuple(m for m in sweep.mode if m == "eager" or compiled_paths is None or path in compiled_paths)


def sweep_head(sweep, record, done=frozenset(), time_loss=None) -> None:
    """Walk the head grid; every cell not in `done` is measured and its record passed to record()."""
    pool = head_gradients.Pool()
    try:
        with tqdm(disable=not sweep.progress, desc="head inputs", unit="input") as bar:
            for of_input, family, scale, draw, dtypes, path_names in inputs_of(sweep):
                labels = head_inputs.choose_labels(draw, sweep.label)
                n_rows, d, n_classes = draw.shape
                key = {"loss": sweep.loss, "family": family, "scale": scale, "n_rows": n_rows, "n_classes": n_classes}
                key["d"] = d
                for dtype in dtypes:
                    bar.set_postfix_str(f"{family} C={n_classes} scale={scale:.3g} {dtype}")
                    variant = HeadInput(of_input, draw, labels, dtype, path_names, time_loss, pool)
                    measure_input(None, dtype, key, record, done, variant)
                    bar.update(1)
    finally:
        pool.close()


class HeadInput:
    """The head's kind of input for the one loop (harness.sweep.calls.measure_input): (h, W, b) and
    the labels, rounded to one dtype; its cells are (framework, path, mode, reduction,
    ignore_fraction), measured against the exact head; a framework whose gradient calls run on one
    thread leaves them to the pool (harness.sweep.head_gradients) and records those cells after."""

    def __init__(self, sweep, draw, labels, dtype: str, path_names, time_loss=None, pool=None):
        self.sweep, self.draw, self.labels, self.fmt = sweep, draw, labels, DTYPES[dtype]
        self.path_names, self.time_loss, self.pool, self.device = path_names, time_loss, pool, sweep.device

    def todo(self, cell: dict, done) -> dict:
        sweep = self.sweep
        cells = (
            (f, p, m, r, i)
            for f in sweep.frameworks
            if f in head_paths.HEAD_FRAMEWORKS
            for p in self.path_names
            for m in modes_of(sweep, p)
            for r in sweep.reduction
            for i in sweep.ignore_fraction
        )
        return {names: None for names in cells if journal.cell_key(cell | _names(*names)) not in done}

    def prepare(self, logits, shared: dict) -> tuple[dict, bool]:
        """The columns an input_inf row records, and whether h, W and b are finite in the dtype."""
        draw, dtype = self.draw, self.fmt.name
        self.rounded = [None if a is None else round_to(a, dtype) for a in (draw.hidden, draw.weight, draw.bias)]
        held = [None if a is None else a.astype(np.float64) for a in self.rounded]
        self.exact = ExactHead(*held, self.labels, self.fmt)
        self.logits_held = held[0] @ held[1].T + (0 if held[2] is None else held[2])
        self.max_logit = float(self.logits_held.max())
        return {"max_logit": self.max_logit}, all(np.isfinite(a).all() for a in held if a is not None)

    def input_inf(self, cell: dict, todo, record) -> None:
        status = {"status": metrics.INPUT_INF, "message": f"h, W or b overflow {self.fmt.name}"}
        for names in todo:
            on = backends.row_device(names[0], self.device)
            where = cell | _names(*names) | measured_facts(names[0], self.fmt.name, on)
            grad = {"head_grad": _grad_status(status, self.draw)} if self.sweep.gradient else {}
            record({"cell": where | status} | grad)

    def quantities(self) -> dict:
        """Theory's quantities of the logits h W^T + b; the upstream gradient and each ignore_fraction's kept rows."""
        labels, sweep = self.labels, self.sweep
        found = input_quantities(self.logits_held, labels, self.exact.loss("none").to_float64())
        self.u = upstream_none(len(labels))
        self.kept = {i: ~ignored_rows(len(labels), i, sweep.seed) for i in sweep.ignore_fraction}
        return {"max_logit": self.max_logit} | found

    def failed(self, record, cell: dict, place, cells: dict, exc: BaseException) -> None:
        status = metrics.failure(exc)
        for names in cells:
            grad = {"head_grad": _grad_status(status, self.draw)} if self.sweep.gradient else {}
            record({"cell": cell | _names(*names) | place.facts | status} | grad)

    def transfer(self, backend, on):
        rounded, labels, dtype = self.rounded, self.labels, self.fmt.name
        native = head_gradients.native_arrays(backend, rounded, on)
        labelled = {
            i: backend.transfer(np.asarray(ignore_labels(labels, k), dtype=np.int64), on) for i, k in self.kept.items()
        }
        return native, labelled, backend.transfer(round_to(self.u, dtype), on)

    def measure(self, place, native, cells: dict, cell: dict):
        """The journal record of each cell of `cells` on this framework; those whose gradient call the
        pool runs come last, once it has run them all."""
        sweep, kept, exact = self.sweep, self.kept, self.exact
        (arrays, labelled, u_native), framework, backend = native, place.framework, place.backend
        elsewhere = self.pool is not None and sweep.gradient and head_gradients.runs_on_one_thread(backend)
        later = []  # (record, GradientCall, reduction, kept) of the gradient calls left to the pool
        for _, path, mode, reduction, i in cells:
            first = reduction == sweep.reduction[0] and i == sweep.ignore_fraction[0]
            timed = self.time_loss if sweep.timing.enabled and first else None
            arguments = (*arrays, labelled[i])
            measured = run_cell(
                framework, path, mode, reduction, arguments, u_native, exact, sweep, timed, kept[i], elsewhere
            )
            measured["cell"] = cell | _names(framework, path, mode, reduction, i) | place.facts | measured["cell"]
            if sweep.gradient and "head_grad" not in measured:
                inputs = (*self.rounded, ignore_labels(self.labels, kept[i]), round_to(self.u, self.fmt.name))
                call = head_gradients.GradientCall(
                    framework,
                    path,
                    reduction,
                    mode,
                    sweep.head["chunk_size"],
                    not kept[i].all(),
                    self.fmt.name,
                    place.device,
                    inputs,
                )
                later.append((measured, call, reduction, kept[i]))
            else:
                yield measured
        if later:
            yield from _finish_elsewhere(later, self.pool, exact)


def _grad_status(status: dict, draw) -> dict:
    """The same status for the gradient with respect to h, W and b (b only with a bias)."""
    return {w: status for w in WRT if w != "b" or draw.bias is not None}


def _finish_elsewhere(later: list, pool, exact: ExactHead):
    """Run the gradient calls left to the pool, all at once; each cell's record as its call ends."""
    futures = pool.run([call for _, call, *_ in later])
    for (measured, _, reduction, kept), future in zip(later, futures, strict=True):
        try:
            values = future.result()
        except Exception as exc:  # a call that breaks, or a worker that died: rows with a status
            values = exc
        grads = exact_gradients(exact, reduction, kept)
        measured["head_grad"] = gradient_record(values, grads, exact.fmt, exact.args[2] is not None)
        yield measured


def _names(framework, path, mode, reduction, ignore_fraction) -> dict:
    return {"framework": framework, "path": path, "mode": mode, "reduction": reduction} | {
        "ignore_fraction": ignore_fraction
    }


def ignore_labels(labels: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """The labels as a user hands them over: the ignore index (-100) at the ignored rows."""
    return np.where(kept, labels, IGNORE_INDEX)


# --- the run -----------------------------------------------------------------------------------


def measure(sweep, run_dir: Path, time_loss=None) -> list[dict]:
    """Measure the head sweep's cells that its journal lacks; all its records (a cell recorded
    before the head took ignore_fraction is its ignore_fraction 0)."""
    cells = journal.Journal(run_dir)
    done = frozenset(journal.cell_key({"ignore_fraction": 0.0} | r["cell"]) for r in cells.records)
    try:
        sweep_head(sweep, cells.append, done, time_loss)
    finally:
        cells.close()
    return cells.records
