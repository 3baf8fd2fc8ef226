"""Gradients through the runner and the command line: the grad_errors table, plots and breakdown."""

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, run_cli, small_sweep

from harness.outputs import tables
from harness.sweep import metrics, runner

PLUGINS = REPO / "tests" / "plugins"


@pytest.fixture(scope="module")
def grad_errors() -> pd.DataFrame:
    sweep = small_sweep(
        paths=("naive", "log_softmax_nll", "fused", "log1p_lse"),
        dtypes=("float32", "float64"),
        families=("spread",),
        scales=(0.1, 10.0, 1000.0),
        n_rows=6,
        n_classes=40,
        seed=2,
        gradient=True,
    )
    records = []
    runner.sweep_cells(sweep, records.append)
    return tables.grad_errors_frame(records, runner.NAME_ORDER)


@pytest.mark.slow
def test_grad_errors_has_one_documented_row_per_cell(grad_errors):
    assert list(grad_errors.columns) == list(tables.GRAD_COLUMNS)
    assert len(grad_errors) == 3 * 4 * 2 * 3
    assert not grad_errors.duplicated(list(tables.KEY_COLUMNS)).any()


@pytest.mark.slow
def test_stable_gradients_are_accurate_relative_to_the_row(grad_errors):
    stable = grad_errors[grad_errors["path"].isin(["log_softmax_nll", "fused", "log1p_lse"])]
    assert stable["status"].isin(metrics.GOOD).all()  # a correctly rounded 0 entry (exact_underflow) is no failure
    # at scale 1000 a confident row's whole gradient is below 1e-300 and comes out 0: 100% of the row
    stable = stable[stable["scale"] <= 10]
    u = stable["dtype"].map({"float32": 2.0**-24, "float64": 2.0**-53})
    # exp(x - lse) amplifies the rounding of its argument by |x - lse|, a few times the largest logit
    assert (stable["max_row_rel_err"] <= u * (16 + 4 * stable["max_logit"].abs())).all()


@pytest.mark.slow
def test_naive_backward_breaks_where_its_forward_overflows(grad_errors):
    naive = grad_errors[(grad_errors["path"] == "naive") & (grad_errors["scale"] == 1000.0)]
    assert naive["status"].isin(["inf", "nan"]).all()
    calm = grad_errors[(grad_errors["path"] == "naive") & (grad_errors["scale"] == 0.1)]
    assert (calm["status"] == "ok").all()


@pytest.mark.slow
def test_gradient_sweep_through_the_cli_with_a_custom_path(tmp_path):
    custom = "custom_paths=[{framework:torch,name:mine,fn:'plugin_losses:upcast_cross_entropy'}]"
    result = run_cli(
        "experiment=gradient_sweep",
        "frameworks=[numpy,torch]",
        "paths=[naive,fused]",
        "dtypes=[float32]",
        "scales=[1,100]",
        "n_rows=4",
        "n_classes=20",
        custom,
        "progress=false",
        f"hydra.run.dir={tmp_path}",
        path=[PLUGINS],
    )
    assert result.returncode == 0, result.stderr
    grads = pd.read_parquet(tmp_path / "grad_errors.parquet")
    assert set(grads["path"]) == {"naive", "fused", "mine"}
    mine = grads[grads["path"] == "mine"]
    assert (mine["status"] == "ok").all() and np.all(mine["max_row_rel_err"] < 2.0**-20)
    for name in ("grad_breakdown.csv", "plots/grad_error_vs_scale_spread.png", "report.html"):
        assert (tmp_path / name).is_file(), name
    report = (tmp_path / "report.md").read_text()
    assert "<summary>Gradients</summary>" in report and "grad_error_vs_scale_spread" in report


@pytest.mark.slow
def test_gradient_sweep_of_the_default_frameworks_agrees_with_theory(tmp_path):
    """The gradient_sweep experiment (its 13 scales from 0.01 to 10^4, 1000 classes) on 8 rows, the
    default frameworks, the paths that break: every gradient break lies where theory puts it, and
    every loss disagreement names the measured fact that explains it."""
    result = run_cli(
        "experiment=gradient_sweep",
        "paths=[naive,softmax_log,fused]",
        "n_rows=8",
        "progress=false",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr
    grads = pd.read_parquet(tmp_path / "grad_breakdown.parquet")
    assert {"numpy", "torch", "jax", "mlx"} <= set(grads["framework"])
    assert grads["matches_theory"].all(), grads.loc[~grads["matches_theory"], ["framework", "path", "dtype", "family"]]
    assert (grads["theory_cause"] != "none").sum() >= 40  # naive and softmax_log break in every dtype
    loss = pd.read_parquet(tmp_path / "breakdown.parquet")
    explained = loss["explanation"].str.contains(r"\((?:measured|path entry)\)", regex=True)
    unexplained = loss[(loss["matches_theory"] == False) & ~explained]  # noqa: E712
    assert unexplained.empty, unexplained[["framework", "path", "dtype", "family", "explanation"]]
