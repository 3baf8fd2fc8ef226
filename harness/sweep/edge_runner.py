"""The edge_cases stage: every framework, built-in path and dtype on each edge case, loss and gradient.

Dispatched by harness.pipeline when `edge_cases=true`. One input of n_rows x n_classes standard-normal
logits (the seed's draw) is changed per case (harness.sweep.edge_cases), rounded once per dtype, and
handed to every framework as the same bits. The bare cases run each path's per-row loss and its
gradient d(sum of losses)/d(logits) as the accuracy stage does (harness.paths.build); the mean over
no kept rows runs through the option layer (harness.paths.options), its gradient by the backend's
autodiff. Whatever a call raises becomes a row with outcome `error` and the exception; nothing is
retried or skipped, except what harness.paths.edge_cases says must not be called.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from harness import backends, paths
from harness.dtypes import DTYPES, FloatFormat, round_to
from harness.paths import build
from harness.paths import edge_cases as edge_paths
from harness.paths import options as opt
from harness.paths.edge_cases import EDGE_ROW
from harness.sweep import inputs, metrics, option_cells
from harness.sweep.calls import call, measure_input
from harness.sweep.edge_cases import (
    EDGE_CASES,
    EdgeCase,
    EdgeExact,
    case_options,
    edge_input,
    edge_shape,
    exact_values,
    gradient_outcome,
    gradient_row_error,
    loss_outcome,
    shown_label,
    worst,
)
from harness.sweep.option_inputs import native_arrays, option_inputs

log = logging.getLogger(__name__)
NAMES = {
    "case": [case.name for case in EDGE_CASES],
    "framework": list(backends.FRAMEWORKS),
    "path": list(paths.PATH_NAMES),
}


@dataclass(frozen=True)
class Call:
    """What one loss or gradient call gave: its values (float64), or the failure's status and message."""

    values: np.ndarray | None = None
    status: str = ""  # error or unsupported where it gave no values
    message: str = ""  # the exception (or the reason it was not called); a note such as a dtype rounded


def informative_line(text: str) -> str:
    """The first line of an exception's text that says something: TensorFlow opens with 'Graph
    execution error:' and a traceback of the graph's definition before the reason."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    telling = [line for line in lines if not line.endswith(":") and not line.startswith(("File ", "[["))]
    return (telling or lines or [""])[0][:300]


def failed(exc: BaseException) -> Call:
    status = metrics.failure(exc)["status"]
    return Call(status=status, message=f"{type(exc).__name__}: {informative_line(exc)}")


def run_call(make, native, backend, dtype: str, size: int) -> Call:
    """Build and run one call; any exception, or a result of the wrong size, is the call's failure."""
    made = call(lambda *args: make()(*args), native, backend, dtype)
    if made.error is not None:
        return failed(made.error)
    values = np.atleast_1d(np.asarray(made.values, dtype=np.float64))
    if values.size != size:
        return Call(status=metrics.ERROR, message=f"returned shape {values.shape}, expected {size} values")
    return Call(values=values, message=made.note)


def bare_calls(impl: build.Implementation, native, backend, dtype: str, shape) -> tuple[Call, Call]:
    """The path's per-row loss and its gradient, as the accuracy stage runs them."""
    if impl.unsupported:
        return Call(status=metrics.UNSUPPORTED, message=impl.unsupported), Call(status=metrics.UNSUPPORTED)
    loss = run_call(lambda: impl.loss, native, backend, dtype, shape[0])
    if impl.gradient is None:
        return loss, Call(status=metrics.UNSUPPORTED, message=impl.no_gradient)
    return loss, run_call(lambda: impl.gradient, native, backend, dtype, shape[0] * shape[1])


def mean_calls(framework: str, path: str, path_fn, case: EdgeCase, arrays, native, backend, dtype, shape):
    """The loss with the case's options through the option layer (one value), and its autodiff gradient."""
    try:
        fn = opt.option_function(framework, path, path_fn, arrays, case_options(case))
    except Exception as exc:
        return failed(exc), failed(exc)
    loss = run_call(lambda: backend.compile(fn), native, backend, dtype, 1)
    source = opt.option_gradient(backend, fn)
    if source is None:
        return loss, Call(status=metrics.UNSUPPORTED, message=f"NotImplementedError: {opt.NUMPY_NO_GRADIENT}")
    gradient = run_call(
        lambda: backend.compile_gradient(source),
        native,
        backend,
        dtype,
        shape[0] * shape[1],
    )
    return loss, gradient


