"""The head stage's tables and summary, built from the journal's records (harness.pipeline writes them).

`errors` has the logit cells' columns plus `mode`, `d` and `reduction`; `grad_errors` one row
per cell and input differentiated (`wrt`: h, W, b); `timings` the timing stage's columns plus
`mode`, `d` and `reduction`. Registry order of frameworks and paths comes from the caller.
"""

from __future__ import annotations

import pandas as pd

from harness.outputs import tables
from harness.outputs.headlines import path_stats, recommendation
from harness.outputs.theory import bits_lost_limits
from harness.outputs.verdict import BreakFinder
from harness.sweep import metrics
from harness.sweep.journal import HEAD_COLUMNS

ERROR_COLUMNS = tables.ERROR_COLUMNS[:-1] + tuple(c for c in HEAD_COLUMNS if c not in tables.ERROR_COLUMNS)
ERROR_COLUMNS += ("message",)
GRAD_COLUMNS = tables.GRAD_COLUMNS[:-1] + tuple(c for c in HEAD_COLUMNS if c not in tables.GRAD_COLUMNS)
GRAD_COLUMNS += ("wrt", "message")


def errors_frame(records: list[dict], names: dict) -> pd.DataFrame:
    return tables.errors_frame([r["cell"] for r in records], ERROR_COLUMNS, names)


def grad_errors_frame(records: list[dict], names: dict) -> pd.DataFrame:
    keys = [c for c in GRAD_COLUMNS if c not in metrics.GRAD_METRIC_COLUMNS + ("status", "message", "wrt")]
    rows = [
        {k: r["cell"].get(k) for k in keys} | {"wrt": wrt} | values
        for r in records
        for wrt, values in r.get("head_grad", {}).items()
    ]
    return tables.errors_frame(rows, GRAD_COLUMNS, names) if rows else pd.DataFrame(columns=list(GRAD_COLUMNS))


def _outcome(cells: pd.DataFrame) -> str:
    statuses = set(cells["status"])
    if statuses == {metrics.UNSUPPORTED}:
        return metrics.UNSUPPORTED
    good = cells[cells["status"].isin(metrics.GOOD)]
    worst = f"{good['max_ulp_err'].max():.3g} ulp" if not good.empty else "never ok"
    failed = statuses & set(metrics.FAILED)
    return worst + (f"; {', '.join(sorted(failed))} at some scale" if failed else "")


def head_summary(errors: pd.DataFrame, experiment: str) -> str:
    """Per class count and reduction: framework/path/mode x dtype, worst max_ulp_err over ok cells."""
    lines = [
        f"# {experiment}: language-model head {tables.loss_words(errors)} against the exact head",
        "",
        "Each entry: worst max_ulp_err of the loss over the cells that did not break (every scale),",
        "then the failures seen, or `unsupported`.",
    ]
    dtypes = list(dict.fromkeys(errors["dtype"]))
    for (n_classes, reduction), cells in errors.groupby(["n_classes", "reduction"], sort=False):
        shape = f"{cells['n_rows'].iloc[0]} rows, d = {cells['d'].iloc[0]}, {n_classes} classes"
        rows = []
        for (framework, path, mode), of_path in cells.groupby(["framework", "path", "mode"], sort=False):
            of_dtype = [of_path[of_path["dtype"] == d] for d in dtypes]
            rows.append([f"{framework}/{path} ({mode})"] + [_outcome(c) if not c.empty else "" for c in of_dtype])
        lines += ["", f"## {shape}, reduction {reduction}", "", tables.markdown_table(["path (mode)", *dtypes], rows)]
    stats = path_stats(errors, BreakFinder(errors, None, None), bits_lost_limits(errors))
    return "\n".join(lines + ["", recommendation(stats)] if stats else lines) + "\n"
