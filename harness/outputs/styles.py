"""What every plot shares: styles derived from the tables, and figures that fit their text.

Colour = path, from its position among the paths a table lists (tables list them in registry
order); line style and marker = framework, the same way. So a new path or framework needs no plot
edit, and no two lines of a panel look alike. Figures are matplotlib `Figure`s on the Agg canvas,
made without pyplot: drawing needs no backend setting and leaves no global state.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.lines import Line2D

from harness.outputs.tables import atomic_write

# tab10 without its grey (the reference lines are grey), then four more far from it and from each other.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
    "#000075", "#800000", "#469990", "#f032e6",
)  # fmt: skip
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)))
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
NEUTRAL = "0.3"  # the colour of legend entries that stand for a framework, not a path
DPI = 110


def palette(n: int) -> list[str]:
    """n distinct colours: PALETTE while it lasts, else n evenly spaced along the turbo colour map."""
    if n <= len(PALETTE):
        return list(PALETTE[:n])
    return [to_hex(colormaps["turbo"](i / (n - 1))) for i in range(n)]


def ordered(values: Iterable) -> list:
    """Distinct values in order of first appearance."""
    return list(dict.fromkeys(values))


def path_colors(paths: Iterable[str]) -> dict[str, str]:
    """Each path's colour from its position in `paths` (distinct values, in order)."""
    names = ordered(paths)
    return dict(zip(names, palette(len(names)), strict=True))


def framework_marks(frameworks: Iterable[str]) -> dict[str, tuple]:
    """Each framework's (line style, marker) from its position in `frameworks`."""
    return {
        name: (LINESTYLES[i % len(LINESTYLES)], MARKERS[i % len(MARKERS)]) for i, name in enumerate(ordered(frameworks))
    }


@dataclass(frozen=True)
class LineStyle:
    color: str
    linestyle: str | tuple
    marker: str

    def kwargs(self) -> dict:
        return {"color": self.color, "linestyle": self.linestyle, "marker": self.marker}


def line_styles(table: pd.DataFrame) -> dict[tuple[str, str], LineStyle]:
    """(framework, path) -> its style, for every pair in the table: colour by path, line style and
    marker by framework, each from the order the table lists them."""
    colors, marks = path_colors(table["path"]), framework_marks(table["framework"])
    pairs = ordered(zip(table["framework"], table["path"], strict=True))
    return {(f, p): LineStyle(colors[p], *marks[f]) for f, p in pairs}


def style_key(table: pd.DataFrame) -> list[Line2D]:
    """Legend entries that explain line_styles: a coloured line per path, a grey line and marker per framework."""
    colors, marks = path_colors(table["path"]), framework_marks(table["framework"])
    handles = [Line2D([], [], color=c, linewidth=2.5, label=p) for p, c in colors.items()]
    return handles + [
        Line2D([], [], color=NEUTRAL, linestyle=ls, marker=m, markersize=4, label=f) for f, (ls, m) in marks.items()
    ]


# --- figures --------------------------------------------------------------------------------


def new_figure(width: float, height: float, layout: str | None = "constrained", **kwargs) -> Figure:
    """A Figure on the Agg canvas, laid out by constrained layout (which makes room for outside legends)."""
    fig = Figure(figsize=(width, height), layout=layout, **kwargs)
    FigureCanvasAgg(fig)
    return fig


def wrap(text: str, fig: Figure, fontsize: float, share: float = 0.95) -> str:
    """Break text into lines that fit `share` of the figure's width at `fontsize` (about 0.55 em a character)."""
    chars = max(20, int(fig.get_figwidth() * 72 * share / (0.55 * fontsize)))
    return "\n".join(textwrap.wrap(text, chars))


def fitted_legend(fig: Figure, handles: list, fontsize: float = 8, loc: str = "outside lower center") -> Legend | None:
    """A figure legend with as many columns as fit the figure's width (measured, not guessed)."""
    if not handles:
        return None
    renderer = fig.canvas.get_renderer()
    width = fig.bbox.width * 0.97
    for ncol in range(min(len(handles), 8), 0, -1):
        legend = fig.legend(handles=handles, loc=loc, ncol=ncol, fontsize=fontsize, frameon=False)
        if ncol == 1 or legend.get_window_extent(renderer).width <= width:
            return legend
        legend.remove()
    return None


def save(fig: Figure, out: Path) -> None:
    """Write the figure as PNG at DPI: laid out once, then drawn once.

    savefig with a layout engine first draws the whole figure with drawing disabled, only to lay
    it out, then draws it again; running the engine directly gives the same layout without that
    pass (about a third of a figure's cost)."""
    fig.set_dpi(DPI)
    engine = fig.get_layout_engine()
    if engine is not None:
        fig.canvas.get_renderer()  # the engine measures text at the saved size
        engine.execute(fig)
        fig.set_layout_engine(None)  # laid out: savefig now draws once
    atomic_write(Path(out), lambda tmp: fig.savefig(tmp, dpi=DPI, format="png"))
