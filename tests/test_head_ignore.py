"""ignore_fraction in the language-model head: rows labelled -100 give loss 0 and gradient rows 0,
the sum adds the kept rows and the mean divides by their count; a mean over none is `undefined`."""

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import commands
import mpmath
import numpy as np
import pandas as pd
import pytest

from harness import backends
from harness.dtypes import DTYPES, round_to
from harness.exact.dd import ExactValue
from harness.exact.head import divided
from harness.paths import head
from harness.sweep import head_inputs, head_runner, metrics
from harness.sweep.option_inputs import ignored_rows

FRAMEWORKS = ["numpy", "torch", "jax", "mlx", "tensorflow"]
REDUCTIONS = ["none", "mean", "sum"]


def run(framework, path, reduction, h, W, b, labels, u=None, chunk_size=16):
    """Loss and (dL/dh, dL/dW, dL/db) of one path with `ignore` on, as float64 NumPy arrays."""
    backend = backends.load(framework)
    loss_fn, grad_fn = head.implementations_module(framework).build(path, reduction, "eager", chunk_size, ignore=True)
    with backend.dtype_scope(h.dtype.name):
        native = [None if a is None else backend.to_native(a, labels)[0] for a in (h, W, b)]
        y = backend.to_native(h, labels)[1]
        u_native = backend.to_native((np.ones(len(labels)) if u is None else u).astype(h.dtype), labels)[0]
        loss = backend.to_numpy(loss_fn(*native, y))[0]
        grads = grad_fn(*native, y, u_native)
        grads = [None if g is None else backend.to_numpy(g)[0].astype(np.float64) for g in grads]
    return np.atleast_1d(loss).astype(np.float64), grads


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("path", head.DEFAULT_HEAD_PATHS)
def test_uniform_logits_with_two_rows_ignored(framework, path):
    """4 rows, every logit 0 over 3 classes: each kept loss ln 3, G = 1/3 - onehot(y) on kept rows."""
    h = np.eye(4, 2, dtype=np.float32)
    W, b = np.zeros((3, 2), dtype=np.float32), np.zeros(3, dtype=np.float32)
    labels = np.array([0, -100, 1, -100])
    loss, (dh, dW, db) = run(framework, path, "none", h, W, b, labels, u=np.array([1.0, 1.25, 1.5, 1.75]))
    assert loss == pytest.approx([np.log(3), 0, np.log(3), 0], rel=2**-22)
    assert loss[1] == 0 and loss[3] == 0
    assert db == pytest.approx([1 / 3 - 1 + 1.5 / 3, 1 / 3 + 1.5 / 3 - 1.5, 2.5 / 3], abs=2**-22)
    assert dh.tolist() == np.zeros((4, 2)).tolist()  # W = 0
    # dL/dW = G.T @ h: row 0's G in column 0; row 1 (h = e_2) is ignored, so column 1 is 0
    assert dW == pytest.approx(np.array([[1 / 3 - 1, 0], [1 / 3, 0], [1 / 3, 0]]), abs=2**-22)
    mean, (_, _, db_mean) = run(framework, path, "mean", h, W, b, labels)
    total, _ = run(framework, path, "sum", h, W, b, labels)
    assert mean == pytest.approx([np.log(3)], rel=2**-22)  # (ln 3 + ln 3) / 2 kept rows, not / 4
    assert total == pytest.approx([2 * np.log(3)], rel=2**-22)
    assert db_mean == pytest.approx([(1 / 3 - 1 + 1 / 3) / 2, (1 / 3 + 1 / 3 - 1) / 2, 1 / 3], abs=2**-22)


def small_head(dtype="float32"):
    draw = head_inputs.draw_head(8, 50, 16, True, seed=0)
    rounded = [round_to(a, dtype) for a in (draw.hidden, draw.weight, draw.bias)]
    exact = head_runner.ExactHead(*(a.astype(np.float64) for a in rounded), draw.labels, DTYPES[dtype])
    kept = ~ignored_rows(8, 0.25, seed=0)
    return rounded, draw.labels, kept, exact


def test_the_ignored_rows_are_round_f_n_rows_of_the_option_cells_draw():
    kept = ~ignored_rows(8, 0.25, seed=0)
    assert np.count_nonzero(~kept) == 2 and np.array_equal(kept, small_head()[2])


