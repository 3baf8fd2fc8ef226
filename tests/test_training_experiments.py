"""The training_losses and token_sweep experiments: their summaries, and the numbers theory fixes."""

import math

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli
from harness.experiments import token_sweep, training_losses


@pytest.mark.slow
def test_a_float16_sum_over_tokens_overflows_correctly_and_its_mean_is_nan(tmp_path):
    """10**5 rows of 16 N(0, 1) logits: each loss is about ln 16 + 1/2 = 3.3, their sum 3.3e5 is past
    float16's 65504, so inf is the correctly rounded sum; the mean divides that inf by a count that
    overflows too (10**5 > 65504): NaN, where the exact mean is about 3.3 (pytorch#29429)."""
    result = run_cli(
        "experiment=token_sweep",
        "frameworks=[torch,jax]",
        "dtypes=[float16]",
        "n_rows=[1000,100000]",
        "progress=false",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr
    errors = pd.read_parquet(tmp_path / "errors.parquet").set_index(["framework", "reduction", "n_rows"])
    for framework in ("torch", "jax"):
        assert errors.loc[(framework, "sum", 100000), "status"] == "exact_overflow"
        assert errors.loc[(framework, "mean", 100000), "status"] == "nan"
        assert 3.0 < errors.loc[(framework, "mean", 100000), "max_exact_loss"] < 3.6
        assert errors.loc[(framework, "sum", 1000), "status"] == "ok"  # 3.3e3: finite, a few ulps at most
        assert errors.loc[(framework, "sum", 1000), "max_ulp_err"] < 4
    summary = (tmp_path / "token_sweep.md").read_text()
    assert "- torch/fused: exact_overflow from 100,000 rows" in summary
    assert "- jax/fused: nan from 100,000 rows" in summary


def _cells(rows):
    columns = ["framework", "path", "n_rows", "status", "max_ulp_err", "max_exact_loss"]
    return pd.DataFrame(rows, columns=columns)


def test_token_sweep_names_the_first_row_count_that_breaks_or_drifts():
    cells = _cells(
        [
            ("mlx", "fused", 100, "ok", 0.5, 3.3),
            ("mlx", "fused", 1000, "ok", 15.0, 3.3),
            ("mlx", "fused", 10000, "ok", 86.0, 3.3),
            ("torch", "fused", 100, "ok", 0.5, 3.3),
            ("torch", "fused", 1000, "inf", np.nan, 7e4),
        ]
    )
    assert token_sweep.first_failures(cells) == [
        "- mlx/fused: more than 4 ulps from 1,000 rows (worst 86 ulps at 10,000)",
        "- torch/fused: inf from 1,000 rows (exact value 70000)",
    ]
    table = token_sweep.error_table(cells)
    assert "| mlx/fused | 0.5 | 15 | 86 |" in table
    assert "| torch/fused | 0.5 | inf |  |" in table


@pytest.mark.parametrize(
    "changes, name",
    [
        ({}, "mean"),
        ({"label_smoothing": 0.1}, "mean, label_smoothing=0.1"),
        ({"softcap": 30.0, "target": "dense"}, "mean, softcap=30, target=dense"),
        ({"ignore_fraction": 0.1, "z_loss": 1e-4}, "mean, ignore_fraction=0.1, z_loss=0.0001"),
    ],
)
def test_an_option_set_is_named_by_what_it_changes(changes, name):
    row = {"reduction": "mean", **training_losses.OPTIONS, **changes}
    row["class_weights"] = row["class_weights"] if "class_weights" in changes else math.nan  # as read back
    row["softcap"] = row["softcap"] if "softcap" in changes else math.nan
    assert training_losses.option_set(pd.Series(row)) == name


@pytest.mark.slow
def test_float16_label_smoothing_in_torch_overflows_where_the_exact_mean_is_ordinary(tmp_path):
    """F.cross_entropy(label_smoothing=0.1) in float16 sums lse - x_j over every class: with 8000
    classes of spread-3 logits each term is about 13, the sum about 1e5 > 65504, so the loss is inf
    where the exact smoothed mean is about 13 (transformers#10674). Without smoothing it is finite."""
    result = run_cli(
        "experiment=training_losses",
        "frameworks=[torch]",
        "dtypes=[float16]",
        "n_rows=4",
        "n_classes=8000",
        "option_sets=[{},{label_smoothing: 0.1}]",
        "grad.enabled=false",
        "progress=false",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr
    errors = pd.read_parquet(tmp_path / "errors.parquet").set_index("label_smoothing")
    assert errors.loc[0.1, "status"] == "inf" and 10 < errors.loc[0.1, "max_exact_loss"] < 16
    assert errors.loc[0.0, "status"] == "ok" and errors.loc[0.0, "max_ulp_err"] < 4
    assert "| mean, label_smoothing=0.1 | inf |" in (tmp_path / "training_losses.md").read_text()
