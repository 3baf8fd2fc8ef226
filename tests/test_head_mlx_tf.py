"""MLX and TensorFlow head paths: hand-worked values, the exact head's loss and gradients, CLI runs."""

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli
from test_head_paths import uniform_head

from harness import backends
from harness.dtypes import DTYPES, round_to
from harness.paths import head
from harness.sweep import head_inputs, head_runner


def _framework(name):
    missing = backends.missing_packages(name)
    return pytest.param(name, marks=pytest.mark.skipif(bool(missing), reason=f"{name} is not installed"))


FRAMEWORKS = [_framework("mlx"), _framework("tensorflow")]
PATHS = list(head.DEFAULT_HEAD_PATHS)
# Largest error over the largest exact value (loss per row, gradient entry per input) at 8 x 16 x 50:
# a d = 16 product and a 50-term log-sum-exp, a few roundings of 2**-24 (float32) or 2**-53 (float64)
# each (measured: at most 1.3e-7 and 2.7e-7 in float32, 3.7e-16 in TensorFlow's float64). MLX's
# float64 exponentials are a float32 polynomial, so its float64 paths are float32-accurate there
# (measured 2.6e-8).
TOLERANCE = {"float32": 2.0**-20, "float64": 2.0**-48}
MLX_FLOAT64 = 2.0**-22


def run(framework, path, reduction, mode, arrays, labels, u, chunk_size=16):
    """Loss and gradients (h, W, b) of one path as float64 NumPy arrays; arrays rounded to their dtype."""
    backend = backends.load(framework)
    loss_fn, grad_fn = head.implementations_module(framework).build(path, reduction, mode, chunk_size)
    native = [None if a is None else backend.to_native(a, labels)[0] for a in arrays]
    y = backend.to_native(arrays[0], labels)[1]
    u_native = backend.to_native(u.astype(arrays[0].dtype), labels)[0]
    loss = np.atleast_1d(backend.to_numpy(loss_fn(*native, y))[0])
    return loss, [None if g is None else backend.to_numpy(g)[0] for g in grad_fn(*native, y, u_native)]


def exact_errors(framework, path, reduction, dtype, mode="eager"):
    """Largest |computed - exact| over the largest |exact|: of the loss, then of dL/dh, dL/dW, dL/db."""
    draw = head_inputs.scaled(head_inputs.draw_head(8, 50, 16, True, seed=3), 2.0)
    arrays = [round_to(a, dtype) for a in (draw.hidden, draw.weight, draw.bias)]
    exact = head_runner.ExactHead(*(a.astype(np.float64) for a in arrays), draw.labels, DTYPES[dtype])
    u = head_runner.upstream_none(8)
    loss, grads = run(framework, path, reduction, mode, arrays, draw.labels, u)
    values = [exact.loss(reduction), *exact.gradients(reduction)]
    errors = []
    for computed, value in zip([loss, *grads], values, strict=True):
        reference = np.ldexp(value.hi, value.exponent)
        errors.append(np.abs(computed - reference).max() / np.abs(reference).max())
    return errors


