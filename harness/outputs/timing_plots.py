"""Timing plots, drawn from the timings (and errors) tables only: no number is recomputed.

- `timing_bars`: median time per call of each path, grouped by framework, with IQR bars; one
  panel per size.
- `accuracy_vs_time`: the trade-off, one panel per dtype: each framework/path a point at
  (median time, worst correct bits over the scales where it does not break).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from harness.dtypes import DTYPES
from harness.outputs import tables
from harness.outputs.plots import dtype_order
from harness.outputs.styles import NEUTRAL, fitted_legend, framework_marks, new_figure, path_colors, save, wrap
from harness.sweep import metrics
from harness.sweep.metrics import correct_bits

SIZE_KEY = ["n_rows", "n_classes"]


def _sizes(frame: pd.DataFrame) -> list[tuple[int, int]]:
    sizes = frame[SIZE_KEY].drop_duplicates().itertuples(index=False, name=None)
    return sorted((int(r), int(c)) for r, c in sizes)


def _log_time_axis(axis) -> None:
    """Log scale with ticks at 1, 2, 5 x 10^k labelled plainly, so a narrow range still has labels."""
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def timing_bars_figure(timings: pd.DataFrame, dtype: str) -> Figure:
    """Median ms per call of each path (bars, colour by path) grouped by framework, IQR as error bars
    (median +- IQR/2), log scale; one panel per (n_rows, n_classes). Cells not timed are labelled."""
    colors = path_colors(timings["path"])
    cells = timings[timings["dtype"] == dtype]
    sizes = _sizes(cells)
    frameworks = list(dict.fromkeys(cells["framework"]))
    path_names = list(dict.fromkeys(cells["path"]))
    width = 0.8 / max(len(path_names), 1)
    fig = new_figure(max(6.4, max(4.5, 1.6 * len(frameworks) + 1.5) * len(sizes)), 5.2)
    axes = fig.subplots(1, len(sizes), squeeze=False)[0]
    for ax, (n_rows, n_classes) in zip(axes, sizes, strict=True):
        of_size = cells[(cells["n_rows"] == n_rows) & (cells["n_classes"] == n_classes)]
        ok = of_size[of_size["status"] == metrics.OK]
        floor = ok["median_s"].min() * 1e3 / 3 if not ok.empty else 1e-3
        for p, path in enumerate(path_names):
            for f, framework in enumerate(frameworks):
                cell = of_size[(of_size["framework"] == framework) & (of_size["path"] == path)]
                x = f + (p - (len(path_names) - 1) / 2) * width
                if cell.empty:
                    continue
                row = cell.iloc[0]
                if row["status"] != metrics.OK:
                    ax.text(x, floor, row["status"], rotation=90, ha="center", va="bottom", fontsize=7)
                    continue
                ax.bar(
                    x,
                    row["median_s"] * 1e3,
                    width=width * 0.92,
                    color=colors[path],
                    yerr=row["iqr_s"] * 1e3 / 2,
                    capsize=2,
                    error_kw={"linewidth": 0.8},
                )
        bandwidth = of_size["bandwidth_gb_per_s"].dropna()
        threads = of_size["threads"].dropna()
        subtitle = []
        if not threads.empty:
            subtitle.append(f"{int(threads.iloc[0])} thread(s)")
        if not bandwidth.empty:
            subtitle.append(f"memory {bandwidth.iloc[0]:.1f} GB/s")
        ax.set_title(f"{n_rows} x {n_classes}" + (f"\n{', '.join(subtitle)}" if subtitle else ""), fontsize=10)
        ax.set_xticks(range(len(frameworks)), frameworks)
        ax.set_yscale("log")
        _log_time_axis(ax.yaxis)
        ax.set_ylim(bottom=floor)
        ax.grid(True, axis="y", which="major", alpha=0.3)
    axes[0].set_ylabel("median time per call (ms), bars: IQR")
    fitted_legend(fig, [Patch(color=colors[p], label=p) for p in path_names])
    fig.suptitle(wrap(f"{tables.loss_words(timings).capitalize()} time per call, {dtype}", fig, 12), fontsize=12)
    return fig


def timing_bars(timings: pd.DataFrame, dtype: str, out_path: Path) -> None:
    save(timing_bars_figure(timings, dtype), out_path)


def worst_correct_bits(cells: pd.DataFrame, precision: int) -> float:
    """Fewest correct bits over a path's cells that did not fail (ok, or a correctly rounded inf or 0;
    NaN if there is none)."""
    ok = cells[cells["status"].isin(metrics.GOOD)]
    if ok.empty:
        return float("nan")
    return float(np.nanmin(correct_bits(ok["max_ulp_err"].to_numpy(), precision)))


def _timing_size(errors: pd.DataFrame, timings: pd.DataFrame) -> tuple[int, int]:
    """The errors' size if it was timed, else the largest timed size."""
    timed = _sizes(timings)
    for size in _sizes(errors):
        if size in timed:
            return size
    return max(timed, key=lambda s: s[0] * s[1])


