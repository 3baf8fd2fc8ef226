"""Timing of the language-model head's cells (harness.sweep.head_runner): per-call time of a warm
loss, the memory one call needs, and the timings table with `mode`, `d` and `reduction`."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from harness.dtypes import DTYPES
from harness.sweep import metrics
from harness.sweep.head_inputs import HEAD_COLUMNS
from harness.timing import memory, stage
from harness.timing.timer import blocked_autorange


def time_loss(loss_fn, native, backend, timing, first_call_s: float, compiles: bool, recompiles: bool = False) -> dict:
    """Per-call time of the loss, already called once (its accuracy call: compile_s where it
    compiles), and the memory one call needs. The memory call is the warm-up the timer would make,
    tells it whether one call fills a block, and is the first sample of a call of a second or more
    (it follows the accuracy call, which compiled where anything compiles): PyTorch's eager chunked
    head runs its loss twice in all (accuracy; memory and the sample) where it ran it five times.
    `recompiles`: the loss compiles again at the timing's thread count (torch.compile, the
    backend's RECOMPILES_PER_THREAD_COUNT), so its memory call is a warm-up only."""
    with backend.threads(timing.threads) as (in_force, note):
        start = time.perf_counter()
        peak = memory.peak_bytes(lambda: backend.sync(loss_fn(*native)), backend.release_memory)
        warm_call_s = time.perf_counter() - start
        measured = blocked_autorange(
            loss_fn,
            native,
            sync=backend.sync,
            budget_s=timing.budget_s,
            rel_iqr_target=timing.rel_iqr_target,
            min_blocks=timing.min_blocks,
            warm_call_s=warm_call_s,
            warm_call_is_sample=not recompiles,
        )
    return {
        "threads": in_force,
        "n_samples": measured.n_samples,
        "median_s": measured.median_s,
        "iqr_s": measured.iqr_s,
        "min_s": measured.min_s,
        "compile_s": first_call_s if compiles else 0.0,
        "peak_bytes": float("nan") if peak is None else float(peak),
        "message": note,
    }


def timings_frame(records: list[dict]) -> pd.DataFrame:
    """The head cells' timings: the timing stage's columns plus mode, d and reduction."""
    keys = ("framework", "path", "dtype", "n_rows", "n_classes", "device") + HEAD_COLUMNS
    rows = []
    for r in records:
        if "timing" not in r:
            continue
        itemsize = np.dtype(DTYPES[r["cell"]["dtype"]].numpy_type).itemsize
        c = r["cell"]
        row = {k: c.get(k) for k in keys} | {"threads": 0} | r["timing"]
        row["bytes_min"] = (c["n_rows"] + c["n_classes"]) * c["d"] * itemsize  # h and W read once
        if row.get("median_s"):
            row |= {"elements_per_s": row["n_rows"] * row["n_classes"] / row["median_s"]}
            row |= {"gb_per_s": row["bytes_min"] / row["median_s"] / 1e9}
            row |= {"status": row.get("status", metrics.OK), "message": row.get("message", "")}
        rows.append(row)
    extra = tuple(c for c in HEAD_COLUMNS if c not in stage.COLUMNS)
    if not rows:
        return pd.DataFrame(columns=stage.COLUMNS + extra)
    frame = stage.timings_frame(rows)
    for column in extra:
        frame[column] = [row.get(column) for row in rows]
    return frame
