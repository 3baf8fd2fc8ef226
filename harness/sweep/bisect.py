"""Breakpoints located exactly: after the grid, bisect the scale where each path first fails.

One grid step (a factor 1.8 to 3.2 in scale) cannot tell a break at -ln(smallest normal) = 87.34
(subnormals flushed) from one at -ln(smallest subnormal / 2) = 103.97 (gradual underflow) in
float32. So for every framework/path/dtype/family (and size, device) whose grid has a good cell
(ok, exact_overflow, exact_underflow) just before its first failing one (inf, nan, error), the
scale is bisected between the two, in log scale, on the same rows (the same draw, rounded the same
way, labels chosen the same way) until the bracket is within 1e-4 relative. A midpoint whose
rounded inputs equal those of an end of the bracket has that end's outcome and is not run again,
so the inputs stopping to change costs nothing.

The result is the `breaks` table of the run folder, one row per combination: the bracket
(break_scale_lo, break_scale_hi), the status at its top, and the largest logit, log-sum-exp, exact
loss, max_j x_j - x_y and -x_y (the quantities theory states its thresholds in) at both ends, plus the dtype the path
accumulates its sums in (from its path entry). harness.outputs.breakdown merges it in; it never
runs anything. Only the loss is bisected: gradient breaks stay at grid resolution.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import pandas as pd

from harness import backends, losses, mechanisms, paths
from harness.dtypes import DTYPES, round_to
from harness.paths.options import CellOptions
from harness.sweep import inputs, metrics
from harness.sweep.calls import call
from harness.sweep.cells import target_quantities

log = logging.getLogger(__name__)

REL_TOL = 1e-4  # the bracket's relative width at which bisection stops
GROUP_COLUMNS = ("loss", "framework", "path", "dtype", "family", "device", "n_rows", "n_classes")
# the errors-table columns theory is stated in
QUANTITIES = ("max_logit", "max_lse", "max_exact_loss", "max_target_gap", "max_neg_target_logit")
BREAK_COLUMNS = (
    GROUP_COLUMNS
    + ("bisection", "n_bisection_steps", "n_bisection_runs", "break_scale_lo", "break_scale_hi", "break_status")
    + tuple(f"{q}_{end}" for q in QUANTITIES for end in ("lo", "hi"))
    + ("accumulation", "double_rounding")
    + tuple(CellOptions().columns())
)
NEVER_FAILS = "not needed: never fails within the grid"
FAILS_FIRST = "not needed: fails at the first scale"
NO_GOOD_BEFORE = "not needed: the scale before the first failure did not run"
CACHE_BYTES = 256 * 2**20  # rounded inputs kept for reuse by the next combination with the same bracket


def bisect_scale(fails: Callable[[float], bool], good: float, bad: float, rel_tol: float = REL_TOL):
    """Narrow [good, bad] (fails(good) False, fails(bad) True) to within rel_tol relative.

    Halves in log scale where both are positive (a grid step of 3.16 takes 15 halvings to 1e-4),
    else arithmetically. Returns (good, bad, halvings).
    """
    steps = 0
    while abs(bad - good) > rel_tol * max(abs(good), abs(bad)):
        mid = math.sqrt(good * bad) if good > 0 and bad > 0 else (good + bad) / 2
        if mid in (good, bad):  # float64 resolution
            break
        if fails(mid):
            bad = mid
        else:
            good = mid
        steps += 1
    return good, bad, steps


class Inputs:
    """The inputs of one family and size rounded to one dtype, at any scale: (rounded, held, labels).

    Kept by scale up to CACHE_BYTES, so that combinations whose bisections take the same midpoints
    round each input once."""

    def __init__(self, family: str, base: inputs.Draw, label: str, dtype: str):
        self.family, self.base, self.label, self.dtype = family, base, label, dtype
        self.kept: OrderedDict[float, tuple] = OrderedDict()
        self.room = max(2, CACHE_BYTES // max(1, 2 * base.z.nbytes))

    def at(self, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if scale in self.kept:
            self.kept.move_to_end(scale)
            return self.kept[scale]
        logits = inputs.make_logits(self.family, scale, self.base)
        rounded = round_to(logits, self.dtype)
        entry = (rounded, rounded.astype(np.float64), inputs.choose_labels(logits, self.base, self.label))
        self.kept[scale] = entry
        if len(self.kept) > self.room:
            self.kept.popitem(last=False)
        return entry


def break_status(impl, framework: str, device: str, dtype: str, rounded, held, labels) -> str:
    """The status the grid would give this (framework, path) on this input where it is a break
    (nan, error, inf), else ok: a correctly rounded inf or 0 is no break. The exact reference runs
    only on infinite rows whose float64 estimate of the loss is near the overflow threshold."""
    backend = backends.load(framework)

    def handed_over():  # the transfer inside the call: a transfer that fails is the call's status
        return impl.loss(*backend.to_native(rounded, labels, device))

    with backend.dtype_scope(dtype):
        loss = call(handed_over, (), backend, dtype, impl.unsupported)
    if loss.error is not None:  # a framework that breaks is a status, as in the grid
        return loss.failure["status"]
    computed = loss.values
    infinite = np.isinf(computed)
    if np.isnan(computed).any() or not infinite.any():
        return metrics.output_status(computed)
    fmt = DTYPES[dtype]
    x, y = held[infinite], labels[infinite]
    top = x.max(axis=1, keepdims=True)
    estimate = top[:, 0] + np.log(np.exp(x - top).sum(axis=1)) - x[np.arange(len(y)), y]
    if (estimate < fmt.max_finite / 2).any():  # 2**-52 relative from exact: far from rounding to inf
        return metrics.INF
    exact = losses.entry().load("exact")(x, y, fmt.precision)
    return metrics.output_status(computed[infinite], exact.hi, exact.lo, fmt, exact.exponent)


def quantities(held: np.ndarray, labels: np.ndarray, dtype: str, candidates: int = 4) -> dict:
    """max_logit, max_lse, max_exact_loss, max_target_gap and max_neg_target_logit of one input, as the
    runner records them; the exact reference runs on the few rows that float64 estimates put on top."""
    rows = np.arange(len(labels))
    top = held.max(axis=1, keepdims=True)
    with np.errstate(over="ignore", under="ignore"):
        lse = top[:, 0] + np.log(np.exp(held - top).sum(axis=1))
    loss = lse - held[rows, labels]
    pick = np.unique(np.concatenate([np.argsort(loss)[-candidates:], np.argsort(lse)[-candidates:]]))
    exact = losses.entry().load("exact")(held[pick], labels[pick], DTYPES[dtype].precision).to_float64()
    return {
        "max_logit": float(top.max()),
        "max_lse": float((exact + held[pick, labels[pick]]).max()),
        "max_exact_loss": float(exact.max()),
    } | target_quantities(held, labels)


def accumulation(framework: str, path: str, dtype: str) -> str:
    """The dtype the path's sums accumulate in (its entry); empty for a user-supplied path."""
    return paths.accumulation_dtype(framework, path, dtype) if path in paths.ENTRIES_BY_NAME else ""


