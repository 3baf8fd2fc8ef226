"""Plots drawn from the tidy tables only: a plot never recomputes a number."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from harness import metrics  # noqa: E402
from harness.tables import atomic_write  # noqa: E402

PATH_COLORS = {"naive": "tab:red", "softmax_log": "tab:orange", "log_softmax_nll": "tab:blue", "fused": "tab:green"}
FRAMEWORK_STYLES = {"numpy": ("-", "o"), "torch": ("--", "s"), "jax": (":", "^")}
ULP_FLOOR = 1e-3  # errors below this (exact hits included) are drawn on the floor


def _style(framework: str, path: str, index: int) -> dict:
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    linestyle, marker = FRAMEWORK_STYLES.get(framework, ("-.", "d"))
    return {"color": PATH_COLORS.get(path, colors[index % len(colors)]), "linestyle": linestyle, "marker": marker}


def error_vs_scale(errors: pd.DataFrame, family: str, out: Path) -> None:
    """One panel per dtype: max ulp error against scale, a line per framework/path.

    Cells whose output overflowed (inf) or went NaN are drawn as x and o at the top band of the
    panel; scales whose inputs overflow the dtype are shaded grey.
    """
    cells = errors[errors["family"] == family]
    dtypes = list(dict.fromkeys(cells["dtype"]))
    finite = cells.loc[cells["status"] == metrics.OK, "max_ulp_err"]
    top = max(10.0 ** np.ceil(np.log10(max(finite.max() if not finite.empty else 1.0, 1.0))) * 1e4, 1e5)
    fig, axes = plt.subplots(1, len(dtypes), figsize=(4.2 * len(dtypes), 4.2), sharey=True, squeeze=False)
    for ax, dtype in zip(axes[0], dtypes, strict=True):
        of_dtype = cells[cells["dtype"] == dtype]
        for index, ((framework, path), line) in enumerate(of_dtype.groupby(["framework", "path"], sort=False)):
            line = line.sort_values("scale")
            style = _style(framework, path, index)
            ok = line[line["status"] == metrics.OK]
            ax.plot(
                ok["scale"],
                ok["max_ulp_err"].clip(lower=ULP_FLOOR),
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
                    bad["scale"],
                    np.full(len(bad), row_y),
                    marker=marker,
                    s=24,
                    color=style["color"],
                    facecolors="none" if marker == "o" else None,
                    linewidths=1.1,
                )
        for scale in of_dtype.loc[of_dtype["status"] == metrics.INPUT_INF, "scale"].unique():
            ax.axvspan(scale / 1.15, scale * 1.15, color="0.85", zorder=0)
        ax.axhline(0.5, color="0.5", linewidth=0.8, linestyle="-.")
        ax.axhspan(top * 0.6 / 1.5**12, top, color="0.95", zorder=0)
        ax.set(xscale="log", yscale="log", title=dtype, xlabel=f"scale ({family})", ylim=(ULP_FLOOR / 2, top))
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].set_ylabel("max ulp error (top band: x = inf, o = nan)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8, frameon=False)
    fig.suptitle(f"Cross-entropy error vs scale, family {family} (dash-dot line: 0.5 ulp)")
    fig.tight_layout(rect=(0, 0.1 if len(labels) > 6 else 0.06, 1, 1))
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
