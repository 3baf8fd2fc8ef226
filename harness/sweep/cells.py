"""What measuring any cell shares, for the plain runner (harness.sweep.runner), the option layer
(harness.sweep.option_cells), the head (harness.sweep.head_runner) and the edge cases: running a loss
and reading it back, per-row errors, a row's names and the facts its backend measured, the journal
key, and the input_inf rows of an input that overflows its dtype."""

from __future__ import annotations

import numpy as np

from harness import backends, mechanisms, paths
from harness.dtypes import FloatFormat, round_to
from harness.sweep import journal, metrics


def compute(fn, native, backend, dtype: str) -> tuple[np.ndarray, str]:
    """Run a loss or gradient; the result as float64 in `dtype`, and a note if it came back in another."""
    values, returned = backend.to_numpy(fn(*native))
    if returned == dtype:
        return values, ""
    return round_to(values, dtype).astype(np.float64), f"returned {returned}; rounded to {dtype}"


def per_row(labels, computed, hi, lo, fmt: FloatFormat, exponent=0) -> dict:
    """The per-row errors of one cell, as lists (for the journal and row_errors)."""
    return {
        "row": list(range(len(hi))),
        "label": [int(v) for v in labels],
        "exact_loss": np.ldexp(hi, exponent).tolist(),
        "computed": computed.tolist(),
        "abs_err": metrics.abs_error(computed, hi, lo, exponent).tolist(),
        "ulp_err": metrics.ulp_error(computed, hi, lo, fmt, exponent).tolist(),
    }


def record_input_inf(cell: dict, todo, fmt: FloatFormat, device: str, record, gradient: bool) -> int:
    """Journal every (framework, path) of an input whose rounded logits overflow the dtype: status
    input_inf, not the path's failure. Returns how many cells that was."""
    status = {"status": metrics.INPUT_INF, "message": f"logits overflow {fmt.name} (|x| > {fmt.max_finite:.6g})"}
    for framework, path in todo:
        where = cell | {"framework": framework, "device": backends.row_device(framework, device)} | named(path)
        where["gradient_by"] = gradient_by(framework)
        record({"cell": where | status} | ({"grad": status} if gradient else {}))
    return len(todo)


def record_failed(record, where: dict, by_path, exc: BaseException, gradient: bool, more=lambda path: {}) -> None:
    """Journal every path of one framework whose inputs could not be handed over (a transfer that
    raised): a row per path with the failure's status, its gradient too where one is measured."""
    failed = metrics.failure(exc)
    for path in by_path:
        record({"cell": where | named(path) | more(path) | failed} | ({"grad": failed} if gradient else {}))


def input_quantities(held: np.ndarray, labels: np.ndarray, loss: np.ndarray) -> dict:
    """Theory's quantities of one rounded input (float64-held logits) and its exact per-row losses:
    max_exact_loss, max_lse (the loss plus the target logit) and the target quantities."""
    return {
        "max_exact_loss": float(loss.max()),
        "max_lse": float((loss + held[np.arange(len(labels)), labels]).max()),
    } | target_quantities(held, labels)


def target_quantities(held: np.ndarray, labels: np.ndarray) -> dict:
    """max_target_gap, the largest max_j x_j - x_y over rows (the argument a shifting path's exp takes,
    negated), and max_neg_target_logit, the largest -x_y (an unshifted exp's): past the exp's measured
    underflow, the target probability it makes is 0 (harness.mechanisms). Of the rounded logits in
    float64 (a difference of float32 or narrower values is exact); masked -inf classes are left out;
    NaN where no row has a finite target."""
    target = held[np.arange(len(labels)), labels]
    top = np.where(np.isfinite(held), held, -np.inf).max(axis=1)
    finite = np.isfinite(target) & np.isfinite(top)
    if not finite.any():
        return {"max_target_gap": float("nan"), "max_neg_target_logit": float("nan")}
    return {
        "max_target_gap": float((top[finite] - target[finite]).max()),
        "max_neg_target_logit": float(-target[finite].min()),
    }


def measured_facts(framework: str, dtype: str, device: str) -> dict:
    """The row's framework, device and what its backend measured there (flush-to-zero, exp's dtype)."""
    return {
        "framework": framework,
        "device": device,
        "flushes_subnormals": backends.load(framework).flushes_subnormals(dtype, device),
        "exp_dtype": backends.exp_dtype(framework, dtype, device),
        "exp_overflow": backends.exp_overflow(framework, dtype, device),
        "exp_underflow": backends.exp_underflow(framework, dtype, device),
        "quotient_flushes": backends.quotient_flushes(framework, dtype, device),
        "gradient_by": gradient_by(framework),
    }


def gradient_by(framework: str) -> str:
    """Whose gradient a row measures: `framework` (its autodiff) or `harness` (a backward pass the
    harness wrote by hand, for a framework without autodiff: NumPy)."""
    return "harness" if backends.load(framework).autodiff_gradient is None else "framework"


def named(path: str) -> dict:
    """A row's path and the failure mechanisms its entry declares (None for a custom path: no theory),
    so that the breakdown and the plots read theory from the table, never from the path entries."""
    entry = paths.ENTRIES_BY_NAME.get(path)
    return {"path": path, "mechanisms": None if entry is None else mechanisms.joined(entry.mechanisms)}


def cell_key(cell: dict, framework: str, path: str) -> tuple:
    return journal.cell_key(cell | {"framework": framework, "path": path})


class GridInput:
    """What the grid's kinds of input (runner.PlainInput, option_cells.OptionInput) share for the one
    loop (harness.sweep.calls.measure_input): cells named (framework, path), one rounding per dtype
    kept in `shared`, input_inf rows, a failed transfer as a row per path. A kind supplies
    prepare_rounded, quantities, transfer, measurer(place, native) -> measure(path, impl) and columns."""

    def __init__(self, implementations: dict, fmt: FloatFormat, device: str, rows=False, gradient=False):
        self.implementations, self.fmt, self.device = implementations, fmt, device
        self.rows, self.gradient = rows, gradient

    def todo(self, cell: dict, done) -> dict:
        return {fp: impl for fp, impl in self.implementations.items() if cell_key(cell, *fp) not in done}

    def prepare(self, logits, shared: dict) -> tuple[dict, bool]:
        """The columns an input_inf row records, and whether the input is finite in its dtype."""
        if shared.get("dtype") != self.fmt.name:  # one dtype's rounding at a time
            shared.clear()
            shared |= {"dtype": self.fmt.name, "rounded": round_to(logits, self.fmt.name)}
        return self.prepare_rounded(shared["rounded"], logits, shared)

    def input_inf(self, cell: dict, todo, record) -> None:
        record_input_inf(cell, todo, self.fmt, self.device, record, self.gradient)

    def failed(self, record, cell: dict, place, cells: dict, exc: BaseException) -> None:
        paths = [path for _, path in cells]
        record_failed(record, cell | place.facts, paths, exc, self.gradient, self.columns)

    def measure(self, place, native, cells: dict, cell: dict):
        """The journal record of each (framework, path) of `cells` on this framework."""
        measure = self.measurer(place, native)
        for (_, path), impl in cells.items():
            measured = measure(path, impl)
            measured["cell"] = cell | place.facts | named(path) | self.columns(path) | measured["cell"]
            yield measured

    def columns(self, path: str) -> dict:
        return {}
