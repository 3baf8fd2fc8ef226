"""Error plots drawn from the tidy tables only: a plot never recomputes a number.

error_vs_figure draws one panel per dtype: an error measure against scale (or n_classes), a line
per framework/path (colour = path, line style and marker = framework, see harness.outputs.styles).
Above each panel a band holds the cells whose result is not finite, a row per framework. Vertical
lines mark where theory predicts each break: the first grid value at which the table's quantity
(max_lse, max_exact_loss) passes the threshold of breakdown.threshold, per mechanism and dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from harness.dtypes import DTYPES
from harness.outputs import breakdown, tables
from harness.outputs.styles import fitted_legend, line_styles, new_figure, ordered, save, style_key, wrap
from harness.sweep import metrics


@dataclass(frozen=True)
class Measure:
    """What an error plot draws on y: a column, its label, a floor for zeros, a reference line per
    dtype, and a ceiling per dtype beyond which every bit is lost (larger values are drawn on it)."""

    column: str
    label: str
    floor: float
    reference: Callable[[str], float]
    reference_label: str
    ceiling: Callable[[str], float]


LOSS_ULPS = Measure(
    "max_ulp_err", "max ulp error", 1e-3, lambda dtype: 0.5, "0.5 ulp", lambda dtype: 2.0 ** DTYPES[dtype].precision
)
GRADIENT_ROW_REL = Measure(
    "max_row_rel_err",
    "max error / row's max |exact entry|",
    1e-20,
    lambda dtype: DTYPES[dtype].unit_roundoff,
    "unit roundoff",
    lambda dtype: 2.0,
)

NONFINITE_MARKS = {metrics.INF: ("x", "inf"), metrics.NAN: ("o", "nan"), metrics.ERROR: ("$!$", "error (raised)")}
OFF_SCALE = "^"  # an ok cell whose error passes the ceiling
THEORY_COLOR = "0.15"
THEORY_LINESTYLES = {
    (breakdown.SUM_OVERFLOW, False): (0, (1, 1.5)),
    (breakdown.TARGET_UNDERFLOW, False): (0, (5, 2)),
    (breakdown.TARGET_UNDERFLOW, True): (0, (5, 2, 1, 2)),
}
BOUND_LABEL = "error bound (Blanchard et al. 2021)"
DRAWN_COLUMNS = (  # what an error plot reads besides its axis and measure
    ("framework", "path", "dtype", "status", "bound_ulp", "mechanisms", "flushes_subnormals", "device")
    + tuple(c for columns in breakdown.THEORY_QUANTITIES.values() for c in columns)
)


def dtype_order(dtypes) -> list[str]:
    """float16, bfloat16, float32, float64 (the DTYPES order), then any other name as listed."""
    present = ordered(dtypes)
    return [d for d in DTYPES if d in present] + [d for d in present if d not in DTYPES]


# --- theory marks ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TheoryMark:
    """Theory's predicted break of one mechanism in one panel (one dtype), for the frameworks that
    flush subnormals or for those that keep them: at x, the first grid value past the threshold."""

    cause: str
    flushes: bool
    x: float
    label: str


def _flushes(cells: pd.DataFrame) -> pd.Series:
    """Whether each row's framework flushes subnormals: the table's column, else breakdown's table."""
    if "flushes_subnormals" in cells and cells["flushes_subnormals"].notna().all():
        return cells["flushes_subnormals"].astype(bool)
    devices = cells["device"] if "device" in cells else pd.Series("cpu", index=cells.index)
    return pd.Series(
        [
            breakdown.flushes_subnormals(f, d, str(v))
            for f, d, v in zip(cells["framework"], cells["dtype"], devices, strict=True)
        ],
        index=cells.index,
    )


def theory_label(cause: str, flushes: bool, paths: list[str]) -> str:
    flushed = ", subnormals flushed to zero" if flushes else ""
    return f"theory: {cause}{flushed} ({', '.join(paths)})"


def theory_marks(cells: pd.DataFrame, axis: str, dtype: str) -> list[TheoryMark]:
    """Per mechanism a path of the panel is exposed to (and per subnormal setting of the frameworks
    running it), the first `axis` value at which the table's quantity passes breakdown.threshold."""
    declared = (
        {p: breakdown.failure_mechanisms(m) or () for p, m in zip(cells["path"], cells["mechanisms"], strict=True)}
        if "mechanisms" in cells
        else {}
    )  # the path entries' mechanisms, as the table records them
    exposed = {
        cause: [p for p in ordered(cells["path"]) if cause in declared.get(p, ())]
        for cause in breakdown.THEORY_QUANTITIES
    }
    ran = cells[~cells["status"].isin(breakdown.NOT_THE_PATHS_FAILURE)]
    ran = ran.assign(flushes=_flushes(ran))
    marks = []
    for cause, paths in exposed.items():
        quantity = next((c for c in breakdown.THEORY_QUANTITIES[cause] if c in ran and ran[c].notna().any()), None)
        if not paths or quantity is None:
            continue
        of_paths = ran[ran["path"].isin(paths)]
        settings = [False] if cause == breakdown.SUM_OVERFLOW else ordered(of_paths["flushes"])
        for flushes in settings:
            rows = of_paths if cause == breakdown.SUM_OVERFLOW else of_paths[of_paths["flushes"] == flushes]
            values = rows.groupby(axis)[quantity].max().sort_index()
            passed = values.index[values.to_numpy() > breakdown.threshold(cause, dtype, flushes)]
            if len(passed):
                marks.append(TheoryMark(cause, flushes, float(passed[0]), theory_label(cause, flushes, paths)))
    return marks


