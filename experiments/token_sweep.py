"""Reductions over tokens: the mean and the sum of the per-row losses from 10**2 to 10**7 rows,
per framework and dtype: where the reduction itself loses accuracy or overflows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.files import write_text
from harness.outputs.tables import markdown_table
from harness.sweep import metrics

LOSES_ACCURACY_ULPS = 4.0  # more than this many ulps of the exact reduced value: the reduction drifts


def _entry(row) -> str:
    if row["status"] in (metrics.OK, metrics.EXACT_UNDERFLOW):
        return f"{row['max_ulp_err']:.3g}"
    return row["status"]


def error_table(cells: pd.DataFrame) -> str:
    """Rows framework/path, columns n_rows: the ulp error of the one reduced value, or its status."""
    sizes = sorted(cells["n_rows"].unique())
    rows = []
    for (framework, path), of_path in cells.groupby(["framework", "path"], sort=False):
        by_size = of_path.set_index("n_rows")
        rows.append([f"{framework}/{path}", *(_entry(by_size.loc[n]) if n in by_size.index else "" for n in sizes)])
    return markdown_table(["framework/path", *(f"{n:,}" for n in sizes)], rows)


def first_failures(cells: pd.DataFrame) -> list[str]:
    """Per framework/path: the first row count whose value is not finite, or loses more than
    LOSES_ACCURACY_ULPS ulps, with the exact value there."""
    lines = []
    for (framework, path), of_path in cells.groupby(["framework", "path"], sort=False):
        of_path = of_path.sort_values("n_rows")
        broken = of_path[of_path["status"] != metrics.OK]
        drifted = of_path[(of_path["status"] == metrics.OK) & (of_path["max_ulp_err"] > LOSES_ACCURACY_ULPS)]
        said = []
        if not broken.empty:
            first = broken.iloc[0]
            said.append(f"{first['status']} from {first['n_rows']:,} rows (exact value {first['max_exact_loss']:.6g})")
        if not drifted.empty:
            first, worst = drifted.iloc[0], drifted.loc[drifted["max_ulp_err"].idxmax()]
            said.append(
                f"more than {LOSES_ACCURACY_ULPS:g} ulps from {first['n_rows']:,} rows "
                f"(worst {worst['max_ulp_err']:.3g} ulps at {worst['n_rows']:,})"
            )
        lines.append(f"- {framework}/{path}: " + ("; ".join(said) if said else "within 4 ulps at every size"))
    return lines


def summarize(run_dir: Path) -> str:
    errors = pd.read_parquet(Path(run_dir) / "errors.parquet")
    parts = [
        "# Token sweep: the reduced loss over n_rows tokens against the exact mean and sum\n",
        "Each entry is the error of the one reduced value in ulps of its dtype, or its status "
        "(`exact_overflow`: inf where the exact sum is past the dtype's largest finite, a correct answer; "
        "`nan`: what a mean returns when its sum and its count overflow).\n",
    ]
    inputs = [c for c in ("family", "scale", "n_classes") if errors[c].nunique() > 1]  # named when swept too
    for key, cells in errors.groupby(["dtype", "reduction", *inputs], sort=False):
        title = ", ".join(
            [
                key[0],
                f"reduction={key[1]}",
                *(f"{c}={v:g}" if isinstance(v, float) else f"{c}={v}" for c, v in zip(inputs, key[2:], strict=True)),
            ]
        )
        parts += [f"## {title}\n", error_table(cells), "", *first_failures(cells), ""]
    text = "\n".join(parts)
    write_text(text, Path(run_dir) / "token_sweep.md")
    return text