# --- one row of the table -----------------------------------------------------------------------


def _shown(values) -> str:
    return np.array2string(np.asarray(values), precision=4, threshold=10, max_line_width=10**6)


def loss_columns(case: EdgeCase, exact: EdgeExact, fmt: FloatFormat, call: Call) -> dict:
    """exact_loss, why_undefined, loss, loss_returned, loss_outcome, loss_ulp_err, status, other_rows_loss."""
    i = 0 if case_options(case) is not None else EDGE_ROW
    hi, lo, e = (float(exact.loss.hi[i]), float(exact.loss.lo[i]), int(exact.loss.exponent[i]))
    columns = {
        "exact_loss": float(np.ldexp(hi, e)),
        "why_undefined": (case.undefined or "the reference has no value") if np.isnan(hi) else "",
    }
    if call.values is None:
        status = call.status
        return columns | {
            "loss": np.nan,
            "loss_returned": call.message,
            "loss_outcome": status,
            "loss_ulp_err": np.nan,
            "status": status,
            "other_rows_loss": status if case_options(case) is None else "",
        }
    v = float(call.values[i])
    value, exact_hi, exact_lo = np.array([v]), np.array([hi]), np.array([lo])
    both_finite = np.isfinite(v) and np.isfinite(hi)
    ulp_err = metrics.ulp_error(value, exact_hi, exact_lo, fmt, e)[0] if both_finite else np.nan
    status = metrics.UNDEFINED if np.isnan(hi) else metrics.output_status(value, exact_hi, exact_lo, fmt, e)
    others = [j for j in range(len(call.values)) if j != i] if case_options(case) is None else []
    hi_all, lo_all, e_all = exact.loss
    return columns | {
        "loss": v,
        "loss_returned": f"{v:.6g}",
        "loss_outcome": loss_outcome(v, hi, lo, fmt, e),
        "loss_ulp_err": float(ulp_err),
        "status": status,
        "other_rows_loss": worst(
            loss_outcome(call.values[j], float(hi_all[j]), float(lo_all[j]), fmt, int(e_all[j])) for j in others
        ),
    }


def grad_columns(exact: EdgeExact, fmt: FloatFormat, call: Call) -> dict:
    """grad_returned, grad_outcome, grad_max_row_rel_err, grad_status, other_rows_grad (of the edge row)."""
    if call.values is None:
        return {
            "grad_returned": call.message,
            "grad_outcome": call.status,
            "grad_max_row_rel_err": np.nan,
            "grad_status": call.status,
            "other_rows_grad": call.status,
        }
    rows = call.values.reshape(exact.gradient.hi.shape)
    hi, lo, e = exact.gradient

    def outcome(j):
        return gradient_outcome(rows[j], hi[j], lo[j], fmt, e[j])

    r = EDGE_ROW
    edge = slice(r, r + 1)
    status = metrics.output_status(rows[edge], hi[edge], lo[edge], fmt, e[edge])
    return {
        "grad_returned": _shown(rows[r]),
        "grad_outcome": outcome(r),
        "grad_max_row_rel_err": gradient_row_error(rows[r], hi[r], lo[r], fmt, e[r]),
        "grad_status": metrics.UNDEFINED if np.isnan(hi[r]).any() else status,
        "other_rows_grad": worst(outcome(j) for j in range(len(rows)) if j != r),
    }


def edge_row(case: EdgeCase, exact: EdgeExact, fmt: FloatFormat, loss: Call, gradient: Call) -> dict:
    notes = [c.message for c in (loss, gradient) if c.values is not None and c.message]
    return (
        loss_columns(case, exact, fmt, loss)
        | grad_columns(exact, fmt, gradient)
        | {"message": "; ".join(dict.fromkeys(notes))}
    )


