"""The pipeline of one run: measure (journal), bisect, time, then write every table, plot and the report.

The one place where the sweep layer meets the outputs layer (harness.sweep never imports
harness.outputs, and outputs never import backends or paths). `harness.api` and the command line
call `run`; `harness.tools.merge` calls `write_results` for merged shards. It is also the one
writer of a run's tables (`write_tables`: errors, grad_errors, row_errors, timings, breaks) and of
`summary.md` (`write_summary`); the outputs modules build them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from harness import backends
from harness.outputs import edge_tables, figures, head_tables, heatmaps, pareto, report, tables
from harness.package import study
from harness.paths import custom as custom_paths
from harness.sweep import bisect, edge_runner, head_runner, journal, named_bisect, workers
from harness.sweep.config import SweepConfig
from harness.sweep.runner import compile_implementations, name_order, sweep_cells
from harness.timing import head as head_timing
from harness.timing import named as named_timing
from harness.timing import stage as timing

log = logging.getLogger(__name__)


def sweep_errors(sweep: SweepConfig) -> pd.DataFrame:
    """The errors table of a sweep, in memory: one row per cell."""
    cells = []
    sweep_cells(sweep, lambda record: cells.append(record["cell"]))
    return tables.errors_frame(cells, names=name_order(sweep.loss))


def study_summary(sweep: SweepConfig, run_dir: Path) -> str:
    """Text from experiments/<experiment>.py's `summarize(run_dir)`, for studies that have one."""
    module = study(sweep.experiment)
    return module.summarize(run_dir) if module is not None else ""


def run(sweep: SweepConfig, run_dir: Path, running: list | None = None) -> pd.DataFrame:
    """Measure the sweep (the cells its journal lacks) and write tables, summary and plots into run_dir.
    `running`: the accuracy workers already started for it (harness.sweep.workers.start)."""
    if sweep.kind == "edge_cases":  # what each framework returns on edge cases
        frame = edge_tables.write_results(sweep, run_dir, edge_runner.measure(sweep), edge_runner.NAMES)
        report.build_report(run_dir)
        return frame
    versions = ", ".join(f"{k} {v}" for f in sweep.frameworks for k, v in backends.load(f).versions().items())
    where = ", ".join(f"{f} on {backends.row_device(f, sweep.device)}" for f in sweep.frameworks)
    log.info("sweep %s: %d cells; %s (%s)", sweep.experiment, sweep.n_cells, where, versions)
    if sweep.kind == "head":
        records = head_runner.measure(sweep, run_dir, head_timing.time_loss)
        timings = with_loss(head_timing.timings_frame(records), sweep.loss) if sweep.timing.enabled else None
        return write_head_results(sweep, run_dir, records, timings)
    cells = journal.Journal(run_dir)
    try:
        if cells.done:
            log.info("resuming: %d of %d cells already done", len(cells.done), sweep.n_cells)
        implementations = compile_implementations(sweep)  # once: the bisection reuses JAX's compiled paths
        workers.measure_grid(sweep, cells.append, frozenset(cells.done), implementations, running)
    finally:
        cells.close()
    errors = write_error_tables(sweep, run_dir, cells.records)
    timings = time_paths(sweep) if sweep.timing.enabled else None  # on a quiet machine: nothing drawn yet
    write_tables(run_dir, timings=timings)
    with figures.drawn_beside(run_dir, pays=figures_beside(sweep)):  # on the core the bisection leaves idle
        if sweep.named:
            breaks = named_bisect.breaks_frame(sweep, cells.records)
        else:
            breaks = bisect.breaks_frame(sweep, cells.records, implementations)  # before the breakdown reads it
        write_tables(run_dir, breaks=breaks)
        heatmaps.write_heatmaps(errors, run_dir)
    return write_summary_and_report(sweep, run_dir, errors)


BESIDE_MIN_CELLS = 500


def figures_beside(sweep: SweepConfig) -> bool:
    """Whether the figures are drawn by a second process while the bisection and heatmaps run: where that
    work outlasts the second process's start (Python and matplotlib), for grids of BESIDE_MIN_CELLS cells
    or more, or of enough logits that accuracy workers pay (workers.second_process_pays)."""
    return sweep.n_cells >= BESIDE_MIN_CELLS or workers.second_process_pays(sweep)


