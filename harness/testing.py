"""Our exact reference in your own tests: `assert_accurate(my_loss, "torch", max_ulp=2)`.

    from harness.testing import assert_accurate

    def test_my_kernel_is_accurate():
        assert_accurate(my_cross_entropy, "torch", max_ulp=4, dtypes=["float32"], scales=[1, 100, 1e4])

    def test_my_fused_bce_is_no_worse_than_pytorchs():
        assert_accurate(my_bce, "torch", loss="binary_cross_entropy", baseline="with_logits", factor=2)

The callable is measured by harness.measure against the exact loss of the dtype-rounded inputs; a
cell fails when its status is a failure (inf, nan, error, unsupported, negative; a correctly rounded
inf or 0 is not), or its max_ulp_err exceeds max_ulp, or (with a baseline) exceeds `factor` times the
max_ulp_err of the named built-in path in the same framework, dtype and cell: the test kernel projects
write against their own float32 reference, here against the exact one. A cell where the baseline
fails and the callable does not passes. Cells whose rounded inputs overflow the dtype (status
input_inf) are not the callable's fault and are skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd

from harness.api import measure
from harness.sweep import metrics
from harness.sweep.journal import setting_columns

SHOWN = ("dtype", "family", "scale", "n_classes", "status", "max_ulp_err")


def failing_cells(errors: pd.DataFrame, max_ulp: float) -> pd.DataFrame:
    """The cells of an errors table that failed (a correctly rounded inf or 0 is no failure), or whose
    max_ulp_err exceeds max_ulp; input_inf is skipped."""
    judged = errors[errors["status"] != metrics.INPUT_INF]
    bad = ~judged["status"].isin(metrics.GOOD) | (judged["max_ulp_err"] > max_ulp)
    return judged[bad]


def describe(cell) -> str:
    text = f"{cell.dtype} {cell.family} scale={cell.scale:g} n_classes={cell.n_classes}: "
    if cell.status not in metrics.GOOD:
        return text + cell.status + (f" ({cell.message})" if cell.message else "")
    return text + f"{cell.max_ulp_err:.3g} ulp"


def against_baseline(errors: pd.DataFrame, name: str, baseline: str, factor: float) -> list[str]:
    """The cells where `name` fails or its max_ulp_err exceeds factor times the baseline path's in the
    same cell (where the baseline fails, no bound: the callable passes unless it fails too)."""
    keys = [c for c in errors.columns if c in CELL_KEYS]
    mine = errors[(errors["path"] == name) & (errors["status"] != metrics.INPUT_INF)]
    theirs = errors[errors["path"] == baseline].set_index(keys)
    lines = []
    for cell in mine.itertuples():
        other = theirs.loc[tuple(getattr(cell, k) for k in keys)]
        if cell.status not in metrics.GOOD:
            lines.append(describe(cell))
        elif other["status"] in metrics.GOOD and cell.max_ulp_err > factor * other["max_ulp_err"]:
            lines.append(f"{describe(cell)}, over {factor:g} x {baseline}'s {other['max_ulp_err']:.3g} ulp")
    return lines


CELL_KEYS = ("dtype", "family", "scale", "n_rows", "n_classes", *setting_columns())  # and the loss's own settings


def assert_accurate(
    fn: Callable,
    framework: str,
    *,
    max_ulp: float | None = None,
    baseline: str | None = None,
    factor: float | None = None,
    dtypes: Sequence[str] | None = None,
    scales: Sequence[float] | None = None,
    **grid,
) -> pd.DataFrame:
    """Raise AssertionError listing every failing cell; return the errors table when all pass.

    Give max_ulp, or a baseline built-in path of the loss with the factor its error may reach, or both.
    `grid` may give families, n_rows and n_classes as harness.measure takes them, `loss`, the loss fn
    implements (default cross-entropy), and `loss_settings`; None (and what is not given) means
    conf/config.yaml's default.
    """
    if max_ulp is None and baseline is None:
        raise ValueError("assert_accurate needs max_ulp=, or baseline= with factor=, or both")
    if (baseline is None) != (factor is None):
        raise ValueError("baseline= and factor= go together: e.g. baseline='fused', factor=2")
    errors = measure(fn, framework, dtypes=dtypes, scales=scales, paths=(baseline,) if baseline else (), **grid)
    name = str(errors.loc[errors["path"] != baseline, "path"].iloc[0])
    mine = errors[errors["path"] == name]
    lines = [] if max_ulp is None else [describe(cell) for cell in failing_cells(mine, max_ulp).itertuples()]
    lines += [] if baseline is None else against_baseline(errors, name, baseline, factor)
    if lines:
        bounds = [f"{max_ulp:g} ulp"] if max_ulp is not None else []
        bounds += [f"{factor:g} x {baseline}'s error"] if baseline is not None else []
        raise AssertionError(
            f"{len(lines)} of {len(mine)} cells of {framework}/{name} exceed {' or '.join(bounds)} "
            "or fail:\n  " + "\n  ".join(dict.fromkeys(lines))
        )
    return errors