# --- the stage ----------------------------------------------------------------------------------


class EdgeInput:
    """One edge case rounded to one dtype, as a kind of input for the one loop
    (harness.sweep.calls.measure_input): every (framework, path) is measured every time (the stage
    keeps no journal), and a non-finite input is the case itself, never input_inf. The bare cases
    call each path as built; the mean over no kept rows goes through the option layer."""

    def __init__(self, case: EdgeCase, implementations: dict, labels, dtype: str, sweep, raw_losses: dict):
        self.case, self.implementations, self.labels, self.fmt = case, implementations, labels, DTYPES[dtype]
        self.sweep, self.raw_losses, self.device = sweep, raw_losses, sweep.device
        self.options = case_options(case)

    def todo(self, cell: dict, done) -> dict:
        return dict(self.implementations)

    def prepare(self, logits, shared: dict) -> tuple[dict, bool]:
        self.rounded = round_to(logits, self.fmt.name)
        self.exact = exact_values(self.case, self.rounded.astype(np.float64), self.labels, self.fmt, self.sweep.seed)
        return {}, True

    def quantities(self) -> dict:
        return {}

    def where(self, place, path: str) -> dict:
        case, fmt = self.case, self.fmt
        found = {"case": case.name, "framework": place.framework, "dtype": fmt.name, "device": place.device}
        return found | {"reduction": case.reduction, "label": shown_label(case, self.labels), "path": path}

    def failed(self, record, cell: dict, place, cells: dict, exc: BaseException) -> None:
        for _, path in cells:
            record(self.where(place, path) | edge_row(self.case, self.exact, self.fmt, failed(exc), failed(exc)))

    def transfer(self, backend, on):
        rounded, labels, options = self.rounded, self.labels, self.options
        native, arrays = backend.to_native(rounded, labels, on), None
        if options is not None:
            made = option_inputs(labels, rounded.shape[1], options, self.sweep.seed)
            arrays = native_arrays(backend, made, options, self.fmt.name, on)
        return native, arrays

    def measure(self, place, native, cells: dict, cell: dict):
        """The edge row of each (framework, path) of `cells` on this framework."""
        (native, arrays), framework, backend = native, place.framework, place.backend
        case, dtype, shape = self.case, self.fmt.name, self.rounded.shape
        reason = edge_paths.not_called(framework, place.device, case.name)
        for (_, path), impl in cells.items():
            if reason:
                calls = (Call(status=metrics.UNSUPPORTED, message=reason),) * 2
            elif self.options is not None:
                fn = self.raw_losses.get((framework, path))
                calls = mean_calls(framework, path, fn, case, arrays, native, backend, dtype, shape)
            else:
                calls = bare_calls(impl, native, backend, dtype, shape)
            yield self.where(place, path) | edge_row(case, self.exact, self.fmt, *calls)


def measure(sweep) -> list[dict]:
    """One row per (case, framework, path, dtype)."""
    (n_rows,), (n_classes,) = edge_shape(sweep)
    base = inputs.draw(n_rows, n_classes, sweep.seed)
    implementations = build.implementations(sweep.frameworks, sweep.paths, None, sweep.chunk_size, sweep.block_size)
    raw_losses = option_cells.raw_losses(sweep.frameworks, sweep.paths, {}, sweep.chunk_size, sweep.block_size)
    log.info(
        "edge cases: %d cases x %d paths, %d x %d logits", len(EDGE_CASES), len(implementations), n_rows, n_classes
    )
    rows: list[dict] = []
    total = len(EDGE_CASES) * len(sweep.dtypes) * len(implementations)
    with tqdm(total=total, disable=not sweep.progress, desc="edge cases", unit="cell") as bar:
        for case in EDGE_CASES:
            logits, labels = edge_input(case, base.z, base.labels)
            for dtype in sweep.dtypes:
                bar.set_postfix_str(f"{case.name} {dtype}")
                variant = EdgeInput(case, implementations, labels, dtype, sweep, raw_losses)
                measure_input(logits, dtype, {}, rows.append, frozenset(), variant)
                bar.update(len(implementations))
    return rows
