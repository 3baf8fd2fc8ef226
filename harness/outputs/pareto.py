"""The accuracy / time / memory front of the head paths, from the errors and timings tables only.

A point is one framework/path/mode at one dtype and class count: its median time per loss call and
the memory one call needs (`peak_bytes`) from `timings`, and its worst correct bits over the cells
of `errors` where it did not break (every scale and reduction). A point is on the front when no
other point of its panel is at least as fast, as small and as accurate, and better in one of them.
`plots/pareto_<dtype>.png` draws them (x median time, y peak bytes, colour worst correct bits);
`front_section` names the front for the report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from harness.dtypes import DTYPES
from harness.outputs.styles import fitted_legend, framework_marks, new_figure, save
from harness.sweep import metrics

POINT_KEY = ["framework", "path", "mode", "dtype", "n_classes"]


def points(errors: pd.DataFrame, timings: pd.DataFrame) -> pd.DataFrame:
    """One row per framework/path/mode/dtype/class count that was timed: median_s, peak_bytes,
    worst_correct_bits (NaN: never ok), broke (some cell inf, nan or error), on_front."""
    timed = timings[timings["status"] == metrics.OK]
    if timed.empty or "mode" not in errors:
        return pd.DataFrame(columns=[*POINT_KEY, "median_s", "peak_bytes", "worst_correct_bits", "broke", "on_front"])
    errors = errors.assign(
        bits=[
            metrics.correct_bits(u, DTYPES[d].precision) if s in metrics.GOOD else np.nan
            for u, d, s in zip(errors["max_ulp_err"], errors["dtype"], errors["status"], strict=True)
        ],
        broke=errors["status"].isin(metrics.FAILED),
    )
    accuracy = errors.groupby(POINT_KEY, sort=False).agg(worst_correct_bits=("bits", "min"), broke=("broke", "any"))
    speed = timed.groupby(POINT_KEY, sort=False).agg(median_s=("median_s", "min"), peak_bytes=("peak_bytes", "max"))
    joined = speed.join(accuracy, how="left").reset_index()
    joined["on_front"] = False
    for _, panel in joined.groupby(["dtype", "n_classes"], sort=False):
        joined.loc[panel.index, "on_front"] = on_front(panel)
    return joined


def on_front(panel: pd.DataFrame) -> np.ndarray:
    """Whether each point is not dominated in (time lower, memory lower, bits higher)."""
    t = panel["median_s"].to_numpy(float)
    m = np.nan_to_num(panel["peak_bytes"].to_numpy(float), nan=np.inf)
    b = np.nan_to_num(panel["worst_correct_bits"].to_numpy(float), nan=-1.0)
    front = []
    for i in range(len(t)):
        no_worse = (t <= t[i]) & (m <= m[i]) & (b >= b[i])
        better = (t < t[i]) | (m < m[i]) | (b > b[i])
        front.append(not (no_worse & better).any())
    return np.array(front, dtype=bool)


def pareto_figure(cells: pd.DataFrame, dtype: str):
    """One panel per class count: x median time, y peak bytes, colour worst correct bits; front ringed."""
    sizes = sorted(cells["n_classes"].unique())
    fig = new_figure(6.4 * len(sizes), 5.6)
    axes = fig.subplots(1, len(sizes), squeeze=False)[0]
    marks = framework_marks(cells["framework"])
    precision = DTYPES[dtype].precision
    scatter = None
    for ax, n_classes in zip(axes, sizes, strict=True):
        panel = cells[cells["n_classes"] == n_classes]
        for framework, of_framework in panel.groupby("framework", sort=False):
            scatter = ax.scatter(
                of_framework["median_s"],
                of_framework["peak_bytes"].clip(lower=1),
                c=of_framework["worst_correct_bits"].fillna(0),
                cmap="viridis",
                vmin=0,
                vmax=precision,
                marker=marks[framework][1],
                s=60,
                edgecolors=np.where(of_framework["on_front"], "red", "none"),
                linewidths=1.8,
            )
            for _, p in of_framework.iterrows():
                ax.annotate(f"{p['path']} ({p['mode']})", (p["median_s"], max(p["peak_bytes"], 1)), fontsize=6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("median time per loss call (s)")
        ax.set_ylabel("peak bytes of one call (0 drawn at 1)")
        ax.set_title(f"{dtype}, {n_classes} classes", fontsize=10)
    if scatter is not None:
        fig.colorbar(scatter, ax=list(axes), label=f"worst correct bits (of {precision})")
    handles = [
        ax.scatter([], [], marker=marks[f][1], color="0.3", label=f) for f in dict.fromkeys(cells["framework"])
    ] + [ax.scatter([], [], marker="o", facecolors="none", edgecolors="red", label="on the front")]
    fitted_legend(fig, handles)
    return fig


def write_pareto_plots(errors: pd.DataFrame, timings: pd.DataFrame, plots_dir: Path) -> list[Path]:
    """plots/pareto_<dtype>.png for every dtype with timed points."""
    table = points(errors, timings)
    written = []
    for dtype in dict.fromkeys(table["dtype"]):
        out = Path(plots_dir) / f"pareto_{dtype}.png"
        save(pareto_figure(table[table["dtype"] == dtype], dtype), out)
        written.append(out)
    return written


def front_lines(table: pd.DataFrame) -> list[str]:
    """One sentence per dtype and class count naming the points on the front."""
    lines = []
    for (dtype, n_classes), panel in table.groupby(["dtype", "n_classes"], sort=False):
        front = panel[panel["on_front"]].sort_values("median_s")
        named = [
            f"{p.framework}/{p.path} ({p.mode}: {p.median_s * 1e3:.3g} ms, {p.peak_bytes / 2**20:.3g} MiB, "
            f"{'never ok' if np.isnan(p.worst_correct_bits) else f'{p.worst_correct_bits:.1f} bits'})"
            for p in front.itertuples()
        ]
        lines.append(f"- {dtype}, {n_classes} classes: " + "; ".join(named) + ".")
    return lines


def front_section(run_dir: Path) -> list[str]:
    """The report's section on the head paths' front; [] for a run without head timings."""
    run_dir = Path(run_dir)
    errors_path, timings_path = run_dir / "errors.parquet", run_dir / "timings.parquet"
    if not errors_path.is_file() or not timings_path.is_file():
        return []
    errors, timings = pd.read_parquet(errors_path), pd.read_parquet(timings_path)
    if "mode" not in errors or "mode" not in timings:
        return []
    table = points(errors, timings)
    return [
        "## The language-model head: accuracy, time and memory",
        "",
        "Paths on the front (no other path of the panel is at least as fast, as small and as accurate): "
        "median time per loss call, memory one call needs, worst correct bits over the scales and reductions.",
        "",
        *front_lines(table),
        "",
    ]