def _ends(cells: pd.DataFrame, lo: int | None, hi: int | None) -> dict:
    """The grid's quantities at the cells lo and hi (NaN where None)."""
    return {
        f"{q}_{end}": (float(cells[q].iloc[i]) if i is not None and q in cells else np.nan)
        for q in QUANTITIES
        for end, i in (("lo", lo), ("hi", hi))
    }


MEASURABLY = 0.005  # harness.outputs.theory.MEASURABLY: the guesses are the limits theory checks


def predicted_thresholds(framework: str, path: str, dtype: str, device: str) -> list[tuple[str, float]]:
    """(quantity, threshold) pairs where theory (the path entry's mechanisms, the thresholds the
    backend's measured exp and division facts put on them: harness.mechanisms.measured_limits) puts
    this path's break, and 1/sum(exp) flushed where division flushes. Only first guesses for the
    search, which runs the path at both ends of every bracket it reports."""
    entry = paths.ENTRIES_BY_NAME.get(path)
    if entry is None or not entry.mechanisms:
        return []
    facts = mechanisms.ExpFacts(
        backends.exp_overflow(framework, dtype, device),
        backends.exp_underflow(framework, dtype, device),
        backends.quotient_flushes(framework, dtype, device),
    )
    causes = [m for m in entry.mechanisms if m in mechanisms.FAILURE_MECHANISMS]
    unshifted = mechanisms.SUM_OVERFLOW in causes
    if unshifted and mechanisms.exp_overflow_applies(dtype, facts, MEASURABLY):
        causes.append(mechanisms.EXP_OVERFLOW)
    guesses = [
        (limit.quantities[0], limit.threshold)
        for cause in causes
        for limit in mechanisms.measured_limits(cause, dtype, facts, not unshifted, MEASURABLY)
    ]
    return guesses + ([("max_lse", DTYPES[dtype].exp_flush_threshold)] if facts.quotient_flushes else [])


