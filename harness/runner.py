"""The runner: walks the grid, measures each cell, and writes the run's results.

It is the only place that loops over the grid and the only place that writes results. Each
input is made once per (family, scale), rounded once per dtype, and its exact reference is
computed once, before any framework sees it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from harness import inputs, metrics, paths, plots, tables
from harness.config import SweepConfig
from harness.dtypes import DTYPES, FloatFormat, round_to
from harness.reference import exact_cross_entropy

log = logging.getLogger(__name__)


def failure_row(exc: BaseException) -> dict:
    status = metrics.UNSUPPORTED if paths.is_unsupported(exc) else metrics.ERROR
    first_line = (str(exc).strip().splitlines() or [""])[0][:300]
    return {"status": status, "message": f"{type(exc).__name__}: {first_line}"}


def measure_cell(fn, native, module, hi, lo, fmt: FloatFormat) -> dict:
    """Run one implementation on one input and score it against the exact loss."""
    try:
        values, returned = module.to_numpy(fn(*native))
    except Exception as exc:  # a framework that breaks is a row, never a crash
        return failure_row(exc)
    message = ""
    if returned != fmt.name:
        values = round_to(values, fmt.name).astype(np.float64)
        message = f"returned {returned}; rounded to {fmt.name}"
    return metrics.cell_metrics(values, hi, lo, fmt) | {"message": message}


def measure_input(logits: np.ndarray, labels: np.ndarray, dtype: str, implementations, key: dict):
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
            yield cell | {"framework": framework, "path": path} | measure_cell(fn, native, module, hi, lo, fmt)


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


def sweep_errors(sweep: SweepConfig) -> pd.DataFrame:
    """The errors table of a sweep: one row per cell."""
    implementations = compile_implementations(sweep)
    base = inputs.draw(sweep.n_rows, sweep.n_classes, sweep.seed)
    rows = []
    per_input = len(implementations)
    with tqdm(total=sweep.n_cells, disable=not sweep.progress, desc="cells", unit="cell") as bar:
        for family in sweep.families:
            for scale in sweep.scales:
                logits = inputs.make_logits(family, scale, base)
                labels = inputs.choose_labels(logits, base, sweep.label)
                key = {"family": family, "scale": scale, "n_rows": sweep.n_rows, "n_classes": sweep.n_classes}
                for dtype in sweep.dtypes:
                    bar.set_postfix_str(f"{family} scale={scale:.3g} {dtype}")
                    rows.extend(measure_input(logits, labels, dtype, implementations, key))
                    bar.update(per_input)
    return tables.errors_frame(rows)


def run(sweep: SweepConfig, run_dir: Path) -> pd.DataFrame:
    """Measure the sweep and write errors.{parquet,csv}, summary.md and plots/ into run_dir."""
    versions = ", ".join(paths.load(f).version() for f in sweep.frameworks)
    log.info("sweep %s: %d cells (%s)", sweep.experiment, sweep.n_cells, versions)
    errors = sweep_errors(sweep)
    tables.write_table(errors, run_dir / "errors")
    summary = tables.summary_markdown(errors, sweep)
    tables.write_text(summary, run_dir / "summary.md")
    for family in sweep.families:
        plots.error_vs_scale(errors, family, run_dir / "plots" / f"error_vs_scale_{family}.png")
    print(summary)
    log.info("results in %s", run_dir)
    return errors
