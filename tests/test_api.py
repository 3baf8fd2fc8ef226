"""The Python API: harness.run / load / measure and harness.testing.assert_accurate."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, run_cli

import harness
from harness.errors import ConfigError
from harness.testing import assert_accurate

SMALL = ["frameworks=[numpy]", "dtypes=[float16,float64]", "families=[spread]", "scales=[1,100]"]
SMALL += ["n_rows=4", "n_classes=8", "progress=false"]


def textbook(logits, labels):
    """exp(x[y]) / sum(exp(x)), unshifted: float16's exp overflows once a logit passes ln(65504) = 11.09."""
    with np.errstate(all="ignore"):
        rows = np.arange(len(labels))
        return -np.log(np.exp(logits[rows, labels]) / np.exp(logits).sum(axis=1))


def shifted(logits, labels):  # (max - x[y]) + log(sum(exp(x - max))): no overflow, no cancellation
    top = logits.max(axis=1)
    return (top - logits[np.arange(len(labels)), labels]) + np.log(np.exp(logits - top[:, None]).sum(axis=1))


@pytest.mark.slow
def test_importing_harness_loads_no_framework_and_no_pandas():
    code = "import sys, harness; print(sorted({'torch', 'jax', 'pandas', 'hydra'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def api_run(tmp_path_factory):
    return harness.run("precision_sweep", [*SMALL, "timing.enabled=false"], run_dir=tmp_path_factory.mktemp("api"))


@pytest.mark.slow
def test_run_returns_the_tables_it_wrote(api_run):
    assert len(api_run.errors) == 4 * 2 * 2  # paths x dtypes x scales
    assert api_run.timings is None and api_run.grad_errors is None  # not asked for
    assert set(api_run.breakdown["path"]) == {"naive", "softmax_log", "log_softmax_nll", "fused"}
    loaded = harness.load(api_run.dir)
    pd.testing.assert_frame_equal(loaded.errors, api_run.errors)
    assert (api_run.dir / "sweep.json").is_file() and (api_run.dir / "environment.json").is_file()


@pytest.mark.slow
@pytest.mark.cli
def test_the_command_line_with_the_same_settings_gives_the_same_table(api_run, tmp_path):
    result = run_cli("experiment=precision_sweep", *SMALL, "timing.enabled=false", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "errors.parquet"), api_run.errors)


def test_bad_settings_raise_the_command_lines_line_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="^unknown dtype 'float99' in dtypes; valid choices: float16, "):
        harness.run("precision_sweep", ["dtypes=[float99]"], run_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="^unknown experiment 'nope'; valid choices: bce_sweep, blanchard2021"):
        harness.run("nope", run_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="^unknown setting 'n_row'; valid settings: frameworks, "):
        harness.run(overrides=["+n_row=4"], run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="holds no errors.parquet"):
        harness.load(tmp_path)


def test_measure_gives_the_errors_table_of_one_callable():
    errors = harness.measure(textbook, "numpy", dtypes=["float16"], scales=[1, 100], families=["offset"], n_rows=4)
    assert list(zip(errors["framework"], errors["path"], errors["scale"], strict=True)) == [
        ("numpy", "textbook", 1.0),
        ("numpy", "textbook", 100.0),
    ]
    # offset: x = z + scale; at 100 every exp overflows float16, inf / inf = nan; at 1 no logit reaches 11.09
    assert errors["status"].tolist() == ["ok", "nan"] and (errors["n_classes"] == 1000).all()
    assert errors["max_ulp_err"].iloc[0] < 8  # a few roundings of float16 (exp, sum, divide, log)


def test_assert_accurate_passes_a_stable_loss_and_lists_the_cells_of_an_unstable_one():
    grid = dict(dtypes=["float16", "float64"], scales=[1, 100], families=["offset"], n_rows=4, n_classes=8)
    passed = assert_accurate(shifted, "numpy", max_ulp=4, **grid)
    assert (passed["status"] == "ok").all() and passed["max_ulp_err"].max() <= 4
    with pytest.raises(AssertionError) as failure:
        assert_accurate(textbook, "numpy", max_ulp=4, **grid)
    message = str(failure.value)
    # float16 overflows at offset 100 (logits near 100 > 11.09); float64 does not (ln(largest) = 709.78)
    assert message.startswith("1 of 4 cells of numpy/textbook exceed 4 ulp or fail:\n")
    assert "float16 offset scale=100 n_classes=8: nan" in message


@pytest.mark.slow
def test_an_edge_case_run_loads_with_its_table(tmp_path):
    run = harness.run(
        "edge_cases", ["frameworks=[numpy]", "dtypes=[float32]", "progress=false"], run_dir=tmp_path / "e"
    )
    assert run.errors is None and run.edge_cases is not None
    label_inf = run.edge_cases[(run.edge_cases["case"] == "neg_inf_label") & (run.edge_cases["path"] == "fused")]
    assert len(label_inf) == 1 and label_inf["exact_loss"].iloc[0] == np.inf