# --- the figure -----------------------------------------------------------------------------


def _band(band, xs: np.ndarray, statuses: np.ndarray, row: float, color: str) -> set[str]:
    """Mark a line's cells that are not finite in its band row; return the statuses marked."""
    marked = set()
    for status, (marker, _) in NONFINITE_MARKS.items():
        bad = statuses == status
        if not bad.any():
            continue
        hollow = {"facecolors": "none", "edgecolors": color} if marker == "o" else {"color": color}
        band.scatter(xs[bad], np.full(bad.sum(), row), marker=marker, s=26, linewidths=1.1, **hollow)
        marked.add(status)
    return marked


def _line_arrays(line: pd.DataFrame, axis: str, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A line's x values, statuses and errors in x order, as arrays (selections on them cost microseconds)."""
    order = line[axis].to_numpy().argsort(kind="quicksort")  # as DataFrame.sort_values orders them
    return (
        line[axis].to_numpy()[order],
        line["status"].to_numpy(dtype=object)[order],
        line[column].to_numpy(dtype=float)[order],
    )


def _panel(
    ax, band, of_dtype: pd.DataFrame, axis: str, dtype: str, measure: Measure, styles: dict, failing_paths: list[str]
) -> set[str]:
    """Draw one dtype's panel with the figure's line styles; return what else it drew (statuses, off scale).
    In the band, each framework's row holds a sub-row per path that is not finite somewhere in the figure."""
    frameworks, paths = ordered(f for f, _ in styles), failing_paths
    ceiling, drawn, shown = measure.ceiling(dtype), set(), [measure.reference(dtype)]
    for (framework, path), line in of_dtype.groupby(["framework", "path"], sort=False):
        style = styles[(framework, path)]
        xs, statuses, errors = _line_arrays(line, axis, measure.column)
        ok = metrics.status_in(statuses, metrics.GOOD)
        y = np.maximum(errors[ok], measure.floor)
        ax.plot(xs[ok], np.minimum(y, ceiling), markersize=3, linewidth=1.2, **style.kwargs())
        above = xs[ok][y > ceiling]
        if len(above):
            ax.scatter(above, np.full(len(above), ceiling), marker=OFF_SCALE, s=40, facecolors="none",
                       edgecolors=style.color, linewidths=1.2)  # fmt: skip
            drawn.add("off scale")
        shown += list(np.minimum(y, ceiling))
        if band is not None:
            offset = ((len(paths) - 1) / 2 - paths.index(path)) * 0.5 / max(len(paths) - 1, 1) if path in paths else 0
            drawn |= _band(band, xs, statuses, -frameworks.index(framework) + offset, style.color)
    for x in of_dtype.loc[of_dtype["status"] == metrics.INPUT_INF, axis].unique():
        for target in (ax, band) if band is not None else (ax,):
            target.axvspan(x / 1.15, x * 1.15, color="0.88", zorder=0)
    ax.axhline(measure.reference(dtype), color="0.5", linewidth=0.8, linestyle="-.", label=measure.reference_label)
    if "bound_ulp" in of_dtype and of_dtype["bound_ulp"].notna().any():
        bound = of_dtype.groupby(axis)["bound_ulp"].max().dropna().clip(lower=measure.floor, upper=ceiling)
        ax.plot(bound.index, bound, color="black", linewidth=2.2, alpha=0.3, label=BOUND_LABEL)
        shown += list(bound)
    for mark in theory_marks(of_dtype, axis, dtype):
        for target in (ax, band) if band is not None else (ax,):
            linestyle = THEORY_LINESTYLES.get((mark.cause, mark.flushes), "-.")
            target.axvline(mark.x, color=THEORY_COLOR, linewidth=1.1, zorder=1.5, linestyle=linestyle, label=mark.label)
    top = 10.0 ** np.ceil(np.log10(max(shown) * 3))
    bottom = max(10.0 ** np.floor(np.log10(min(shown) / 3)), measure.floor / 2)
    ax.set(xscale="log", yscale="log", xlabel=axis, ylim=(bottom, top))
    xs = of_dtype[axis].to_numpy(dtype=float)
    xs = xs[np.isfinite(xs) & (xs > 0)]
    if len(xs):  # the grid's span, so a panel whose cells all failed or are unsupported still has a log axis
        ax.set_xlim(xs.min() / 1.3, xs.max() * 1.3)
        if xs.max() / xs.min() > 1e3:  # as for y below: a wide range needs no minor ticks (shared by the band)
            ax.xaxis.set_minor_locator(NullLocator())
        if xs.max() / xs.min() < 10:  # a narrow span (one scale): ticks at the grid's values, not crowded minor labels
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xticks(sorted(set(xs)), [f"{x:g}" for x in sorted(set(xs))])
    if top / bottom > 1e7:  # minor ticks would crowd a tall range (and cost seconds to lay out)
        ax.yaxis.set_minor_locator(NullLocator())
    ax.grid(True, which="major", alpha=0.3)
    return drawn


def _legend_handles(fig: Figure, cells: pd.DataFrame, drawn: set[str]) -> list:
    handles = style_key(cells)
    for status, (marker, word) in NONFINITE_MARKS.items():
        if status in drawn:
            handles.append(Line2D([], [], linestyle="", marker=marker, color="0.3", mfc="none", label=f"{word} (band)"))
    if "off scale" in drawn:
        handles.append(Line2D([], [], linestyle="", marker=OFF_SCALE, mfc="none", color="0.3",
                              label="beyond the axis (every bit lost)"))  # fmt: skip
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in {h.get_label() for h in handles}:
                handles.append(handle)
    return handles


def error_vs_figure(cells: pd.DataFrame, axis: str, title: str, measure: Measure = LOSS_ULPS) -> Figure:
    """One panel per dtype: an error measure against `axis` (scale or n_classes), a line per framework/path.

    Cells that are not finite sit in a band above the panel (x inf, o nan, ! error), a row per
    framework; ok cells past the dtype's ceiling are drawn on it as hollow triangles; x values
    whose inputs overflow the dtype are shaded grey; dotted and dashed verticals mark theory's
    predicted breaks. For losses the wide grey line is the error bound of the shifted
    log-sum-exp (bound_ulp). Each panel has its own y range.
    """
    cells = cells[[c for c in dict.fromkeys((axis, measure.column, *DRAWN_COLUMNS)) if c in cells]]  # cheaper filters
    dtypes, styles = dtype_order(cells["dtype"]), line_styles(cells)
    frameworks = ordered(cells["framework"])
    failing = ordered(cells.loc[cells["status"].isin(list(NONFINITE_MARKS)), "path"])
    with_band = bool(failing)
    band_height = 0.3 * len(frameworks) + 0.25 if with_band else 0.0
    width = max(3.9 * len(dtypes), 6.4)
    n_keys = cells["path"].nunique() + len(frameworks) + 6
    legend_rows = np.ceil(n_keys / max(1, int(width / 1.9)))
    fig = new_figure(width, 3.6 + band_height + 0.2 * legend_rows + 0.5)
    grid = fig.add_gridspec(2 if with_band else 1, len(dtypes), height_ratios=[band_height, 3.6] if with_band else [1])
    drawn: set[str] = set()
    for col, dtype in enumerate(dtypes):
        ax = fig.add_subplot(grid[-1, col])
        band = fig.add_subplot(grid[0, col], sharex=ax) if with_band else None
        drawn |= _panel(ax, band, cells[cells["dtype"] == dtype], axis, dtype, measure, styles, failing)
        (band or ax).set_title(dtype)
        if band is not None:
            band.set(ylim=(-len(frameworks) + 0.5, 0.5))
            band.set_yticks([-i for i in range(len(frameworks))], frameworks if col == 0 else [""] * len(frameworks))
            band.tick_params(labelbottom=False, labelsize=8)
            band.grid(True, axis="x", which="major", alpha=0.3)
            for i in range(1, len(frameworks)):
                band.axhline(-i + 0.5, color="0.8", linewidth=0.8)
    fig.axes[0].set_ylabel(measure.label)
    what = "Gradient" if measure is GRADIENT_ROW_REL else tables.loss_words(cells).capitalize()
    fig.suptitle(wrap(f"{what} error vs {axis}, {title}", fig, 12), fontsize=12)
    fitted_legend(fig, _legend_handles(fig, cells, drawn))
    return fig


def error_vs(cells: pd.DataFrame, axis: str, title: str, out: Path, measure: Measure = LOSS_ULPS) -> None:
    """Draw error_vs_figure and write it to `out` (PNG)."""
    save(error_vs_figure(cells, axis, title, measure), out)


def write_error_plots(errors: pd.DataFrame, plots_dir: Path, gradient: bool = False) -> list[Path]:
    """error_vs_scale_<family>.png per family; with several class counts, error_vs_n_classes too.

    With gradient=True the table is grad_errors and the files start with grad_.
    """
    measure, prefix = (GRADIENT_ROW_REL, "grad_") if gradient else (LOSS_ULPS, "")
    written = []
    for family, cells in errors.groupby("family", sort=False):
        if cells["n_classes"].nunique() == 1:
            out = plots_dir / f"{prefix}error_vs_scale_{family}.png"
            error_vs(cells, "scale", f"family {family}, {cells['n_classes'].iloc[0]} classes", out, measure)
            written.append(out)
            continue
        for scale, at_scale in cells.groupby("scale"):
            out = plots_dir / f"{prefix}error_vs_n_classes_{family}_scale{scale:g}.png"
            error_vs(at_scale, "n_classes", f"family {family}, scale {scale:g}", out, measure)
            written.append(out)
    return written
