"""The seed article's per-label loss table: every framework/path/dtype next to the exact values."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.files import write_text
from harness.outputs.tables import markdown_table

REQUIRES = {"row_errors": True}  # the table is made of per-row losses; checked before any work


def loss_table(row_errors: pd.DataFrame) -> str:
    """Rows: per dtype (and scale, if several) the exact losses, then each framework/path; columns: one per label."""
    labels = sorted(row_errors["label"].unique())
    header = ["dtype", "framework/path", *(f"y={y}" for y in labels), "max ulp error"]
    rows = []
    several_scales = row_errors["scale"].nunique() > 1  # a scales= override: one block per dtype and scale
    for (dtype, scale), of_dtype in row_errors.groupby(["dtype", "scale"], sort=False):
        if several_scales:
            dtype = f"{dtype} x{scale:g}"
        exact = of_dtype.drop_duplicates("label").set_index("label")["exact_loss"]
        rows.append([dtype, "**exact**", *(f"{exact[y]:.17g}" for y in labels), ""])
        for (framework, path), cells in of_dtype.groupby(["framework", "path"], sort=False):
            by_label = cells.set_index("label")
            losses = [f"{by_label.loc[y, 'computed']:.17g}" for y in labels]
            rows.append([dtype, f"{framework}/{path}", *losses, f"{cells['ulp_err'].max():.3g}"])
    return markdown_table(header, rows)


def summarize(run_dir: Path) -> str:
    row_errors = pd.read_parquet(Path(run_dir) / "row_errors.parquet")
    text = (
        "# Seed article: logits [12.3, -5.2, 31.4], one row per label\n\n"
        "Losses as returned (float64 spelling of each dtype's value); exact = lse(x) - x[y] of the logits\n"
        "rounded to that dtype.\n\n" + loss_table(row_errors) + "\n"
    )
    write_text(text, Path(run_dir) / "seed_article.md")
    return text