def time_paths(sweep: SweepConfig) -> pd.DataFrame:
    """The timing stage: every framework/path/dtype at the timing sizes, on the accuracy stage's bits."""
    settings = sweep.timing
    log.info("timing %d sizes, %d threads", len(sweep.timing_sizes), settings.threads)
    if sweep.named:  # a loss measured on named arrays, timed on its own inputs
        customs = custom_paths.named_callables(sweep.custom_paths)
        return with_loss(named_timing.time_sweep(sweep, custom_callables=customs), sweep.loss)
    timings = timing.time_sweep(
        sweep.frameworks,
        sweep.paths,
        sweep.dtypes,
        sweep.timing_sizes,
        sweep.seed,
        settings.threads,
        settings.budget_s,
        settings.rel_iqr_target,
        sweep.progress,
        min_blocks=settings.min_blocks,
        device=sweep.device,
        custom_callables=custom_paths.callables(custom_paths.parse(sweep.custom_paths)),
        chunk_size=sweep.chunk_size,
        block_size=sweep.block_size,
    )
    return with_loss(timings, sweep.loss)


def with_loss(timings: pd.DataFrame, loss: str) -> pd.DataFrame:
    """The timings with the key column every table opens with, the loss measured."""
    timings.insert(0, "loss", loss)
    return timings


def write_results(sweep: SweepConfig, run_dir: Path, records: list[dict], timings=None) -> pd.DataFrame:
    """Tables, summary, plots and the study's summary, from the journal's records (and timings)."""
    errors = write_error_tables(sweep, run_dir, records)
    write_tables(run_dir, timings=timings)
    figures.draw(run_dir)
    heatmaps.write_heatmaps(errors, run_dir)
    return write_summary_and_report(sweep, run_dir, errors)


def write_error_tables(sweep: SweepConfig, run_dir: Path, records: list[dict]) -> pd.DataFrame:
    """errors (and grad_errors, row_errors where the sweep asks) from the journal's records."""
    names = name_order(sweep.loss)
    errors = tables.errors_frame([r["cell"] for r in records], names=names)
    grad_errors = tables.grad_errors_frame(records, names) if sweep.gradient else None
    row_errors = tables.row_errors_frame(records, names) if sweep.row_errors else None
    write_tables(run_dir, errors=errors, grad_errors=grad_errors, row_errors=row_errors)
    return errors


def write_head_results(sweep: SweepConfig, run_dir: Path, records: list[dict], timings) -> pd.DataFrame:
    """The head stage's errors, grad_errors, timings, summary, pareto plots and report."""
    names = head_runner.NAMES
    errors = head_tables.errors_frame(records, names)
    grad_errors = head_tables.grad_errors_frame(records, names) if sweep.gradient else None
    write_tables(run_dir, errors=errors, grad_errors=grad_errors, timings=timings)
    if timings is not None:
        pareto.write_pareto_plots(errors, timings, run_dir / "plots")
    write_summary(run_dir, head_tables.head_summary(errors, sweep.experiment))
    report.build_report(run_dir, sweep.bits_lost_limit)
    return errors


def write_tables(run_dir: Path, **frames: pd.DataFrame | None) -> None:
    """The one writer of a run's tables: each frame given (None: not computed) as NAME.parquet and NAME.csv."""
    for name, frame in frames.items():
        if frame is not None:
            tables.write_table(frame, run_dir / name)


def write_summary(run_dir: Path, summary: str) -> None:
    """The one writer of summary.md (printed too; by a multirun's job, one line naming it)."""
    tables.write_text(summary, run_dir / "summary.md")
    print(tables.printed_summary(run_dir, summary))


def write_summary_and_report(sweep: SweepConfig, run_dir: Path, errors: pd.DataFrame) -> pd.DataFrame:
    """Summary, the study's summary and the report, once every table, the plots
    (harness.outputs.figures) and the heatmaps are in run_dir."""
    breaks = run_dir / "breaks.parquet"  # the bisected breaks, where the run has them
    breaks = pd.read_parquet(breaks) if breaks.is_file() else None
    write_summary(run_dir, tables.summary_markdown(errors, sweep, breaks))
    study = study_summary(sweep, run_dir)
    if study and not tables.in_multirun(run_dir):  # a multirun's job: its merge prints the summaries once
        print(study)
    _, html = report.build_report(run_dir, sweep.bits_lost_limit, draw_heatmaps=False)
    log.info("results in %s (report: %s)", run_dir, html.name)
    return errors