def estimate(held: np.ndarray, labels: np.ndarray, quantity: str) -> np.ndarray:
    """One of QUANTITIES per row in float64 (max_lse and max_exact_loss to about 2**-50: a guess, not a
    measurement)."""
    top = held.max(axis=1, keepdims=True)
    target = held[np.arange(len(labels)), labels]
    exact = {"max_logit": top[:, 0], "max_target_gap": top[:, 0] - target, "max_neg_target_logit": -target}
    if quantity in exact:
        return exact[quantity]
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        lse = top[:, 0] + np.log(np.exp(held - top).sum(axis=1))
    return lse if quantity == "max_lse" else lse - target


def crossing(stream: Inputs, quantity: str, limit: float, good: float, bad: float, rows: int = 8):
    """[s1, s2] within REL_TOL where the quantity of the rounded inputs passes `limit`, on the rows
    holding its largest values at `bad`; None if it does not pass within [good, bad]. Cheap: no path runs."""
    _, held, labels = stream.at(bad)
    top = np.argsort(estimate(held, labels, quantity))[-rows:]
    few = inputs.Draw(z=stream.base.z[top], labels=stream.base.labels[top])

    def passes(scale: float) -> bool:
        logits = inputs.make_logits(stream.family, scale, few)
        rounded = round_to(logits, stream.dtype).astype(np.float64)
        return bool(estimate(rounded, inputs.choose_labels(logits, few, stream.label), quantity).max() > limit)

    if passes(good) or not passes(bad):
        return None
    return bisect_scale(passes, good, bad)[:2]


def break_row(cells: pd.DataFrame, impl, stream: Inputs) -> dict:
    """The breaks row of one combination, its cells sorted by scale."""
    first = cells.iloc[0]
    framework, path, dtype, device = (first[c] for c in ("framework", "path", "dtype", "device"))
    row = {c: first.get(c, losses.DEFAULT) if c == "loss" else first[c] for c in GROUP_COLUMNS}  # loss: as journaled
    row["accumulation"] = accumulation(framework, path, dtype)
    row["double_rounding"] = path in paths.ENTRIES_BY_NAME and paths.double_rounding(framework, path, dtype)
    scales = cells["scale"].to_numpy(dtype=np.float64)
    status = cells["status"].to_numpy()
    failing = np.flatnonzero(np.isin(status, metrics.FAILED))
    empty = {"n_bisection_steps": 0, "n_bisection_runs": 0, "break_scale_lo": np.nan, "break_scale_hi": np.nan}
    if not failing.size:
        return row | empty | {"bisection": NEVER_FAILS, "break_status": ""} | _ends(cells, None, None)
    at = int(failing[0])
    row |= {"break_status": status[at]}
    if at == 0 or status[at - 1] not in metrics.GOOD:
        note = FAILS_FIRST if at == 0 else NO_GOOD_BEFORE
        return row | empty | {"bisection": note, "break_scale_hi": scales[at]} | _ends(cells, None, at)
    ends = {False: stream.at(scales[at - 1])[0], True: stream.at(scales[at])[0]}  # rounded inputs at each end
    statuses = {True: status[at]}
    runs = 0

    def fails(scale: float) -> bool:
        nonlocal runs
        rounded, held, labels = stream.at(scale)
        for outcome, end in ends.items():
            if np.array_equal(rounded, end):
                ends[outcome] = rounded
                return outcome
        runs += 1
        found = break_status(impl, framework, device, dtype, rounded, held, labels)
        failed = found in metrics.FAILED
        ends[failed] = rounded
        statuses[failed] = found
        return failed

    good, bad = scales[at - 1], scales[at]
    for quantity, limit in predicted_thresholds(framework, path, dtype, device):
        span = crossing(stream, quantity, limit, good, bad)
        if span is None:
            continue
        if not fails(span[1]):  # the break lies beyond the prediction
            good = span[1]
        elif fails(span[0]):  # before it
            bad = span[0]
        else:
            good, bad = span
            break
    guided = runs
    lo, hi, steps = bisect_scale(fails, good, bad)
    ends_q = {
        f"{q}_{end}": v for end, s in (("lo", lo), ("hi", hi)) for q, v in quantities(*stream.at(s)[1:], dtype).items()
    }
    note = f"bisected: {runs} runs ({guided} at predicted thresholds), {steps} halvings"
    return (
        row
        | ends_q
        | {
            "bisection": note,
            "n_bisection_steps": steps,
            "n_bisection_runs": runs,
            "break_scale_lo": lo,
            "break_scale_hi": hi,
            "break_status": statuses[True],
        }
    )


