"""Our exact reference in your own tests: `assert_accurate(my_loss, "torch", max_ulp=2)`.

    from harness.testing import assert_accurate

    def test_my_kernel_is_accurate():
        assert_accurate(my_cross_entropy, "torch", max_ulp=4, dtypes=["float32"], scales=[1, 100, 1e4])

The callable is measured by harness.measure against the exact loss of the dtype-rounded logits; a
cell fails when its status is a failure (inf, nan, error, unsupported; a correctly rounded inf or
0 is not) or its max_ulp_err exceeds max_ulp. Cells whose rounded logits overflow the dtype
(status input_inf) are not the callable's fault and are skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd

from harness.api import measure
from harness.sweep import metrics

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


def assert_accurate(
    fn: Callable,
    framework: str,
    *,
    max_ulp: float,
    dtypes: Sequence[str] | None = None,
    scales: Sequence[float] | None = None,
    **grid,
) -> pd.DataFrame:
    """Raise AssertionError listing every failing cell; return the errors table when all pass.

    `grid` may give families, n_rows and n_classes as harness.measure takes them, and `loss`, the loss
    fn implements (default cross-entropy); None (and what is not given) means conf/config.yaml's default.
    """
    errors = measure(fn, framework, dtypes=dtypes, scales=scales, **grid)
    failing = failing_cells(errors, max_ulp)
    if not failing.empty:
        lines = [describe(cell) for cell in failing.itertuples()]
        raise AssertionError(
            f"{len(failing)} of {len(errors)} cells of {framework}/{errors['path'].iloc[0]} exceed {max_ulp:g} ulp "
            "or fail:\n  " + "\n  ".join(lines)
        )
    return errors
