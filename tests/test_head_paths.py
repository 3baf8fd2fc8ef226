"""Head paths (h, W, b, y -> loss; gradients wrt h, W, b) against hand-worked values and the exact head."""

import mpmath
import numpy as np
import pytest

from harness import backends
from harness.dtypes import DTYPES, round_to
from harness.paths import head
from harness.sweep import head_inputs, head_runner

TORCH_PATHS = ["linear_fused", "linear_chunked", "linear_chunked_accurate", "linear_chunked_balanced"]
TORCH_PATHS += ["linear_chunked_compact", "linear_ce_reference"]
CASES = [("numpy", p) for p in head.DEFAULT_HEAD_PATHS] + [("jax", p) for p in head.DEFAULT_HEAD_PATHS]
CASES += [("torch", p) for p in TORCH_PATHS]


def run(framework, path, reduction, h, W, b, y, u=None, chunk_size=2):
    """Loss and gradients of one path as float64 NumPy arrays, inputs rounded to their dtype already."""
    backend = backends.load(framework)
    loss_fn, grad_fn = head.implementations_module(framework).build(path, reduction, "eager", chunk_size)
    with backend.dtype_scope(h.dtype.name):
        native = [None if a is None else backend.to_native(a, y)[0] for a in (h, W, b)]
        y_native = backend.to_native(h, y)[1]
        u_native = None if u is None else backend.to_native(u.astype(h.dtype), y)[0]
        loss = backend.to_numpy(loss_fn(*native, y_native))[0]
        grads = [None if g is None else backend.to_numpy(g)[0] for g in grad_fn(*native, y_native, u_native)]
    return np.atleast_1d(loss), grads


def uniform_head(dtype="float32"):
    """h = I (2 x 2), W = 0 (3 classes), b = 0: every logit 0, loss ln 3, softmax 1/3 everywhere."""
    h = np.eye(2).astype(DTYPES[dtype].numpy_type)
    W = np.zeros((3, 2), dtype=h.dtype)
    return h, W, np.zeros(3, dtype=h.dtype), np.array([0, 1])


@pytest.mark.parametrize("framework,path", CASES)
def test_uniform_logits_give_ln3_and_hand_worked_gradients(framework, path):
    h, W, b, y = uniform_head()
    loss, (dh, dW, db) = run(framework, path, "none", h, W, b, y, u=np.array([1.0, 1.25]))
    assert loss == pytest.approx([np.log(3)] * 2, rel=2**-22)
    # dL/dz_i = u_i (1/3 - onehot(y_i)); dL/db sums it over rows, dL/dW = G.T @ h = G.T, dL/dh = G @ W = 0
    assert db == pytest.approx([2.25 / 3 - 1, 2.25 / 3 - 1.25, 2.25 / 3], abs=2**-22)  # -0.25, -0.5, 0.75
    assert dW == pytest.approx(np.array([[-2 / 3, 1.25 / 3], [1 / 3, -2.5 / 3], [1 / 3, 1.25 / 3]]), abs=2**-22)
    assert dh == pytest.approx(np.zeros((2, 2)))
    mean, (_, _, db_mean) = run(framework, path, "mean", h, W, b, y)
    total, _ = run(framework, path, "sum", h, W, b, y)
    assert mean == pytest.approx([np.log(3)], rel=2**-22) and total == pytest.approx([2 * np.log(3)], rel=2**-22)
    assert db_mean == pytest.approx([(2 / 3 - 1) / 2, (2 / 3 - 1) / 2, 1 / 3], abs=2**-22)


def mp_dot(u, v) -> mpmath.mpf:
    return mpmath.fsum(mpmath.mpf(float(a)) * mpmath.mpf(float(w)) for a, w in zip(u, v, strict=True))


def mp_head_loss(h, W, b, y) -> list:
    """Per-row cross-entropy of h @ W.T + b at 256 bits (mpmath)."""
    with mpmath.workprec(256):
        out = []
        for row, label in zip(h, y, strict=True):
            z = [mp_dot(row, wr) + float(bb) for wr, bb in zip(W, b, strict=True)]
            out.append(mpmath.log(mpmath.fsum(mpmath.exp(v - z[label]) for v in z)))
        return out


