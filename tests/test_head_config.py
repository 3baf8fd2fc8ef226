"""The head's settings: each bad one fails in one line naming it and the valid choices; a tiny CLI run."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, run_cli
from hydra import compose, initialize_config_dir

from harness.errors import ConfigError
from harness.sweep.config import sweep_config

HEAD = ("families=[head]", "frameworks=[numpy,torch]")


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_lm_head_experiment_sets_the_head_grid():
    sweep = sweep_config(composed("experiment=lm_head"), "lm_head")
    assert sweep.families == ("head",) and sweep.dtypes == ("float16", "bfloat16", "float32")
    assert (sweep.n_rows, sweep.n_classes, sweep.head["d"]) == ((256,), (32000,), 512)
    assert sweep.mode == ("eager", "compiled") and sweep.gradient and sweep.timing.enabled
    assert sweep.head["large_n_classes"] == 128256
    assert list(sweep.frameworks) == list(composed().frameworks)  # every framework of the default list


@pytest.mark.parametrize(
    "override,message",
    [
        ("head.d=0", "head.d must be an integer >= 1, got 0"),
        ("mode=[eager,fast]", "unknown mode 'fast' in mode; valid choices: eager, compiled"),
        ("reduction=[avg]", "unknown reduction 'avg' in reduction; valid choices: none, mean, sum"),
        ("head.paths=[linear]", "unknown head path 'linear' in head.paths; valid choices: linear_fused"),
        ("families=[head,spread]", "cannot share a run"),
        ("file.path=nowhere.npz", "head file not found: nowhere.npz"),
        (
            "label_smoothing=[0,0.1]",
            "take reduction and ignore_fraction of the loss options, not label_smoothing=[0.0, 0.1]",
        ),
        ("option_sets=[{z_loss: 1e-4}]", "not option_sets; leave those at their defaults"),
    ],
)
def test_bad_head_settings_fail_in_one_line(override, message):
    overrides = HEAD + (override,)
    if override.startswith("file."):
        overrides = ("families=[head_file]", override)
    with pytest.raises(ConfigError) as caught:
        sweep_config(composed(*overrides), "test")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_head_file_missing_weight_fails_in_one_line(tmp_path):
    path = tmp_path / "head.npz"
    np.savez(path, hidden=np.ones((2, 4)), labels=np.array([0, 1]))
    with pytest.raises(ConfigError, match=r"no array 'weight' \(weight\) in .*head.npz; it holds: hidden, labels"):
        sweep_config(composed("families=[head_file]", f"file.path={path}"), "test")


@pytest.mark.slow
def test_cli_runs_a_head_file_and_writes_the_head_tables(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "head.npz",
        hidden=rng.standard_normal((4, 8)),
        weight=rng.standard_normal((16, 8)) / np.sqrt(8),
        bias=rng.standard_normal(16),
        labels=np.array([0, 3, 15, 7]),
    )
    out = tmp_path / "run"
    done = run_cli(
        "families=[head_file]",
        f"file.path={tmp_path / 'head.npz'}",
        "frameworks=[numpy]",
        "dtypes=[float32]",
        "scales=[1,10]",
        "reduction=[none,sum]",
        "mode=[eager,compiled]",
        "grad.enabled=true",
        "timing.enabled=true",
        "timing.budget_s=0.01",
        "timing.min_blocks=1",
        "progress=false",
        f"hydra.run.dir={out}",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    errors = pd.read_parquet(out / "errors.parquet")
    assert len(errors) == 2 * 2 * 2 * 2  # scales x paths x modes x reductions
    eager = errors[errors["mode"] == "eager"]
    assert set(eager["status"]) == {"ok"} and eager["max_ulp_err"].max() < 16
    assert set(errors[errors["mode"] == "compiled"]["status"]) == {"unsupported"}
    grads = pd.read_parquet(out / "grad_errors.parquet")
    assert set(grads["wrt"]) == {"h", "W", "b"} and len(grads) == 3 * len(errors)
    ok = grads[grads["status"] == "ok"]
    assert len(ok) == 3 * len(eager) and ok["max_row_rel_err"].max() < 1e-5
    assert (out / "plots" / "pareto_float32.png").is_file()
    assert "The language-model head: accuracy, time and memory" in (out / "report.md").read_text()
    assert json.loads((out / "sweep.json").read_text())["head"]["d"] == 64


def test_a_pt_head_file_is_read_without_pickle_and_a_bad_bias_fails_in_one_line(tmp_path):
    import torch

    from harness.sweep.head_inputs import read_head_file

    arrays = {"hidden": torch.ones(2, 4), "weight": torch.eye(4)[:3], "labels": torch.tensor([0, 2])}
    torch.save(arrays, tmp_path / "head.pt")
    draw = read_head_file(tmp_path / "head.pt")
    assert draw.shape == (2, 4, 3) and draw.bias is None and draw.labels.tolist() == [0, 2]
    torch.save(arrays | {"bias": torch.zeros(4)}, tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match=r"bias must have shape \(3,\), got \(4,\)"):
        read_head_file(tmp_path / "bad.pt")
