"""Correct-bits heatmaps of a run: plots/heatmap_<dtype>.png, drawn from errors.parquet alone.

One figure per dtype, one panel per family (and size, where the run varies it): rows framework/path
(and device, where there are several), columns scale, colour = correct bits = precision - bits lost,
bits lost = max(0, log2(2 * max_ulp_err)) clipped to [0, precision] (`metrics.correct_bits`). Cells
whose status is not ok are marked (STATUS_MARKS) rather than coloured; HEATMAP_NOTE is the legend the
report prints under the figures. harness.outputs.report draws them through write_heatmaps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from harness.dtypes import DTYPES
from harness.outputs.plots import dtype_order
from harness.outputs.styles import fitted_legend, new_figure, save, wrap
from harness.sweep import metrics

STATUS_MARKS = {  # status -> (cell colour, mark, legend)
    metrics.INF: ("black", "x", "inf (non-finite loss)"),
    metrics.NAN: ("black", "o", "nan (non-finite loss)"),
    metrics.ERROR: ("tab:red", "!", "error (raised)"),
    metrics.UNSUPPORTED: ("0.85", "-", "unsupported"),
    metrics.INPUT_INF: ("0.92", "/", "input_inf (logits overflow the dtype)"),
}


def correct_bits_figure(errors: pd.DataFrame, dtype: str) -> Figure:
    """Rows framework/path, columns scale, colour = correct bits; one panel per family (and size).

    Correct bits = precision - bits lost, bits lost = max(0, log2(2 * max_ulp_err)), clipped to
    [0, precision]: the dtype's full precision for a correctly rounded result, 0 when the error
    reaches 2**(precision - 1) ulps. Cells whose status is not ok are marked, not coloured.
    """
    fmt = DTYPES[dtype]
    cells = errors[errors["dtype"] == dtype]
    panel_keys = [c for c in ("family", "n_rows", "n_classes") if c in cells]
    panels = list(cells.groupby(panel_keys, sort=False))
    several_sizes = len({key[1:] for key, _ in panels}) > 1
    line_keys = ["framework", "path"] + (["device"] if "device" in cells and cells["device"].nunique() > 1 else [])
    lines = list(dict.fromkeys(cells[line_keys].itertuples(index=False, name=None)))
    line_row = {line: i for i, line in enumerate(lines)}
    widths = [max(len(panel["scale"].unique()), 1) for _, panel in panels]
    fig = new_figure(max(3.5 + 0.26 * sum(widths), 6.4), 2.0 + 0.3 * len(lines))
    axes = fig.subplots(1, len(panels), squeeze=False, gridspec_kw={"width_ratios": widths})
    image = None
    for ax, (key, panel) in zip(axes[0], panels, strict=True):
        scales = np.sort(panel["scale"].unique())
        grid = np.full((len(lines), len(scales)), np.nan)
        marked = np.zeros((len(lines), len(scales), 4))  # the status cells' colours over the image (alpha 0 elsewhere)
        marks: dict[str, list[tuple[int, int]]] = {}
        rows = [line_row[line] for line in panel[line_keys].itertuples(index=False, name=None)]
        columns = np.searchsorted(scales, panel["scale"].to_numpy()).tolist()
        statuses, ulps = panel["status"].tolist(), panel["max_ulp_err"].tolist()
        for i, j, status, ulp in zip(rows, columns, statuses, ulps, strict=True):
            if status in metrics.GOOD:  # correctly rounded inf or 0 rows aside, its errors are real
                grid[i, j] = metrics.correct_bits(ulp, fmt.precision)
            elif status in STATUS_MARKS:
                marked[i, j] = to_rgba(STATUS_MARKS[status][0])
                marks.setdefault(status, []).append((j, i))
        image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=fmt.precision, interpolation="nearest")
        ax.imshow(marked, aspect="auto", interpolation="nearest", zorder=2)
        for status, where in marks.items():  # one collection per status: thousands of texts take seconds to lay out
            colour, mark, _ = STATUS_MARKS[status]
            xs, ys = zip(*where, strict=True)
            text_colour = "white" if colour == "black" else "black"
            ax.scatter(xs, ys, marker=rf"$\mathrm{{{mark}}}$", s=22, color=text_colour, linewidths=0, zorder=3)
        step = max(1, len(scales) // 8)
        ax.set_xticks(range(0, len(scales), step), [f"{s:.3g}" for s in scales[::step]], rotation=45, fontsize=7)
        ax.set_yticks(range(len(lines)), ["/".join(map(str, line)) for line in lines], fontsize=7)
        ax.set_xlabel("scale")
        sizes = [f"{name} {value}" for name, value in zip(panel_keys[1:], key[1:], strict=True)]
        ax.set_title(", ".join([f"family {key[0]}"] + (sizes if several_sizes else [])), fontsize=9)
    for ax in axes[0][1:]:
        ax.set_yticklabels([])
    fig.colorbar(image, ax=list(axes[0]), label=f"correct bits (of {fmt.precision})", fraction=0.03, pad=0.01)
    present = [s for s in STATUS_MARKS if (cells["status"] == s).any()]
    handles = [
        Patch(facecolor=STATUS_MARKS[s][0], label=f"{STATUS_MARKS[s][1]}  {STATUS_MARKS[s][2]}") for s in present
    ]
    fitted_legend(fig, handles, fontsize=7)
    title = f"Correct bits of the loss in {dtype}: precision - max(0, log2(2 * max ulp error))"
    fig.suptitle(wrap(title, fig, 10), fontsize=10)
    return fig


def correct_bits_heatmap(errors: pd.DataFrame, dtype: str, out: Path) -> None:
    """Draw correct_bits_figure and write it to `out` (PNG)."""
    save(correct_bits_figure(errors, dtype), out)


def write_heatmaps(errors: pd.DataFrame, run_dir: Path) -> list[Path]:
    """Draw plots/heatmap_<dtype>.png for every dtype of the errors table."""
    drawn = []
    for dtype in dtype_order(errors["dtype"]):
        if dtype in DTYPES:
            out = run_dir / "plots" / f"heatmap_{dtype}.png"
            correct_bits_heatmap(errors, dtype, out)
            drawn.append(out)
    return drawn


HEATMAP_NOTE = (
    "One figure per dtype (plots/heatmap_<dtype>.png), one panel per family: rows framework/path, columns "
    "scale, colour = correct bits = precision - bits lost, bits lost = max(0, log2(2 x max_ulp_err)), so a "
    "correctly rounded loss shows the dtype's full precision. Marked cells: x inf, o nan (black), ! error, "
    "- unsupported, / input_inf."
)
