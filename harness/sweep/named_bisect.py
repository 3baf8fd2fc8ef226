"""Breakpoints of a loss measured on named arrays, located exactly (harness.sweep.bisect does it for
cross-entropy): for every framework/path/dtype/family/size/settings whose grid has a good cell just before
its first failing one (inf, nan, error, negative), the scale is bisected between the two, in log scale, on
the same draw rounded the same way, until the bracket is within 1e-4 relative. The theory quantities the
loss's entry declares (harness.losses: binary cross-entropy's max_logit and min_logit, KL's smallest
log-probabilities) are recorded at both ends, where harness.outputs.named_breakdown compares them with
the loss's thresholds.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from harness import losses
from harness.dtypes import DTYPES, round_to
from harness.sweep import metrics, named_inputs
from harness.sweep.bisect import (
    FAILS_FIRST,
    GROUP_COLUMNS,
    NEVER_FAILS,
    NO_GOOD_BEFORE,
    REL_TOL,
    bisect_scale,
    plain_cells,
)
from harness.sweep.calls import call

log = logging.getLogger(__name__)
NOISE = "grid only: where a sum turns negative is decided by rounding noise, not by a threshold to bisect"
QUANTITY_BITS = 24  # the exact loss's precision for theory's quantities and for telling a correct inf


def columns(entry) -> tuple[str, ...]:
    """The breaks table's columns for a loss: cross-entropy's group, its settings, the bracket, its quantities."""
    return (
        GROUP_COLUMNS
        + ("reduction",)
        + entry.setting_names
        + ("bisection", "n_bisection_steps", "n_bisection_runs", "break_scale_lo", "break_scale_hi", "break_status")
        + tuple(f"{q}_{end}" for q in entry.quantities for end in ("lo", "hi"))
        + ("accumulation",)
    )


class Stream:
    """One combination's inputs at any scale: the family's arrays under its settings, rounded to the dtype."""

    def __init__(self, entry, family: str, base, settings: dict, dtype: str):
        self.entry, self.family, self.base, self.settings, self.dtype = entry, family, base, settings, dtype
        self.make = entry.load("inputs")
        self.kept: dict = {}
        self.exacts: dict = {}  # (scale, precision) -> the exact loss, shared by the paths bisected on the same draw

    def at(self, scale: float) -> dict:
        """The rounded arrays at a scale (by name), kept for the bracket's other runs."""
        if scale not in self.kept:
            made = self.make.arrays(self.family, self.base, scale, self.settings)
            self.kept[scale] = {name: round_to(made[name], self.dtype) for name in self.entry.arrays}
        return self.kept[scale]

    def exact(self, scale: float, precision: int | None = None):
        """The exact loss of the rounded inputs at a scale, correctly rounded to `precision` bits (default:
        the dtype's); kept, since the paths of one draw bisect the same brackets."""
        precision = precision or DTYPES[self.dtype].precision
        if (scale, precision) not in self.exacts:
            held = [self.at(scale)[name].astype(np.float64) for name in self.entry.arrays]
            options = named_inputs.path_options(self.entry, self.settings)
            self.exacts[scale, precision] = self.entry.load("exact")(*held, precision, **options)
        return self.exacts[scale, precision]

    def quantities(self, scale: float) -> dict:
        """Theory's quantities at a scale, from the exact loss to 24 bits: what they need (the
        references take their float64 routes there, good to 2**-48)."""
        rounded = self.at(scale)
        exact = self.exact(scale, min(DTYPES[self.dtype].precision, QUANTITY_BITS))
        values = np.ldexp(exact.hi, exact.exponent).ravel()
        held = {name: array.astype(np.float64) for name, array in rounded.items()}
        return self.entry.load("quantities")(held, values, self.settings)


def status_at(paths: named_inputs.Paths, stream: Stream, framework: str, path: str, device: str, scale: float) -> str:
    """The status the grid would give the path on this input (the exact loss run only where it returns inf)."""
    from harness import backends

    backend = backends.load(framework)
    fmt = DTYPES[stream.dtype]
    options = named_inputs.path_options(stream.entry, stream.settings)
    rounded = stream.at(scale)
    unsupported = paths.unsupported(framework, path, options)
    with backend.dtype_scope(stream.dtype):
        fn = None if unsupported else paths.callables(framework, path, fmt, options, device)[0]

        def handed_over():
            return fn(*[backend.transfer(rounded[name], device) for name in stream.entry.arrays])

        loss = call(handed_over, (), backend, stream.dtype, unsupported)
    if loss.error is not None:
        return loss.failure["status"]
    computed = loss.values.ravel()
    if np.isinf(computed).any() and not np.isnan(computed).any():
        held = {name: array.astype(np.float64) for name, array in rounded.items()}
        rough = stream.make.estimate(held, stream.settings).ravel()  # the loss's float64 estimate
        if (rough[np.isinf(computed)] < fmt.max_finite / 2).any():  # far from rounding to inf: a break
            return metrics.INF
        exact = stream.exact(scale)
        hi, lo = exact.hi.ravel(), exact.lo.ravel()
        return named_inputs.loss_status(computed, hi, lo, fmt, np.broadcast_to(exact.exponent, exact.hi.shape).ravel())
    if np.isnan(computed).any():
        return metrics.NAN
    return metrics.NEGATIVE if (computed < 0).any() else metrics.OK


