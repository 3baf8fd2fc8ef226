"""Tidy tables: the errors table's columns, atomic writing, and the Markdown summary."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from harness import metrics

KEY_COLUMNS = ("framework", "path", "dtype", "family", "scale", "n_rows", "n_classes")
ERROR_COLUMNS = KEY_COLUMNS + ("max_logit", "max_exact_loss", "status") + metrics.METRIC_COLUMNS + ("message",)


def errors_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows of cells -> the errors table, columns in documented order, missing metrics as NaN."""
    frame = pd.DataFrame(rows).reindex(columns=list(ERROR_COLUMNS))
    frame["n_nonfinite"] = frame["n_nonfinite"].fillna(-1).astype("int64")
    frame["message"] = frame["message"].fillna("").astype(str)
    for column in ("framework", "path", "dtype", "family", "status"):
        frame[column] = frame[column].astype(str)
    return frame


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_table(frame: pd.DataFrame, stem: Path) -> None:
    """stem.parquet for machines and stem.csv for people."""
    atomic_write(stem.with_suffix(".parquet"), lambda tmp: frame.to_parquet(tmp, index=False))
    atomic_write(stem.with_suffix(".csv"), lambda tmp: frame.to_csv(tmp, index=False))


def write_text(text: str, path: Path) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.3g}"


def path_outcome(cells: pd.DataFrame) -> str:
    """One framework/path/dtype over the scale grid: worst ulp error while ok, first failure."""
    if cells.empty:
        return ""
    statuses = set(cells["status"])
    if statuses <= {metrics.UNSUPPORTED, metrics.INPUT_INF}:
        return metrics.UNSUPPORTED if metrics.UNSUPPORTED in statuses else "no finite input"
    ok = cells[cells["status"] == metrics.OK]
    worst = f"{_fmt(ok['max_ulp_err'].max())} ulp" if not ok.empty else "never ok"
    failed = cells[cells["status"].isin(metrics.FAILED)].sort_values("scale")
    if failed.empty:
        return f"{worst}; never fails"
    first = failed.iloc[0]
    return f"{worst}; {first['status']} from {_fmt(first['scale'])}"


def summary_markdown(errors: pd.DataFrame, sweep) -> str:
    """Per family: framework/path x dtype, worst ulp error over ok cells and first failing scale."""
    lines = [
        f"# {sweep.experiment}: cross-entropy error against the exact reference",
        "",
        f"{sweep.n_rows} rows x {sweep.n_classes} classes per cell, label={sweep.label}, seed={sweep.seed}, "
        f"{len(sweep.scales)} scales from {_fmt(min(sweep.scales))} to {_fmt(max(sweep.scales))}.",
        "Each entry: worst max_ulp_err over the cells with status ok; then the first scale whose status is",
        "inf, nan or error (or 'never fails').",
    ]
    for family in sweep.families:
        of_family = errors[errors["family"] == family]
        rows = []
        for framework in sweep.frameworks:
            for path in sweep.paths:
                cells = of_family[(of_family["framework"] == framework) & (of_family["path"] == path)]
                rows.append([f"{framework}/{path}"] + [path_outcome(cells[cells["dtype"] == d]) for d in sweep.dtypes])
        lines += ["", f"## family {family}", "", markdown_table(["framework/path", *sweep.dtypes], rows)]
        skipped = of_family[of_family["status"] == metrics.INPUT_INF].groupby("dtype")["scale"].min()
        if not skipped.empty:
            where = ", ".join(f"in {dtype} from scale {_fmt(scale)}" for dtype, scale in skipped.items())
            lines += ["", f"Inputs not finite (status input_inf) {where}."]
    return "\n".join(lines) + "\n"
