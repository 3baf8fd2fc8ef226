"""Real MNIST logits (Blanchard, Higham & Higham 2021): non-finite rows and the error distribution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from harness.outputs.styles import fitted_legend, line_styles, new_figure, save, wrap
from harness.outputs.tables import markdown_table, write_table, write_text

REQUIRES = {"row_errors": True}  # the quantiles are taken over per-row errors; checked before any work
QUANTILES = (0.5, 0.9, 0.99)
CELL = ["framework", "path", "dtype", "scale"]


def error_distribution(row_errors: pd.DataFrame) -> pd.DataFrame:
    """Per cell: rows, non-finite rows, and quantiles of the ulp error over the finite rows."""
    finite = np.isfinite(row_errors["computed"])
    grouped = row_errors.assign(finite=finite).groupby(CELL, sort=False)
    table = grouped.agg(n_rows=("row", "size"), n_finite=("finite", "sum")).reset_index()
    table["n_nonfinite"] = table["n_rows"] - table["n_finite"]
    ulps = row_errors[finite].groupby(CELL, sort=False)["ulp_err"]
    for q in QUANTILES:
        table = table.merge(ulps.quantile(q).rename(f"ulp_err_q{int(q * 100)}").reset_index(), on=CELL, how="left")
    table = table.merge(ulps.max().rename("ulp_err_max").reset_index(), on=CELL, how="left")
    return table.drop(columns="n_finite")


def distribution_figure(row_errors: pd.DataFrame, scale: float):
    """Empirical CDF of the ulp error over the rows, a panel per dtype, a line per framework/path;
    the legend below the panels, as many columns as fit, its room made by constrained layout."""
    cells = row_errors[row_errors["scale"] == scale]
    dtypes = list(dict.fromkeys(cells["dtype"]))
    fig = new_figure(4.2 * len(dtypes), 4 + 0.04 * cells.groupby(["framework", "path"]).ngroups)
    axes = fig.subplots(1, len(dtypes), sharey=True, squeeze=False)
    styles = line_styles(cells)  # colour by path, line style by framework: no two lines alike
    for ax, dtype in zip(axes[0], dtypes, strict=True):
        for (framework, path), line in cells[cells["dtype"] == dtype].groupby(["framework", "path"], sort=False):
            errors = np.sort(np.where(np.isfinite(line["computed"]), line["ulp_err"], np.inf))
            style = styles[(framework, path)]
            ax.step(
                np.clip(errors, 1e-3, 1e12),
                np.arange(1, len(errors) + 1) / len(errors),
                label=f"{framework}/{path}",
                color=style.color,
                linestyle=style.linestyle,
            )
        ax.set(xscale="log", title=dtype, xlabel="ulp error (non-finite at the right edge)")
    axes[0][0].set_ylabel("fraction of rows")
    fitted_legend(fig, axes[0][0].get_legend_handles_labels()[0])
    fig.suptitle(wrap(f"Blanchard et al. (2021) MNIST logits x {scale:g}: distribution of the per-row error", fig, 12))
    return fig


def plot_distribution(row_errors: pd.DataFrame, scale: float, out: Path) -> None:
    save(distribution_figure(row_errors, scale), out)


def summarize(run_dir: Path) -> str:
    run_dir = Path(run_dir)
    row_errors = pd.read_parquet(run_dir / "row_errors.parquet")
    table = error_distribution(row_errors)
    write_table(table, run_dir / "error_distribution")
    for scale in sorted(row_errors["scale"].unique()):
        plot_distribution(row_errors, scale, run_dir / "plots" / f"ulp_error_distribution_scale{scale:g}.png")
    columns = ["n_nonfinite", *(f"ulp_err_q{int(q * 100)}" for q in QUANTILES), "ulp_err_max"]
    rows = [
        [f"{r.framework}/{r.path}", r.dtype, f"{r.scale:g}", *(f"{getattr(r, c):.3g}" for c in columns)]
        for r in table.itertuples()
    ]
    text = (
        "# Blanchard et al. (2021) MNIST logits: non-finite rows and ulp-error quantiles per cell\n\n"
        + markdown_table(["framework/path", "dtype", "scale", *columns], rows)
        + "\n"
    )
    write_text(text, run_dir / "error_distribution.md")
    return text