PLAIN = CellOptions().columns()  # the option values of the cells bisected: none (the bare per-row loss)


def plain_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells without loss options (the bisection reruns the bare paths, so it covers only those);
    its rows carry those option values, so the breakdown matches them to the right groups."""
    if cells.empty:
        return cells
    plain = np.ones(len(cells), dtype=bool)
    for column, value in PLAIN.items():
        if column in cells:
            plain &= cells[column].isna().to_numpy() if value is None else (cells[column] == value).to_numpy()
    return cells[plain]


def grid_order(cells: pd.DataFrame, sweep, implementations: dict) -> pd.DataFrame:
    """The cells in the order one uninterrupted process measures them (family, class count, dtype,
    framework/path, rows, scale), whatever order the journal holds them in (a resumed run, workers)."""
    ranks = {
        "family": {f: i for i, f in enumerate(sweep.families)},
        "dtype": {d: i for i, d in enumerate(sweep.dtypes)},
        "framework_path": {fp: i for i, fp in enumerate(implementations)},
    }
    keys = pd.DataFrame(
        {
            "family": cells["family"].map(ranks["family"]),
            "n_classes": cells["n_classes"],
            "dtype": cells["dtype"].map(ranks["dtype"]),
            "framework_path": [
                ranks["framework_path"].get(fp) for fp in zip(cells["framework"], cells["path"], strict=True)
            ],
            "n_rows": cells["n_rows"],
            "scale": cells["scale"],
        },
        index=cells.index,
    )
    order = keys.sort_values(list(keys.columns), kind="stable", na_position="last").index
    return cells.loc[order]


def breaks_frame(sweep, records: list[dict], implementations: dict) -> pd.DataFrame:
    """The breaks table of a sweep from its journal records (their loss cells) and the sweep's
    implementations (runner.compile_implementations); the runner writes it as breaks.parquet/csv."""
    from harness.sweep.runner import bases  # the runner calls this module: imported when used

    started, cpu = time.perf_counter(), time.process_time()
    cells = plain_cells(pd.DataFrame([r["cell"] for r in records]))
    if cells.empty:
        return pd.DataFrame(columns=list(BREAK_COLUMNS))
    cells = grid_order(cells, sweep, implementations)
    draws = {(family, base.z.shape[1]): base for family, base in bases(sweep)}
    rows = []
    for (family, n_classes, dtype), of_input in cells.groupby(["family", "n_classes", "dtype"], sort=False):
        stream = Inputs(family, draws[(family, n_classes)], sweep.label, dtype)
        for (framework, path), group in of_input.groupby(["framework", "path"], sort=False):
            for _, combination in group.groupby(["device", "n_rows"], sort=False):
                combination = combination.sort_values("scale", kind="stable").reset_index(drop=True)
                rows.append(break_row(combination, implementations[(framework, path)], stream) | PLAIN)
    frame = pd.DataFrame(rows, columns=list(BREAK_COLUMNS))
    log.info(
        "bisection: %d of %d combinations, %d runs, %.1f s (%.1f s of CPU)",
        int((frame["n_bisection_runs"] > 0).sum()),
        len(frame),
        int(frame["n_bisection_runs"].sum()),
        time.perf_counter() - started,
        time.process_time() - cpu,
    )
    return frame
