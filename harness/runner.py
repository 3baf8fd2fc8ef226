"""The runner: walks the grid, measures each cell, and writes the run's results.

It is the only place that loops over the grid and the only place that writes results. Each
input is made once per (family, size, scale), rounded once per dtype, and its exact reference is
computed once, before any framework sees it.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from harness import inputs, metrics, paths, plots, tables
from harness.config import SweepConfig, given_draw
from harness.dtypes import DTYPES, FloatFormat, round_to
from harness.reference import exact_cross_entropy

log = logging.getLogger(__name__)


def failure_row(exc: BaseException) -> dict:
    status = metrics.UNSUPPORTED if paths.is_unsupported(exc) else metrics.ERROR
    first_line = (str(exc).strip().splitlines() or [""])[0][:300]
    return {"status": status, "message": f"{type(exc).__name__}: {first_line}"}


def compute(fn, native, module, dtype: str) -> tuple[np.ndarray, str]:
    """Run one implementation; the loss as float64 in `dtype`, and a note if it came back in another."""
    values, returned = module.to_numpy(fn(*native))
    if returned == dtype:
        return values, ""
    return round_to(values, dtype).astype(np.float64), f"returned {returned}; rounded to {dtype}"


def row_errors_frame(cell: dict, labels, computed, hi, lo, fmt: FloatFormat) -> pd.DataFrame:
    """One row per logit row of a cell: the exact and computed loss and their error."""
    keys = {k: cell[k] for k in tables.KEY_COLUMNS}
    return pd.DataFrame(
        keys
        | {
            "row": np.arange(len(hi)),
            "label": labels,
            "exact_loss": hi,
            "computed": computed,
            "abs_err": metrics.abs_error(computed, hi, lo),
            "ulp_err": metrics.ulp_error(computed, hi, lo, fmt),
        }
    )


def measure_input(logits, labels, dtype: str, implementations: dict, key: dict, row_sink: list | None = None):
    """Rows for every (framework, path) on one input rounded to one dtype."""
    fmt = DTYPES[dtype]
    rounded = round_to(logits, dtype)
    held = rounded.astype(np.float64)  # exact: what the reference sees
    cell = key | {"dtype": dtype, "max_logit": float(held.max())}
    if not np.isfinite(held).all():
        status = {"status": metrics.INPUT_INF, "message": f"logits overflow {dtype} (|x| > {fmt.max_finite:.6g})"}
        for framework, path in implementations:
            yield cell | {"framework": framework, "path": path} | status
        return
    hi, lo = exact_cross_entropy(held, labels)
    cell["max_exact_loss"] = float(hi.max())
    for framework, by_path in _group_by_framework(implementations).items():
        module = paths.load(framework)
        try:
            native = module.to_native(rounded, labels)
        except Exception as exc:
            for path in by_path:
                yield cell | {"framework": framework, "path": path} | failure_row(exc)
            continue
        for path, fn in by_path.items():
            row = cell | {"framework": framework, "path": path}
            try:
                computed, note = compute(fn, native, module, dtype)
            except Exception as exc:  # a framework that breaks is a row, never a crash
                yield row | failure_row(exc)
                continue
            if row_sink is not None:
                row_sink.append(row_errors_frame(row, labels, computed, hi, lo, fmt))
            yield row | metrics.cell_metrics(computed, hi, lo, fmt) | {"message": note}


def _group_by_framework(implementations: dict) -> dict:
    grouped: dict = {}
    for (framework, path), fn in implementations.items():
        grouped.setdefault(framework, {})[path] = fn
    return grouped


def compile_implementations(sweep: SweepConfig) -> dict:
    """(framework, path) -> callable ready to run (jitted for JAX)."""
    implementations = {}
    for framework in sweep.frameworks:
        module = paths.load(framework)
        for path in sweep.paths:
            implementations[(framework, path)] = module.compile(module.PATHS[path])
    return implementations


def bases(sweep: SweepConfig):
    """(family, base draw) for every family and size of the sweep."""
    for family in sweep.families:
        for n_classes in sweep.sizes(family):
            if n_classes is None:
                yield family, given_draw(sweep, family)
            else:
                yield family, inputs.draw(sweep.n_rows, n_classes, sweep.seed)


def sweep_errors(sweep: SweepConfig, row_sink: list | None = None) -> pd.DataFrame:
    """The errors table of a sweep: one row per cell. Per-row errors go to row_sink if given."""
    implementations = compile_implementations(sweep)
    rows = []
    with tqdm(total=sweep.n_cells, disable=not sweep.progress, desc="cells", unit="cell") as bar:
        for family, base in bases(sweep):
            for scale in sweep.scales:
                logits = inputs.make_logits(family, scale, base)
                labels = inputs.choose_labels(logits, base, sweep.label)
                n_rows, n_classes = logits.shape
                key = {"family": family, "scale": scale, "n_rows": n_rows, "n_classes": n_classes}
                for dtype in sweep.dtypes:
                    bar.set_postfix_str(f"{family} C={n_classes} scale={scale:.3g} {dtype}")
                    rows.extend(measure_input(logits, labels, dtype, implementations, key, row_sink))
                    bar.update(len(implementations))
    return tables.errors_frame(rows)


def study_summary(sweep: SweepConfig, run_dir: Path) -> str:
    """Text from experiments/<experiment>.py's `summarize(run_dir)`, for studies that have one."""
    name = f"experiments.{sweep.experiment}"
    if importlib.util.find_spec("experiments") is None or importlib.util.find_spec(name) is None:
        return ""
    return importlib.import_module(name).summarize(run_dir)


def run(sweep: SweepConfig, run_dir: Path) -> pd.DataFrame:
    """Measure the sweep and write its tables, summary and plots into run_dir."""
    versions = ", ".join(paths.load(f).version() for f in sweep.frameworks)
    log.info("sweep %s: %d cells (%s)", sweep.experiment, sweep.n_cells, versions)
    row_sink = [] if sweep.row_errors else None
    errors = sweep_errors(sweep, row_sink)
    tables.write_table(errors, run_dir / "errors")
    if row_sink is not None:
        tables.write_table(pd.concat(row_sink, ignore_index=True), run_dir / "row_errors")
    summary = tables.summary_markdown(errors, sweep)
    tables.write_text(summary, run_dir / "summary.md")
    plots.write_error_plots(errors, run_dir / "plots")
    print(summary)
    study = study_summary(sweep, run_dir)
    if study:
        print(study)
    log.info("results in %s", run_dir)
    return errors