@pytest.mark.parametrize("framework,path", CASES)
def test_float64_paths_match_mpmath_to_a_few_ulps(framework, path):
    draw = head_inputs.scaled(head_inputs.draw_head(8, 16, 64 // 8, True, seed=1), 3.0)
    h, W, b, y = draw.hidden, draw.weight, draw.bias, draw.labels
    loss, _ = run(framework, path, "none", h, W, b, y, u=np.ones(8), chunk_size=5)
    exact = mp_head_loss(h, W, b, y)
    ulps = [abs(mpmath.mpf(float(c)) - e) / mpmath.mpf(np.spacing(float(e))) for c, e in zip(loss, exact, strict=True)]
    assert max(ulps) < 64  # a d = 8 dot product and a 16-class log-sum-exp, each rounded in float64


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_measured_errors_against_the_exact_head(dtype):
    """The head runner's metrics: float32 losses within a few ulps, gradient entries to 1e-5 of the row's largest."""
    draw = head_inputs.draw_head(8, 32, 16, True, seed=2)
    rounded = [round_to(a, dtype) for a in (draw.hidden, draw.weight, draw.bias)]
    exact = head_runner.ExactHead(*(a.astype(np.float64) for a in rounded), draw.labels, DTYPES[dtype])
    loss, grads = run("torch", "linear_fused", "mean", *rounded, draw.labels)
    hi, lo, _ = exact.loss("mean")
    ulp = np.spacing(np.float32(hi[0])) if dtype == "float32" else 2.0 ** (np.floor(np.log2(hi[0])) - 7)
    assert abs(loss[0] - hi[0]) <= 4 * ulp
    exact_grads = exact.gradients("mean")
    for computed, value in zip(grads, exact_grads, strict=True):
        reference = np.ldexp(value.hi, value.exponent)
        tolerance = 1e-5 if dtype == "float32" else 2e-2
        assert np.abs(computed - reference).max() <= tolerance * np.abs(reference).max()


def test_mean_of_the_exact_loss_is_the_sum_over_n():
    loss = head_runner.ExactHead(*uniform_head("float64"), DTYPES["float64"]).loss
    total, mean = loss("sum"), loss("mean")
    assert total.hi[0] + total.lo[0] == pytest.approx(2 * np.log(3), rel=2**-52)
    assert mean.hi[0] == total.hi[0] / 2 and mean.lo[0] == total.lo[0] / 2


def test_exact_mean_gradient_is_the_sum_gradient_scaled_by_a_power_of_two():
    draw = head_inputs.draw_head(4, 8, 4, True, seed=0)
    exact = head_runner.ExactHead(draw.hidden, draw.weight, draw.bias, draw.labels, DTYPES["float64"])
    mean, total = exact.gradients("mean"), exact.gradients("sum")
    for m, t in zip(mean, total, strict=True):
        assert np.array_equal(np.ldexp(m.hi, m.exponent), np.ldexp(t.hi, t.exponent) / 4)


def test_modes_a_framework_lacks_are_unsupported_with_the_reason():
    assert head.unsupported_reason("numpy", "linear_fused", "compiled") == "NumPy has no compiled mode"
    assert head.unsupported_reason("jax", "linear_chunked_accurate", "eager").startswith("PyTorch only")
    assert head.unsupported_reason("torch", "linear_chunked", "compiled") == ""
    assert "always jitted" in head.MODE_NOTE[("jax", "eager")]


def test_head_draw_logits_scale_like_a_standard_normal():
    draw = head_inputs.draw_head(64, 2000, 256, False, seed=0)
    rms = np.sqrt((draw.hidden**2).mean(axis=1))
    assert rms == pytest.approx(np.ones(64)) and np.abs(draw.hidden.mean(axis=1)).max() < 1e-12
    logits = head_inputs.float64_logits(head_inputs.scaled(draw, 10.0))
    assert logits.std() == pytest.approx(10.0, rel=0.05)  # scale x N(0, 1): the `spread` family's extremes


def test_the_front_keeps_exactly_the_undominated_points():
    import pandas as pd

    from harness.outputs.pareto import on_front

    panel = pd.DataFrame(
        {
            "median_s": [1.0, 2.0, 2.0, 0.5, 3.0],
            "peak_bytes": [10.0, 5.0, 6.0, 20.0, 30.0],
            "worst_correct_bits": [20.0, 20.0, 19.0, 10.0, 24.0],
        }
    )
    # (2 s, 6 B, 19 bits) is beaten by (2 s, 5 B, 20 bits) on every count; the rest each win somewhere
    assert on_front(panel).tolist() == [True, True, False, True, True]
