"""The loss as trained at 256 x 32000: each option alone on the mean, and the usual combination,
per framework and dtype, loss and gradient."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.files import write_text
from harness.outputs.tables import markdown_table
from harness.sweep import metrics
from harness.sweep.journal import OPTION_DEFAULTS

OPTIONS = {k: v for k, v in OPTION_DEFAULTS.items() if k != "reduction"}  # a set is named by what it changes


def option_set(row) -> str:
    """`mean`, `mean, label_smoothing=0.1`, ...: the reduction and each option off its default."""
    changed = [
        f"{name}={row[name]:g}" if isinstance(row[name], float) else f"{name}={row[name]}"
        for name, default in OPTIONS.items()
        if not (pd.isna(row[name]) if default is None else row[name] == default)
    ]
    return ", ".join([row["reduction"], *changed])


def _entry(row, error_column: str) -> str:
    if row["status"] in (metrics.OK, metrics.EXACT_UNDERFLOW):
        return f"{row[error_column]:.3g}"
    return row["status"]


def option_table(cells: pd.DataFrame, error_column: str) -> str:
    """Rows: option sets in run order; columns: framework/path; entries: the error or the status."""
    cells = cells.assign(option_set=cells.apply(option_set, axis=1))
    columns = list(dict.fromkeys(cells["framework"] + "/" + cells["path"]))
    rows = []
    for name, of_set in cells.groupby("option_set", sort=False):
        by_path = {f"{r['framework']}/{r['path']}": _entry(r, error_column) for _, r in of_set.iterrows()}
        rows.append([name, *(by_path.get(c, "") for c in columns)])
    return markdown_table(["options", *columns], rows)


def summarize(run_dir: Path) -> str:
    run_dir = Path(run_dir)
    errors = pd.read_parquet(run_dir / "errors.parquet")
    grad_path = run_dir / "grad_errors.parquet"
    grads = pd.read_parquet(grad_path) if grad_path.exists() else None
    parts = [
        "# Training losses: each option alone and the usual combination, against the exact loss\n",
        "Loss: the error of the one reduced value in ulps of the dtype. Gradient: the largest error "
        "of an entry over its row's largest exact entry (max_row_rel_err). Otherwise the status.\n",
    ]
    inputs = [c for c in ("family", "scale", "n_rows", "n_classes") if errors[c].nunique() > 1]  # named when swept
    for key, cells in errors.groupby(["dtype", *inputs], sort=False):
        key = key if isinstance(key, tuple) else (key,)
        title = ", ".join([key[0], *(f"{c}={v:g}" for c, v in zip(inputs, key[1:], strict=True) if c != "family")])
        if "family" in inputs:
            title += f" ({key[1 + inputs.index('family')]})"
        parts += [f"## {title}: loss (ulps)\n", option_table(cells, "max_ulp_err"), ""]
        if grads is not None:
            same = (grads[["dtype", *inputs]] == pd.Series(dict(zip(["dtype", *inputs], key, strict=True)))).all(axis=1)
            parts += [f"## {title}: gradient (max_row_rel_err)\n", option_table(grads[same], "max_row_rel_err"), ""]
    text = "\n".join(parts)
    write_text(text, run_dir / "training_losses.md")
    return text
