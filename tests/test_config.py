"""Configs composed with Hydra's compose API, and every bad setting caught before any work."""

import pytest
from conftest import REPO
from hydra import compose, initialize_config_dir

from harness.sweep.config import ConfigError, sweep_config


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_precision_sweep_sets_the_default_grid():
    sweep = sweep_config(composed("experiment=precision_sweep"), "precision_sweep")
    assert sweep.frameworks == ("numpy", "torch", "jax", "mlx")  # tensorflow is an extra, added by hand
    assert sweep.paths == ("naive", "softmax_log", "log_softmax_nll", "fused")
    assert sweep.dtypes == ("float16", "bfloat16", "float32", "float64")
    assert sweep.families == ("spread", "offset")
    assert (sweep.n_rows, sweep.n_classes) == ((256,), (1000,))
    assert len(sweep.scales) >= 20
    assert sweep.scales[0] == pytest.approx(0.01) and sweep.scales[-1] == pytest.approx(1e4)
    assert sweep.n_cells == 4 * 4 * 4 * 2 * len(sweep.scales)
    assert sweep.timing.enabled and sweep.timing.threads == 1 and sweep.timing_sizes == ((256, 1000),)
    assert not sweep.gradient


def test_command_line_overrides_replace_the_grid():
    cfg = composed(
        "experiment=precision_sweep",
        "frameworks=[numpy,torch]",
        "paths=[naive,fused]",
        "dtypes=[float16]",
        "families=[spread]",
        "n_classes=32000",
        "n_rows=64",
        "seed=1",
        "scales=${logspace:0,2,3}",
    )
    sweep = sweep_config(cfg, "precision_sweep")
    assert sweep.frameworks == ("numpy", "torch") and sweep.paths == ("naive", "fused")
    assert sweep.dtypes == ("float16",) and sweep.families == ("spread",)
    assert (sweep.n_rows, sweep.n_classes, sweep.seed) == ((64,), (32000,), 1)
    assert sweep.scales == pytest.approx((1.0, 10.0, 100.0))


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("frameworks=[numpy,caffe]", ["unknown framework 'caffe'", "numpy, torch, jax, mlx, tensorflow"]),
        ("paths=[softmax]", ["unknown path 'softmax'", "log_softmax_nll"]),
        ("dtypes=[float8]", ["unknown dtype 'float8'", "bfloat16"]),
        ("families=[uniform]", ["unknown family 'uniform'", "spread, offset"]),
        ("scales=[1,0]", ["bad scale 0", "> 0"]),
        ("scales=[-2]", ["bad scale -2"]),
        ("scales=[inf]", ["bad scale inf", "finite"]),
        ("scales=[]", ["scales is empty"]),
        ("dtypes=[]", ["dtypes is empty", "float16"]),
        ("n_classes=1", ["n_classes must be an integer >= 2 (or a list of them), got 1"]),
        ("n_classes=[64,1]", ["n_classes must be an integer >= 2 (or a list of them), got 1"]),
        ("device=tpu", ["unknown device 'tpu'", "cpu, cuda"]),
        ("timing.threads=0", ["timing.threads must be an integer >= 1 or all, got 0"]),
        ("timing.threads=some", ["timing.threads must be an integer >= 1 or all, got 'some'"]),
        ("timing.budget_s=-1", ["timing.budget_s must be a number > 0, got -1"]),
        ("timing.sizes=[[64]]", ["timing.sizes must be [n_rows, n_classes] pairs", "[64]"]),
        ("grad.enabled=maybe", ["grad.enabled must be true or false, got 'maybe'"]),
        ("chunk_size=0", ["chunk_size must be an integer >= 1, got 0"]),
        ("grad=true", ["grad is a group of settings, not a value", "grad.<name>=..."]),
        ("timing=5", ["timing is a group of settings, not a value"]),
        ("file=3", ["file is a group of settings, not a value"]),
        ("scales=${logspace:a,2,3}", ["logspace needs numbers"]),
        ("row_errors=maybe", ["row_errors must be true or false, got 'maybe'"]),
        ("progress=nope", ["progress must be true or false, got 'nope'"]),
        ("n_rows=0", ["n_rows must be an integer >= 1 (or a list of them), got 0"]),
        ("label=worst", ["unknown label 'worst'", "random, adversarial"]),
    ],
)
def test_bad_settings_name_the_value_and_the_choices(override, words):
    with pytest.raises(ConfigError) as caught:
        sweep_config(composed("experiment=precision_sweep", override), "precision_sweep")
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_a_missing_framework_package_names_it_and_how_to_leave_it_out(monkeypatch):
    import harness.paths

    monkeypatch.setattr(harness.paths.importlib.util, "find_spec", lambda name: None if name == "jax" else True)
    with pytest.raises(ConfigError, match=r"'jax' needs the package\(s\) jax .*frameworks=\[numpy,torch,mlx\]"):
        sweep_config(composed("experiment=precision_sweep"), "precision_sweep")