def break_row(cells: pd.DataFrame, paths: named_inputs.Paths, stream: Stream) -> dict:
    """The breaks row of one combination, its cells sorted by scale."""
    entry = stream.entry
    first = cells.iloc[0]
    framework, path, dtype, device = (first[c] for c in ("framework", "path", "dtype", "device"))
    row = {c: first[c] for c in GROUP_COLUMNS + entry.setting_names} | {"reduction": "none"}
    declared = entry.load("paths").ENTRIES_BY_NAME.get(path)
    row["accumulation"] = declared.accumulation.get(framework, {}).get(dtype, dtype) if declared else ""
    scales = cells["scale"].to_numpy(dtype=np.float64)
    status = cells["status"].to_numpy()
    failing = np.flatnonzero(np.isin(status, metrics.FAILED))
    empty = {"n_bisection_steps": 0, "n_bisection_runs": 0, "break_scale_lo": np.nan, "break_scale_hi": np.nan}
    nothing = {f"{q}_{end}": np.nan for q in entry.quantities for end in ("lo", "hi")}
    if not failing.size:
        return row | empty | nothing | {"bisection": NEVER_FAILS, "break_status": ""}
    at = int(failing[0])
    if at == 0 or status[at - 1] not in metrics.GOOD or status[at] == metrics.NEGATIVE:
        note = FAILS_FIRST if at == 0 else NO_GOOD_BEFORE
        note = NOISE if status[at] == metrics.NEGATIVE and at > 0 and status[at - 1] in metrics.GOOD else note
        hi_end = {f"{q}_hi": cells[q].iloc[at] for q in entry.quantities if q in cells}
        hi_end |= {f"{q}_lo": cells[q].iloc[at - 1] for q in entry.quantities if q in cells and at > 0}
        found = {"bisection": note, "break_scale_hi": scales[at], "break_status": status[at]}
        found |= {"break_scale_lo": scales[at - 1]} if note == NOISE else {}
        return row | empty | nothing | hi_end | found
    statuses = {True: status[at]}
    runs = 0

    def fails(scale: float) -> bool:
        nonlocal runs
        runs += 1
        found = status_at(paths, stream, framework, path, device, scale)
        failed = found in metrics.FAILED
        statuses[failed] = found
        return failed

    lo, hi, steps = bisect_scale(fails, scales[at - 1], scales[at], REL_TOL)
    ends = {f"{q}_{end}": v for end, s in (("lo", lo), ("hi", hi)) for q, v in stream.quantities(s).items()}
    return (
        row
        | ends
        | {
            "bisection": f"bisected: {runs} runs, {steps} halvings",
            "n_bisection_steps": steps,
            "n_bisection_runs": runs,
            "break_scale_lo": lo,
            "break_scale_hi": hi,
            "break_status": statuses[True],
        }
    )


def breaks_frame(sweep, records: list[dict]) -> pd.DataFrame:
    """The breaks table of a named-array loss's sweep from its journal records."""
    entry = losses.entry(sweep.loss)
    names = columns(entry)
    cells = pd.DataFrame([r["cell"] for r in records])
    cells = plain_cells(cells)  # reduced, weighted and masked cells keep the grid's brackets
    if cells.empty:
        return pd.DataFrame(columns=list(names))
    from harness.paths import custom as custom_paths

    paths = named_inputs.Paths(sweep.loss, custom_paths.named_callables(sweep.custom_paths))
    settings_columns = list(entry.setting_names)
    bases: dict = {}  # family -> (n_rows, n_classes) -> its base draw or given arrays
    rows = []
    by = ["family", "n_rows", "n_classes", "dtype", *settings_columns]
    for key, of_input in cells.groupby(by, sort=False, dropna=False):
        family, n_rows, n_classes, dtype, *values = key
        settings = {name: (None if _missing(v) else v) for name, v in zip(settings_columns, values, strict=True)}
        if family not in bases:
            bases[family] = {(r, c): base for r, c, base in named_inputs.bases(sweep, entry, family)}
        stream = Stream(entry, family, bases[family][int(n_rows), int(n_classes)], settings, dtype)
        for _, combination in of_input.groupby(["framework", "path", "device"], sort=False):
            combination = combination.sort_values("scale", kind="stable").reset_index(drop=True)
            rows.append(break_row(combination, paths, stream))
    frame = pd.DataFrame(rows, columns=list(names))
    log.info("bisection: %d of %d combinations", int((frame["n_bisection_runs"] > 0).sum()), len(frame))
    return frame


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))