@pytest.mark.parametrize("reduction", head.REDUCTIONS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_loss_and_gradients_match_the_exact_head(framework, path, dtype, reduction):
    """Chunks of 16 over 50 classes (16, 16, 16, 2); reduction none weighs rows by 1, 1.25, 1.5, 1.75."""
    tolerance = MLX_FLOAT64 if (framework, dtype) == ("mlx", "float64") else TOLERANCE[dtype]
    assert max(exact_errors(framework, path, reduction, dtype)) <= tolerance


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_compiled_paths_match_the_exact_head(framework, path):
    assert max(exact_errors(framework, path, "none", "float32", mode="compiled")) <= TOLERANCE["float32"]


@pytest.mark.parametrize("path", PATHS)
def test_mlx_float64_is_float32_accurate_in_its_exponentials(path):
    """The entry's note: MLX's float64 exp is float32's polynomial, so the loss misses float64 by far."""
    pytest.importorskip("mlx")
    loss_error = exact_errors("mlx", path, "none", "float64")[0]
    assert 2.0**-40 < loss_error <= MLX_FLOAT64


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_uniform_logits_give_ln3_and_hand_worked_gradients(framework, path):
    """Every logit 0: loss ln 3; dL/dz_i = u_i (1/3 - onehot(y_i)), so dL/db = (-0.25, -0.5, 0.75) and
    dL/dW = G.T (h = I); chunks of 2 over 3 classes."""
    h, W, b, y = uniform_head()
    loss, (dh, dW, db) = run(framework, path, "none", "eager", (h, W, b), y, np.array([1.0, 1.25]), chunk_size=2)
    assert loss == pytest.approx([np.log(3)] * 2, rel=2**-22)
    assert db == pytest.approx([-0.25, -0.5, 0.75], abs=2**-22)
    assert dW == pytest.approx(np.array([[-2 / 3, 1.25 / 3], [1 / 3, -2.5 / 3], [1 / 3, 1.25 / 3]]), abs=2**-22)
    assert dh == pytest.approx(np.zeros((2, 2)))
    _, (_, _, no_bias) = run(framework, path, "sum", "eager", (h, W, None), y, np.ones(2))
    assert no_bias is None


def test_torch_only_paths_are_unsupported_in_mlx_and_tensorflow_with_the_reason():
    for framework in ("mlx", "tensorflow"):
        assert head.unsupported_reason(framework, "linear_chunked_accurate", "eager").startswith("PyTorch only")
        assert head.unsupported_reason(framework, "cce_torch_compile", "compiled") == "PyTorch only: Cut Cross-Entropy"
        assert head.unsupported_reason(framework, "linear_chunked", "compiled") == ""
    assert "mx.compile" in head.MODE_NOTE[("mlx", "compiled")]
    assert "XLA" in head.MODE_NOTE[("tensorflow", "compiled")]


def read_run(out):
    return pd.read_csv(out / "errors.csv"), pd.read_csv(out / "grad_errors.csv")


@pytest.mark.slow
@pytest.mark.skipif(bool(backends.missing_packages("mlx")), reason="mlx is not installed")
def test_cli_runs_the_mlx_head_eager_and_compiled(tmp_path):
    out = tmp_path / "run"
    done = run_cli(
        "families=[head]",
        "frameworks=[mlx]",
        "dtypes=[float32]",
        "n_rows=8",
        "n_classes=50",
        "head.d=16",
        "head.chunk_size=16",
        "mode=[eager,compiled]",
        "reduction=[mean]",
        "grad.enabled=true",
        "progress=false",
        f"hydra.run.dir={out}",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    errors, grads = read_run(out)
    assert len(errors) == 13 * 2 * 2  # the default 13 scales x paths x modes
    assert set(errors["status"]) == {"ok"} and set(errors["framework"]) == {"mlx"}
    compiled = errors[errors["mode"] == "compiled"]
    assert compiled["message"].str.contains("mx.compile").all()
    at_one = errors[errors["scale"] == 1.0]
    assert at_one["max_ulp_err"].max() < 2  # a mean of 8 losses, each a few float32 roundings
    assert len(grads) == 2 * len(errors) and set(grads["wrt"]) == {"h", "W"}  # no bias by default
    assert set(grads["status"]) <= {"ok", "exact_underflow"}
    assert grads[grads["scale"] == 1.0]["max_row_rel_err"].max() < 2.0**-20


@pytest.mark.slow
@pytest.mark.skipif(bool(backends.missing_packages("tensorflow")), reason="tensorflow is not installed")
def test_cli_runs_the_tensorflow_head_with_numpy(tmp_path):
    out = tmp_path / "run"
    done = run_cli(
        "families=[head]",
        "frameworks=[numpy,tensorflow]",
        "dtypes=[bfloat16]",
        "scales=[1]",
        "n_rows=8",
        "n_classes=50",
        "head.d=16",
        "head.chunk_size=16",
        "head.bias=true",
        "mode=[eager,compiled]",
        "head.compiled_paths=[linear_fused]",  # one XLA compilation of each kind keeps the test short
        "reduction=[none]",
        "grad.enabled=true",
        "progress=false",
        f"hydra.run.dir={out}",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    errors, grads = read_run(out)
    tf_rows = errors[errors["framework"] == "tensorflow"]
    assert len(tf_rows) == 3 and set(tf_rows["status"]) == {"ok"}  # both paths eager, linear_fused compiled
    assert tf_rows[tf_rows["mode"] == "compiled"]["message"].str.contains("XLA").all()
    assert tf_rows["max_ulp_err"].max() < 4  # per-row bfloat16 losses, the product rounded once to bfloat16
    numpy_compiled = errors[(errors["framework"] == "numpy") & (errors["mode"] == "compiled")]
    assert set(numpy_compiled["status"]) == {"unsupported"}
    tf_grads = grads[grads["framework"] == "tensorflow"]
    assert set(tf_grads["wrt"]) == {"h", "W", "b"} and set(tf_grads["status"]) == {"ok"}