def test_cuda_without_a_gpu_fails_clearly():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: device=cuda is valid here")
    with pytest.raises(ConfigError, match=r"device=cuda but PyTorch sees no CUDA device .* or use device=cpu"):
        sweep_config(composed("experiment=precision_sweep", "device=cuda"), "precision_sweep")
    # NumPy alone never needs a GPU: its rows say cpu
    sweep = sweep_config(composed("experiment=precision_sweep", "device=cuda", "frameworks=[numpy]"), "x")
    assert sweep.device == "cuda"


def test_timing_threads_all_is_every_core():
    from harness.processes import cores

    sweep = sweep_config(composed("experiment=precision_sweep", "timing.threads=all"), "precision_sweep")
    assert sweep.timing.threads == cores() >= 1


def test_resume_must_be_true_or_false():
    from harness.sweep.config import resume_flag

    assert resume_flag(composed("experiment=precision_sweep", "resume=true")) is True
    with pytest.raises(ConfigError, match="resume must be true or false, got 'maybe'"):
        resume_flag(composed("experiment=precision_sweep", "resume=maybe"))


def test_option_sets_run_each_named_combination_over_the_lists_it_leaves_open():
    sweep = sweep_config(
        composed(
            "experiment=precision_sweep",
            "reduction=[mean,sum]",
            "option_sets=[{},{label_smoothing: 0.1},{ignore_fraction: 0.1, z_loss: 1e-4}]",
        ),
        "precision_sweep",
    )
    grid = [(o.reduction, o.label_smoothing, o.ignore_fraction, o.z_loss) for o in sweep.option_grid]
    assert grid == [
        ("mean", 0.0, 0.0, 0.0),
        ("sum", 0.0, 0.0, 0.0),
        ("mean", 0.1, 0.0, 0.0),
        ("sum", 0.1, 0.0, 0.0),
        ("mean", 0.0, 0.1, 1e-4),
        ("sum", 0.0, 0.1, 1e-4),
    ]
    assert sweep.n_cells == 64 * 25 * 2 * 6  # framework x path x dtype x scales x families x option cells


def test_training_losses_runs_each_option_alone_and_the_usual_combination():
    sweep = sweep_config(composed("experiment=training_losses"), "training_losses")
    grid = sweep.option_grid
    assert len(grid) == 8 and all(o.reduction == "mean" for o in grid)
    assert grid[0].is_default is False and grid[0].label_smoothing == 0.0  # the plain mean
    last = grid[-1]
    assert (last.ignore_fraction, last.label_smoothing, last.z_loss) == (0.1, 0.1, 1e-4)
    # each other set changes exactly one option from the plain mean
    plain = grid[0].columns()
    assert all(sum(o.columns()[k] != v for k, v in plain.items()) == 1 for o in grid[1:-1])


@pytest.mark.parametrize(
    "override, words",
    [
        ("option_sets=[{smoothing: 0.1}]", ["unknown option 'smoothing' in option_sets", "label_smoothing"]),
        ("option_sets=[{label_smoothing: 1.5}]", ["bad label_smoothing 1.5", "[0, 1)"]),
        ("option_sets=[]", ["bad option_sets []", "null or a list of mappings"]),
        ("option_sets=[0.1]", ["bad option_sets entry 0.1"]),
    ],
)
def test_bad_option_sets_fail_in_one_line(override, words):
    with pytest.raises(ConfigError) as caught:
        sweep_config(composed("experiment=precision_sweep", override), "precision_sweep")
    assert "\n" not in str(caught.value)
    for word in words:
        assert word in str(caught.value)


def test_n_rows_takes_a_list_and_each_row_count_is_a_cell():
    sweep = sweep_config(composed("experiment=precision_sweep", "n_rows=[1000,100]", "scales=[1.0]"), "precision_sweep")
    assert sweep.n_rows == (100, 1000)
    assert sweep.sizes("spread") == ((100, 1000), (1000, 1000))
    assert sweep.n_cells == 64 * 2 * 2  # framework x path x dtype x families x row counts
    assert sweep.timing_sizes == ((100, 1000),)