def accuracy_vs_time_figure(errors: pd.DataFrame, timings: pd.DataFrame) -> Figure:
    """One panel per dtype: a point per framework/path at (median time, worst correct bits over the
    scales where its status is ok). Filled: never breaks; hollow with a cross: breaks (inf, nan or
    error) at some scale. Colour by path, marker by framework."""
    n_rows, n_classes = _timing_size(errors, timings)
    timed = timings[
        (timings["n_rows"] == n_rows) & (timings["n_classes"] == n_classes) & (timings["status"] == metrics.OK)
    ]
    same_size = errors[(errors["n_rows"] == n_rows) & (errors["n_classes"] == n_classes)]
    errors = same_size if not same_size.empty else errors
    line_key = ["framework", "path", "dtype"]
    lines = dict(list(errors[[*line_key, "status", "max_ulp_err"]].groupby(line_key, sort=False)))
    no_cells = errors.iloc[:0]
    dtypes = [d for d in dtype_order(timed["dtype"]) if d in set(errors["dtype"])]
    colors, marks = path_colors(timed["path"]), framework_marks(timed["framework"])
    fig = new_figure(max(6.4, 4.0 * max(len(dtypes), 1)), 5.4)
    axes = fig.subplots(1, max(len(dtypes), 1), squeeze=False)
    for ax, dtype in zip(axes[0], dtypes, strict=False):
        precision = DTYPES[dtype].precision
        for row in timed[timed["dtype"] == dtype].itertuples(index=False):
            cells = lines.get((row.framework, row.path, dtype), no_cells)
            bits = worst_correct_bits(cells, precision)
            if np.isnan(bits):
                continue
            breaks = cells["status"].isin(metrics.FAILED).any()
            color = colors[row.path]
            ax.scatter(
                row.median_s * 1e3,
                bits,
                marker=marks[row.framework][1],
                s=46,
                facecolors="none" if breaks else color,
                edgecolors=color,
                linewidths=1.4,
            )
            if breaks:
                ax.scatter(row.median_s * 1e3, bits, marker="x", s=18, color=color, linewidths=1.0)
        ax.axhline(precision, color="0.5", linewidth=0.8, linestyle=":")
        ax.set(xscale="log", ylim=(-0.5, precision + 1.5), title=f"{dtype} (p = {precision})")
        _log_time_axis(ax.xaxis)
        ax.set_xlabel(f"median time per call (ms), {n_rows} x {n_classes}")
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].set_ylabel("worst correct bits over non-breaking scales")
    handles: list = [Patch(color=c, label=p) for p, c in colors.items()]
    handles += [Line2D([], [], linestyle="", marker=m, color=NEUTRAL, label=f) for f, (_, m) in marks.items()]
    handles += [
        Line2D([], [], linestyle="", marker="h", markersize=8, color="0.3", label="filled: never breaks"),
        Line2D([], [], linestyle="", marker="h", markersize=8, mfc="none", color="0.3", label="hollow: breaks"),
    ]
    fitted_legend(fig, handles)
    title = "Accuracy vs time: up and to the left is better (dotted line: all p bits correct)"
    fig.suptitle(wrap(title, fig, 12), fontsize=12)
    return fig


def accuracy_vs_time(errors: pd.DataFrame, timings: pd.DataFrame, out_path: Path) -> None:
    save(accuracy_vs_time_figure(errors, timings), out_path)


def write_timing_plots(errors: pd.DataFrame, timings: pd.DataFrame, plots_dir: Path) -> list[Path]:
    """timing_<dtype>.png for every dtype timed, and accuracy_vs_time.png."""
    written = []
    for dtype in timings["dtype"].unique():
        written.append(plots_dir / f"timing_{dtype}.png")
        timing_bars(timings, dtype, written[-1])
    written.append(plots_dir / "accuracy_vs_time.png")
    accuracy_vs_time(errors, timings, written[-1])
    return written
