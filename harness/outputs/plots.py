"""Plots drawn from the tidy tables only: a plot never recomputes a number."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from harness.dtypes import DTYPES  # noqa: E402
from harness.outputs.tables import atomic_write  # noqa: E402
from harness.sweep import metrics  # noqa: E402

PATH_COLORS = {
    "naive": "tab:red",
    "softmax_log": "tab:orange",
    "log_softmax_nll": "tab:blue",
    "fused": "tab:green",
    "upcast_fused": "tab:olive",
    "log1p_lse": "tab:purple",
    "online": "tab:brown",
    "chunked": "tab:pink",
}
FRAMEWORK_STYLES = {"numpy": ("-", "o"), "torch": ("--", "s"), "jax": (":", "^")}


@dataclass(frozen=True)
class Measure:
    """What an error plot draws on y: a column, its label, a floor for zeros, a reference line per dtype."""

    column: str
    label: str
    floor: float
    reference: Callable[[str], float]
    reference_label: str


LOSS_ULPS = Measure("max_ulp_err", "max ulp error", 1e-3, lambda dtype: 0.5, "0.5 ulp")
GRADIENT_ROW_REL = Measure(
    "max_row_rel_err",
    "max error / row's max |exact entry|",
    1e-20,
    lambda dtype: DTYPES[dtype].unit_roundoff,
    "unit roundoff",
)


def _style(framework: str, path: str, index: int) -> dict:
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    linestyle, marker = FRAMEWORK_STYLES.get(framework, ("-.", "d"))
    return {"color": PATH_COLORS.get(path, colors[index % len(colors)]), "linestyle": linestyle, "marker": marker}


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


def error_vs(cells: pd.DataFrame, axis: str, title: str, out: Path, measure: Measure = LOSS_ULPS) -> None:
    """One panel per dtype: an error measure against `axis` (scale or n_classes), a line per framework/path.

    Cells whose output overflowed (inf) or went NaN are drawn as x and o in the top band of the
    panel, each line on its own row; x values whose inputs overflow the dtype are shaded grey. For
    losses the black dashed line is the largest per-row error bound of the shifted log-sum-exp
    (bound_ulp).
    """
    dtypes = list(dict.fromkeys(cells["dtype"]))
    finite = cells.loc[cells["status"] == metrics.OK, measure.column]
    top = max(10.0 ** np.ceil(np.log10(max(finite.max() if not finite.empty else 1.0, 1.0))) * 1e4, 1e5)
    fig, axes = plt.subplots(1, len(dtypes), figsize=(4.2 * len(dtypes), 4.2), sharey=True, squeeze=False)
    for ax, dtype in zip(axes[0], dtypes, strict=True):
        of_dtype = cells[cells["dtype"] == dtype]
        for index, ((framework, path), line) in enumerate(of_dtype.groupby(["framework", "path"], sort=False)):
            line = line.sort_values(axis)
            style = _style(framework, path, index)
            ok = line[line["status"] == metrics.OK]
            ax.plot(
                ok[axis],
                ok[measure.column].clip(lower=measure.floor),
                markersize=3,
                linewidth=1.2,
                label=f"{framework}/{path}",
                color=style["color"],
                linestyle=style["linestyle"],
                marker=style["marker"],
            )
            row_y = top * 0.6 / 1.5**index  # each line its own row in the top band
            for status, marker in ((metrics.INF, "x"), (metrics.NAN, "o")):
                bad = line[line["status"] == status]
                ax.scatter(
                    bad[axis],
                    np.full(len(bad), row_y),
                    marker=marker,
                    s=24,
                    color=style["color"],
                    facecolors="none" if marker == "o" else None,
                    linewidths=1.1,
                )
        for x in of_dtype.loc[of_dtype["status"] == metrics.INPUT_INF, axis].unique():
            ax.axvspan(x / 1.15, x * 1.15, color="0.85", zorder=0)
        ax.axhline(measure.reference(dtype), color="0.5", linewidth=0.8, linestyle="-.")
        if "bound_ulp" in of_dtype:
            bound = of_dtype.groupby(axis)["bound_ulp"].max().dropna()
            ax.plot(bound.index, bound.clip(lower=measure.floor), color="black", linestyle=(0, (4, 2)), linewidth=1.0,
                    label="error bound (Blanchard et al. 2021)")  # fmt: skip
        ax.axhspan(top * 0.6 / 1.5**12, top, color="0.95", zorder=0)
        ax.set(xscale="log", yscale="log", title=dtype, xlabel=axis, ylim=(measure.floor / 2, top))
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].set_ylabel(f"{measure.label} (top band: x = inf, o = nan)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8, frameon=False)
    what = "gradient" if measure is GRADIENT_ROW_REL else "Cross-entropy"
    fig.suptitle(f"{what} error vs {axis}, {title} (dash-dot line: {measure.reference_label})")
    fig.tight_layout(rect=(0, 0.1 if len(labels) > 6 else 0.06, 1, 1))
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