def test_exact_head_with_ignored_rows_by_hand():
    _, labels, kept, exact = small_head("float64")
    rows = exact.loss("none").to_float64()
    none = exact.loss("none", kept).to_float64()
    assert none[~kept].tolist() == [0.0, 0.0] and np.array_equal(none[kept], rows[kept])
    assert exact.loss("sum", kept).to_float64()[0] == pytest.approx(rows[kept].sum(), rel=2**-50)
    assert exact.loss("mean", kept).to_float64()[0] == pytest.approx(rows[kept].sum() / 6, rel=2**-50)
    total, mean = exact.gradients("sum", kept), exact.gradients("mean", kept)
    for wrt in ("h", "W", "b"):
        assert getattr(mean, wrt).to_float64() == pytest.approx(getattr(total, wrt).to_float64() / 6, rel=2**-50)
    assert exact.gradients("none", kept).h.to_float64()[~kept].tolist() == np.zeros((2, 16)).tolist()
    assert total.h.to_float64()[~kept].tolist() == np.zeros((2, 16)).tolist()


def test_divided_by_three_is_double_double_accurate():
    third = divided(ExactValue.of(np.array([1.0, 2.0**-1000]), np.zeros(2)), 3)
    with mpmath.workprec(200):
        for value, whole in zip(third.to_float64(), (1, mpmath.mpf(2) ** -1000), strict=True):
            assert value == pytest.approx(float(whole / 3), rel=2**-52)
        got = mpmath.mpf(float(third.hi[0])) + mpmath.mpf(float(third.lo[0]))
        assert abs(got - mpmath.mpf(1) / 3) < mpmath.mpf(2) ** -104
    quarter = divided(ExactValue.of(np.array([3.0]), np.zeros(1)), 4)  # a power of two: the exponent moves
    assert quarter.to_float64()[0] == 0.75


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_paths_with_a_quarter_ignored_against_the_exact_head(framework, reduction):
    (h, W, b), labels, kept, exact = small_head("float32")
    y = np.where(kept, labels, -100)
    u = head_runner.upstream_none(8) if reduction == "none" else None
    for path in head.DEFAULT_HEAD_PATHS:
        loss, grads = run(framework, path, reduction, h, W, b, y, u=u)
        assert loss == pytest.approx(exact.loss(reduction, kept).to_float64(), rel=2**-19, abs=2**-20)
        if reduction == "none":
            assert loss[~kept].tolist() == [0.0, 0.0]
        assert grads[0][~kept].tolist() == np.zeros((2, 16)).tolist()  # ignored rows: dL/dh exactly 0
        for computed, value in zip(grads, exact.gradients(reduction, kept), strict=True):
            reference = value.to_float64()
            assert np.abs(computed - reference).max() <= 2**-19 * np.abs(reference).max()


def test_mean_over_no_kept_rows_is_undefined_not_a_crash():
    (h, W, b), labels, _, exact = small_head("float32")
    backend = backends.load("torch")
    kept = ~ignored_rows(8, 1.0, seed=0)
    with backend.dtype_scope("float32"):
        native = [backend.to_native(a, labels)[0] for a in (h, W, b)]
        y = backend.to_native(h, np.where(kept, labels, -100))[1]
        u = backend.to_native(np.ones(8, dtype=np.float32), labels)[0]
        sweep = SimpleNamespace(head={"chunk_size": 16}, gradient=True)
        args = ("torch", "linear_fused", "eager")
        record = head_runner.run_cell(*args, "mean", (*native, y), u, exact, sweep, None, kept)
        total = head_runner.run_cell(*args, "sum", (*native, y), u, exact, sweep, None, kept)
    assert record["cell"]["status"] == metrics.UNDEFINED
    assert {g["status"] for g in record["head_grad"].values()} == {metrics.UNDEFINED}
    assert total["cell"]["status"] == "ok" and total["cell"]["max_ulp_err"] == 0  # the sum of no rows: 0


@pytest.mark.slow
def test_cli_sweeps_ignore_fraction_as_a_column(tmp_path):
    command = [sys.executable, "-m", "harness", "families=[head]", "frameworks=[torch]", "dtypes=[float32]"]
    command += ["n_rows=8", "n_classes=50", "head.d=16", "reduction=[mean]", "ignore_fraction=[0,0.25]"]
    command += ["grad.enabled=true", "progress=false", "scales=[1]", f"hydra.run.dir={tmp_path}"]
    done = commands.run(command, Path.cwd(), dict(os.environ), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    errors = pd.read_csv(tmp_path / "errors.csv")
    assert sorted(set(errors["ignore_fraction"])) == [0.0, 0.25]
    assert set(errors["status"]) == {"ok"}
    grads = pd.read_csv(tmp_path / "grad_errors.csv")
    assert sorted(set(grads["ignore_fraction"])) == [0.0, 0.25] and set(grads["status"]) == {"ok"}
