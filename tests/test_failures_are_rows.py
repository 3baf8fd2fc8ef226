"""Every kind of run (the grid, the loss options, the head, the edge cases) turns a failure into a
row: a transfer that raises, a path that raises; head rows record the device they ran on and every
fact their backend measured; inputs that once crashed the option route give a table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import harness
from harness import api, pipeline
from harness.backends import numpy as numpy_backend
from harness.errors import ConfigError
from harness.paths import numpy_head, numpy_paths
from harness.sweep import cells

QUICK = ["timing.enabled=false", "progress=false", "workers=1"]
FACTS = ("flushes_subnormals", "exp_dtype", "exp_overflow", "exp_underflow", "quotient_flushes")
# one small run of each kind: (experiment, overrides)
KINDS = {
    "grid": (None, ["families=[spread]", "scales=[1.0]", "n_rows=4", "n_classes=6", "dtypes=[float32]"]),
    "options": (
        None,
        ["families=[spread]", "scales=[1.0]", "n_rows=4", "n_classes=6", "dtypes=[float32]", "label_smoothing=[0.1]"],
    ),
    "head": ("lm_head", ["n_rows=4", "n_classes=6", "head.d=3", "dtypes=[float32]", "mode=[eager]"]),
    "edge": ("edge_cases", ["dtypes=[float32]"]),
}
KIND_SETTINGS = {"head": ["head.large_n_classes=null", "head.paths=[linear_fused]", "reduction=[mean]"]}


def run_kind(kind: str, folder, *more: str) -> pd.DataFrame:
    experiment, overrides = KINDS[kind]
    settings = ["frameworks=[numpy,torch]", *QUICK, *overrides, *KIND_SETTINGS.get(kind, []), *more]
    if kind != "head":
        settings.append("paths=[fused]")
    run = harness.run(experiment, settings, run_dir=folder)
    return run.edge_cases if kind == "edge" else run.errors


def grad_rows(folder) -> pd.DataFrame:
    return pd.read_parquet(folder / "grad_errors.parquet")


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_transfer_that_raises_is_a_row_in_every_kind_of_run(kind, tmp_path, monkeypatch):
    real = numpy_backend.transfer  # every hand-over goes through it (to_native too)

    def refusing(array, device="cpu"):
        if np.shape(array)[0] > 1:  # the measured facts' one-row samples still pass
            raise RuntimeError("cannot hand this array over")
        return real(array, device)

    monkeypatch.setattr(numpy_backend, "transfer", refusing)
    table = run_kind(kind, tmp_path, "grad.enabled=true")
    mine = table[table["framework"] == "numpy"]
    assert len(mine) > 0
    assert set(mine["status"]) == {"error"}
    assert mine["loss_returned" if kind == "edge" else "message"].str.contains("cannot hand this array over").all()
    theirs = table.loc[table["framework"] == "torch", "loss_returned" if kind == "edge" else "message"]
    assert len(theirs) == len(mine) and not theirs.str.contains("cannot hand").any()
    if kind != "edge":
        grads = grad_rows(tmp_path)
        assert set(grads.loc[grads["framework"] == "numpy", "status"]) == {"error"}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_path_that_raises_is_a_row_in_every_kind_of_run(kind, tmp_path, monkeypatch):
    def raising(*args, **kwargs):
        raise RuntimeError("this path breaks")

    monkeypatch.setitem(numpy_paths.PATHS, "fused", raising)
    monkeypatch.setattr(numpy_head, "build", raising)
    table = run_kind(kind, tmp_path)
    mine = table[table["framework"] == "numpy"]
    assert len(mine) > 0
    assert set(mine["status"]) == {"error"}
    shown = mine["loss_returned" if kind == "edge" else "message"]
    assert shown.str.contains("this path breaks").all()


@pytest.fixture
def fake_cuda(monkeypatch):
    """PyTorch on a device named cuda that computes on the CPU: what a row records, without a GPU."""
    from harness.backends import torch as torch_backend

    real_transfer, real_flushes = torch_backend.transfer, torch_backend.flushes_subnormals
    monkeypatch.setattr(torch_backend, "check_device", lambda device: None)
    monkeypatch.setattr(torch_backend, "transfer", lambda array, device="cpu": real_transfer(array, "cpu"))
    monkeypatch.setattr(torch_backend, "flushes_subnormals", lambda dtype, device="cpu": real_flushes(dtype, "cpu"))


@pytest.mark.parametrize("scale", [1.0, 1e6])  # 1e6: h @ W.T overflows float16, rows of status input_inf
def test_head_rows_record_their_device_and_every_measured_fact(scale, tmp_path, fake_cuda):
    errors = run_kind("head", tmp_path, "device=cuda", f"scales=[{scale}]", "dtypes=[float16]")
    devices = dict(zip(errors["framework"], errors["device"], strict=True))
    assert devices == {"numpy": "cpu", "torch": "cuda"}
    assert errors[list(FACTS)].notna().all().all()
    if scale > 1:
        assert set(errors["status"]) == {"input_inf"}


def test_row_errors_on_a_head_run_is_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError) as refused:
        harness.run("lm_head", ["row_errors=true", *QUICK], run_dir=tmp_path)
    assert "\n" not in str(refused.value)
    assert "row_errors=true" in str(refused.value) and "row_errors=false" in str(refused.value)


def errors_of(*overrides: str) -> pd.DataFrame:
    job, experiment = api.settings_of(api.compose_config([*QUICK, "frameworks=[numpy,torch]", *overrides]))
    sweep, _ = api.prepare(job, experiment)
    return pipeline.sweep_errors(sweep)


OPTIONS = [
    "target=[dense]",
    "label_smoothing=[0.1]",
    "z_loss=[0.0001]",
    "softcap=[30.0]",
    "class_weights=[random]",
    "ignore_fraction=[0.5]",
    "reduction=[mean]",
]
ONE_ROW_INPUTS = {
    "inline": ["families=[inline]", "inline.logits=[[0.1,-0.2]]", "inline.labels=[1]", "scales=[1.0]"],
    "spread": ["families=[spread]", "n_rows=1", "n_classes=2", "seed=12", "scales=[1.0]"],
}


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("given", list(ONE_ROW_INPUTS))
def test_every_loss_option_on_a_row_whose_target_gap_rounds_gives_a_table(given, option):
    errors = errors_of(*ONE_ROW_INPUTS[given], option, "dtypes=[float64,float16]", "paths=[naive,fused]")
    assert len(errors) == 2 * 2 * 2
    assert set(errors["status"]) <= {"ok", "undefined", "unsupported"}


def test_the_largest_gap_keeps_the_row_of_the_lowest_target():
    """0.1 - (-0.2) rounds to 0.30000000000000004, so `largest - floor` lies below the target -0.2."""
    from harness.sweep.option_cells import target_quantities_by_block

    found = target_quantities_by_block(np.array([[0.1, -0.2]]), np.array([1]))
    assert found == {"max_target_gap": 0.1 - -0.2, "max_neg_target_logit": 0.2}
    assert found == cells.target_quantities(np.array([[0.1, -0.2]]), np.array([1]))


def test_the_articles_dense_form_is_nan_at_scale_21_in_float64():
    """-sum(log(softmax(x)) t) on [12.3, -5.2, 31.4] x 21: p_1 = exp(-36.6 * 21) underflows to 0, so
    0 * log(0) is NaN for labels 0 and 2 (exact losses 401.1 and 6.4e-175) and label 1's loss is inf."""
    errors = errors_of(
        "experiment=seed_article", "target=[dense]", "scales=[21.0]", "dtypes=[float64]", "paths=[softmax_log]"
    )
    numpy_row = errors[errors["framework"] == "numpy"].iloc[0]
    assert numpy_row["status"] == "nan"
    assert numpy_row["n_nonfinite"] == 3
    assert numpy_row["max_exact_loss"] == pytest.approx((31.4 - -5.2) * 21, rel=1e-12)


def test_every_row_ignored_gives_a_table_for_every_reduction(tmp_path):
    """ignore_fraction=1: reduction none keeps no row (status ok, no errors to report), a mean is undefined."""
    settings = [*QUICK, "families=[inline]", "inline.logits=[[-0.8,7.0],[-0.7,1.59]]", "inline.labels=[1,1]"]
    settings += ["frameworks=[numpy]", "paths=[naive]", "dtypes=[bfloat16]", "scales=[0.3]", "grad.enabled=true"]
    settings += ["ignore_fraction=[1.0]", "class_weights=[random]", "z_loss=[0.0001]", "reduction=[none,mean]"]
    run = harness.run(None, settings, run_dir=tmp_path)
    statuses = dict(zip(run.errors["reduction"], run.errors["status"], strict=True))
    assert statuses == {"none": "ok", "mean": "undefined"}
    assert run.errors.loc[run.errors["reduction"] == "none", "max_ulp_err"].isna().all()
