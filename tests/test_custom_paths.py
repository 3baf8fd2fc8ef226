"""A user-supplied path registered through configuration, end to end, and its bad forms."""

import pandas as pd
import pytest
from conftest import REPO, run_cli

PLUGINS = REPO / "tests" / "plugins"
GRID = ["experiment=precision_sweep", "frameworks=[numpy,torch]", "paths=[fused]", "scales=[1,1000]", "n_rows=4"]
GRID += ["n_classes=10", "progress=false", "timing.enabled=false"]


def custom(fn: str, framework: str = "torch", name: str = "mine") -> str:
    return f"custom_paths=[{{framework:{framework},name:{name},fn:'{fn}'}}]"


@pytest.mark.slow
def test_a_custom_path_is_swept_tabled_plotted_and_summarised(tmp_path):
    result = run_cli(*GRID, custom("plugin_losses:upcast_cross_entropy"), f"hydra.run.dir={tmp_path}", path=[PLUGINS])
    assert result.returncode == 0, result.stderr
    errors = pd.read_parquet(tmp_path / "errors.parquet")
    mine = errors[errors["path"] == "mine"]
    assert set(mine["framework"]) == {"torch"} and len(mine) == 4 * 2 * 2  # dtypes x families x scales
    # computed in float64 and rounded once: correctly rounded apart from double rounding, so at most ~0.5 ulp
    assert (mine.loc[mine["dtype"] != "float64", "max_ulp_err"] <= 0.5 + 1e-9).all()
    assert "| torch/mine |" in (tmp_path / "summary.md").read_text()
    assert "torch/mine" in result.stdout
    assert (tmp_path / "plots" / "error_vs_scale_spread.png").is_file()


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        (custom("nopkg.losses:f"), "cannot import 'nopkg.losses'"),
        (custom("plugin_losses:absent"), "'plugin_losses' has no attribute 'absent'"),
        (custom("plugin_losses"), "fn must look like 'package.module:function'"),
        (custom("plugin_losses:one_argument"), "must accept (logits, labels), its signature is (logits)"),
        (custom("plugin_losses:mean_loss"), "must return one loss per row"),
        (custom("plugin_losses:upcast_cross_entropy", name="fused"), "not a built-in path"),
        (custom("plugin_losses:upcast_cross_entropy", framework="mxnet"), "unknown framework 'mxnet'"),
        (custom("plugin_losses:upcast_cross_entropy", framework="jax"), "which is not in frameworks=[numpy,torch]"),
    ],
)
def test_bad_custom_paths_fail_before_any_work(tmp_path, monkeypatch, refused, setting, words):
    monkeypatch.syspath_prepend(str(PLUGINS))
    out = tmp_path / "run"
    code, _, stderr = refused(*GRID, setting, f"hydra.run.dir={out}", cwd=tmp_path)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], lines
    assert not out.exists()


@pytest.mark.slow
def test_the_command_refuses_a_path_that_returns_one_loss_per_batch(tmp_path):
    out = tmp_path / "run"
    result = run_cli(*GRID, custom("plugin_losses:mean_loss"), f"hydra.run.dir={out}", path=[PLUGINS])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "must return one loss per row" in lines[0], lines
    assert not out.exists()


@pytest.mark.slow
def test_a_custom_path_is_timed_like_the_built_in_ones(tmp_path):
    timed = [*GRID[:-1], "dtypes=[float32]", "timing.enabled=true", "timing.budget_s=0.01", "timing.min_blocks=1"]
    result = run_cli(*timed, custom("plugin_losses:upcast_cross_entropy"), f"hydra.run.dir={tmp_path}", path=[PLUGINS])
    assert result.returncode == 0, result.stderr
    timings = pd.read_parquet(tmp_path / "timings.parquet")
    rows = timings.set_index(["framework", "path"])
    assert {("torch", "mine"), ("torch", "fused"), ("numpy", "fused")} <= set(rows.index)
    mine = rows.loc[("torch", "mine")]
    assert mine["status"] == "ok" and mine["median_s"] > 0 and mine["n_samples"] >= 1
