"""Experiment edge_cases: the exact answers by hand, the outcome vocabulary on hand-made values, the
settings, and one run of the command line with NumPy and PyTorch (their known behaviour checked)."""

from __future__ import annotations

import math
import os
import sys

import commands
import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from harness import api
from harness.dtypes import DTYPES
from harness.errors import ConfigError
from harness.sweep.edge_cases import CASES_BY_NAME, edge_input, exact_values, gradient_outcome, loss_outcome, worst
from harness.sweep.edge_runner import informative_line

F16, F32, F64 = DTYPES["float16"], DTYPES["float32"], DTYPES["float64"]
LN4, LN3 = math.log(4.0), math.log(3.0)


def exact_of(case: str, logits, labels):
    held = np.array(logits, dtype=np.float64)
    return exact_values(CASES_BY_NAME[case], held, np.array(labels), F64, seed=0)


def test_exact_loss_and_gradient_by_hand():
    # row 0: -inf at the label, the rest 0: lse = ln 3 finite minus -inf = +inf; row 1: four zeros, lse = ln 4
    found = exact_of("neg_inf_label", [[-np.inf, 0, 0, 0], [0, 0, 0, 0]], [0, 1])
    assert found.loss.hi[0] == np.inf and found.loss.hi[1] == pytest.approx(LN4, rel=1e-15)
    assert np.isnan(found.gradient.hi[0]).all()  # the gradient of an infinite loss: undefined
    np.testing.assert_allclose(found.gradient.hi[1], [0.25, -0.75, 0.25, 0.25], rtol=1e-15)
    # a masked class other than the label: ln 3, and the -inf class's gradient entry is 0
    masked = exact_of("neg_inf_other", [[0, -np.inf, 0, 0], [0, 0, 0, 0]], [0, 1])
    assert masked.loss.hi[0] == pytest.approx(LN3, rel=1e-15)
    np.testing.assert_allclose(masked.gradient.hi[0], [1 / 3 - 1, 0, 1 / 3, 1 / 3], rtol=1e-15)


@pytest.mark.parametrize(
    ("case", "row", "label"),
    [
        ("all_neg_inf", [-np.inf] * 4, 0),
        ("nan_logit", [0, np.nan, 0, 0], 0),
        ("label_n_classes", [0, 0, 0, 0], 4),
        ("label_minus_one", [0, 0, 0, 0], -1),
    ],
)
def test_undefined_cases_have_no_exact_value(case, row, label):
    found = exact_of(case, [row, [0, 0, 0, 0]], [label, 1])
    assert np.isnan(found.loss.hi[0]) and np.isnan(found.gradient.hi[0]).all()
    assert found.loss.hi[1] == pytest.approx(LN4, rel=1e-15)  # the other row keeps its exact loss


def test_mean_over_no_kept_rows_is_undefined():
    found = exact_of("ignore_all_mean", [[0, 0, 0, 0], [1, 2, 3, 4]], [0, 1])
    assert found.loss.hi.shape == (1,) and np.isnan(found.loss.hi[0]) and np.isnan(found.gradient.hi).all()


def test_edge_input_changes_the_first_row_only():
    z, labels = np.zeros((3, 5)), np.array([4, 2, 3])
    x, y = edge_input(CASES_BY_NAME["neg_inf_label"], z, labels)
    assert y.tolist() == [0, 2, 3] and x[0].tolist() == [-np.inf, 0, 0, 0, 0] and (x[1:] == 0).all()
    assert edge_input(CASES_BY_NAME["label_n_classes"], z, labels)[1].tolist() == [5, 2, 3]
    assert edge_input(CASES_BY_NAME["label_minus_one"], z, labels)[1].tolist() == [-1, 2, 3]
    assert np.isnan(edge_input(CASES_BY_NAME["nan_logit"], z, labels)[0][0, 1])


def test_loss_outcome_on_hand_made_values():
    assert loss_outcome(np.nan, LN4, 0.0, F32) == "nan"
    assert loss_outcome(2.0, np.nan, 0.0, F32) == "number"  # silently a number: no exact value exists
    assert loss_outcome(np.inf, np.nan, 0.0, F32) == "inf"
    assert loss_outcome(np.inf, np.inf, 0.0, F32) == "exact"  # -inf at the label: +inf is the answer
    assert loss_outcome(5.0, np.inf, 0.0, F32) == "wrong"
    assert loss_outcome(np.inf, LN4, 0.0, F32) == "inf"
    assert loss_outcome(float(np.float32(LN4)), LN4, 0.0, F32) == "exact"
    # 1% off: 14 ulps of float16 at ln 4 (4.8 bits of 11 lost), about 2**17 ulps of float32 (17.8 of 24)
    assert loss_outcome(LN4 * 1.01, LN4, 0.0, F16) == "exact"
    assert loss_outcome(LN4 * 1.01, LN4, 0.0, F32) == "wrong"
    assert loss_outcome(np.inf, 70000.0, 0.0, F16) == "exact"  # 70000 rounds to inf in float16


def test_gradient_outcome_on_hand_made_values():
    hi, lo = np.array([0.25, -0.75, 0.25, 0.25]), np.zeros(4)
    assert gradient_outcome(hi.copy(), hi, lo, F32) == "exact"
    assert gradient_outcome(hi + [0.1, 0, 0, 0], hi, lo, F32) == "wrong"  # 0.1 / 0.75 of the row's scale
    assert gradient_outcome([0.25, np.nan, 0.25, 0.25], hi, lo, F32) == "nan"
    assert gradient_outcome([0.25, -np.inf, 0.25, 0.25], hi, lo, F32) == "inf"
    assert gradient_outcome(np.zeros(4), np.full(4, np.nan), lo, F32) == "number"
    assert worst(["exact", "nan", "number"]) == "nan" and worst(["number", "error"]) == "error" and worst([]) == ""


def test_informative_line_skips_tensorflow_preamble():
    text = 'Graph execution error:\n\nDetected at node X defined at (most recent call last):\n  File "a.py", line 1\n'
    text += "Received a label value of 8 which is outside the valid range of [0, 8).\n\t [[{{node X}}]]"
    assert informative_line(text) == "Received a label value of 8 which is outside the valid range of [0, 8)."
    assert informative_line("Target 8 is out of bounds.") == "Target 8 is out of bounds."


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("edge_cases=maybe", "edge_cases must be true or false"),
        ("n_classes=[8,16]", "edge_cases takes one n_rows and one n_classes"),
        ("n_rows=1", "edge_cases needs n_rows >= 2"),
    ],
)
def test_bad_settings_fail_in_one_line(override, words):
    job, name = api.settings_of(api.compose_config(["experiment=edge_cases", override]))
    with pytest.raises(ConfigError, match=words):
        api.prepare(job, name)


@pytest.mark.slow
@pytest.mark.cli
def test_command_line_run_writes_table_matrix_and_report(tmp_path):
    command = [sys.executable, "-m", "harness", "experiment=edge_cases", "frameworks=[numpy,torch]"]
    command += ["dtypes=[float32]", "progress=false", f"hydra.run.dir={tmp_path}"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = commands.run(command, REPO, env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| `label_n_classes` | undefined |" in result.stdout  # the matrix is printed
    table = pd.read_parquet(tmp_path / "edge_cases.parquet")
    assert (
        len(table) == 8 * 2 * 4 and (tmp_path / "edge_cases.csv").is_file() and (tmp_path / "edge_cases.md").is_file()
    )
    cell = table.set_index(["case", "framework", "path"]).sort_index()
    fused = cell.loc[("label_n_classes", "torch", "fused")]
    assert fused["loss_outcome"] == "error" and fused["loss_returned"].startswith("IndexError")
    assert fused["status"] == "error" and np.isnan(fused["exact_loss"]) and fused["why_undefined"]
    assert cell.loc[("nan_logit", "torch", "fused"), "loss_outcome"] == "nan"
    assert cell.loc[("neg_inf_label", "torch", "fused"), "exact_loss"] == np.inf
    assert cell.loc[("neg_inf_label", "torch", "fused"), "status"] == "exact_overflow"
    assert cell.loc[("label_minus_one", "numpy", "fused"), "loss_outcome"] == "number"  # -1 wraps to the last class
    finite = table[table["case"] == "finite"]
    assert (finite["loss_outcome"] == "exact").all() and (finite["grad_outcome"] == "exact").all()
    report = (tmp_path / "report.md").read_text()
    assert "<summary>Edge cases in full</summary>" in report and (tmp_path / "report.html").is_file()
