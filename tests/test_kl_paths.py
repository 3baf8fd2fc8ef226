"""Every KL path in every installed framework: against the exact reference on ordinary inputs, the
cancellation bound of theory (u kappa) on a converging student in bfloat16, float32 and float64, and each
path's documented failure (harness.losses.kl_divergence.theory)."""

import functools
import math
import warnings

import numpy as np
import pytest
from scipy.special import log_softmax
from test_bce_paths import INSTALLED, native

from harness import backends
from harness.dtypes import DTYPES, round_to
from harness.errors import ConfigError
from harness.losses.kl_divergence import inputs, paths, theory
from harness.losses.kl_divergence.exact import exact_kl_divergence
from harness.paths import Unsupported

ORDINARY_UNITS = 256  # measured up to 152 units of roundoff (ce_minus_entropy, independent family, 100 classes)
BOUND_FACTOR = 8  # measured error / (u kappa) up to 3.1 (ce_minus_entropy), deltas 1e-1 to 1e-4


def native_in(framework: str, array: np.ndarray):
    """As `native`, bfloat16 too: sent as float32 and converted there (exact: the values are bfloat16's)."""
    if array.dtype.name != "bfloat16" or framework == "numpy":
        return native(framework, array)
    wide = native(framework, array.astype(np.float32))
    if framework == "torch":
        import torch

        return wide.to(torch.bfloat16)
    if framework == "mlx":
        import mlx.core as mx

        return wide.astype(mx.bfloat16)
    if framework == "jax":
        import jax.numpy as jnp

        return wide.astype(jnp.bfloat16)
    import tensorflow as tf

    return tf.cast(wide, tf.bfloat16)


@functools.cache
def compiled(framework, path, temperature):
    """The path compiled once per temperature (JAX then traces once per shape and dtype)."""
    fn = functools.partial(paths.implementation(framework, path), temperature=temperature)
    return backends.load(framework).compile(fn)


def kl(framework, path, teacher, student, dtype, temperature=1.0):
    """The path's per-row loss on the dtype-rounded logits, as float64."""
    backend = backends.load(framework)
    with backend.dtype_scope(dtype), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        args = [native_in(framework, round_to(np.asarray(a, dtype=np.float64), dtype)) for a in (teacher, student)]
        values, returned = backend.to_numpy(compiled(framework, path, temperature)(*args))
    assert returned == dtype
    return values


def rounded(arrays, dtype):
    return (round_to(arrays[k], dtype).astype(np.float64) for k in ("teacher", "student"))


def test_declarations_match_the_implementations():
    for framework in INSTALLED:
        module = paths.implementations_module(framework)
        assert tuple(module.PATHS) == tuple(p for p in paths.PATH_NAMES if not paths.unsupported_reason(framework, p))
        assert tuple(module.GRADIENTS) == tuple(module.PATHS)
    with pytest.raises(Unsupported, match="log-probability targets only"):
        paths.implementation("mlx", "kl_div")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("framework", INSTALLED)
def test_ordinary_inputs(framework, dtype):
    """Two independent scale-1 draws over 100 classes, T = 1 and 2: every path within 256 units of
    roundoff of the dtype its exp computes in (float32 for MLX's float64)."""
    teacher, student = rounded(inputs.independent(inputs.draw(4, 100, seed=0), 1.0), dtype)
    unit = DTYPES[backends.exp_dtype(framework, dtype)].unit_roundoff
    for temperature in (1.0, 2.0):
        exact = exact_kl_divergence(teacher, student, temperature=temperature).to_float64()
        for path in paths.PATH_NAMES:
            if paths.unsupported_reason(framework, path):
                continue
            relative = np.max(np.abs(kl(framework, path, teacher, student, dtype, temperature) - exact) / exact)
            assert relative <= ORDINARY_UNITS * unit, (path, temperature, relative / unit)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["bfloat16", "float32", "float64"])
@pytest.mark.parametrize("framework", INSTALLED)
def test_converging_student_within_the_cancellation_bound(framework, dtype):
    """student = teacher + delta * noise: each path's relative error stays within 8 u kappa, kappa =
    sum p (|log p| + |log q|) / KL, u of the dtype the exp computes in; and is noise (beyond 100%) where
    u kappa passes 1."""
    base = inputs.draw(8, 100, seed=0)
    unit = DTYPES[backends.exp_dtype(framework, dtype)].unit_roundoff
    for delta in (1e-1, 1e-2, 1e-3, 1e-4):
        teacher, student = rounded(inputs.near(base, 1.0, delta), dtype)
        exact = exact_kl_divergence(teacher, student).to_float64()
        kappa = theory.condition(log_softmax(teacher, axis=1), log_softmax(student, axis=1))
        for path in paths.PATH_NAMES:
            if paths.unsupported_reason(framework, path):
                continue
            relative = np.abs(kl(framework, path, teacher, student, dtype) - exact) / exact
            assert np.all(relative <= BOUND_FACTOR * unit * kappa), (path, delta, np.max(relative / (unit * kappa)))


@pytest.mark.parametrize("framework", INSTALLED)
def test_naive_is_negative_near_convergence_in_bfloat16(framework):
    # delta = 1e-2 over 100 classes: H ~ 4.1, Var ~ 1, noise below delta = sqrt(4 H 2**-8 / Var) ~ 0.25
    base = inputs.draw(8, 100, seed=0)
    teacher, student = rounded(inputs.near(base, 1.0, 1e-2), "bfloat16")
    p = np.exp(log_softmax(teacher, axis=1))
    entropy = float(-(p * np.log(p)).sum(axis=1).mean())
    assert theory.noise_below_delta("bfloat16", entropy, 1.0) > 0.2
    loss = kl(framework, "naive", teacher, student, "bfloat16")
    assert (loss < 0).any()  # the exact KL is positive in every row
    assert (exact_kl_divergence(teacher, student).to_float64() > 0).all()


@pytest.mark.parametrize("framework", INSTALLED)
def test_naive_is_nan_where_a_teacher_probability_is_zero(framework):
    # a -inf teacher logit: p = 0, p (log p - log q) = 0 * -inf = NaN; F.kl_div, optax and rel_entr take 0 log 0 = 0
    teacher = np.array([[0.0, -np.inf, 1.0]])
    student = np.array([[0.0, 0.5, 1.0]])
    assert np.isnan(kl(framework, "naive", teacher, student, "float32")).all()
    exact = exact_kl_divergence(teacher, student).to_float64()
    if framework in ("torch", "jax", "numpy"):
        assert kl(framework, "kl_div", teacher, student, "float32") == pytest.approx(exact, rel=1e-6)


@pytest.mark.skipif("tensorflow" not in INSTALLED, reason="TensorFlow not installed")
def test_keras_clips_small_probabilities():
    # teacher [0, -5], student [0, -30]: q_2 = 9.4e-14 counts as 1e-7, so p_2 log(p_2 / q_2) with p_2 = 6.7e-3
    # loses more than half its size (log(6.7e-3 / 1e-7) = 11.1 for 25.0)
    teacher, student = np.array([[0.0, -5.0]]), np.array([[0.0, -30.0]])
    p, q = (np.exp(log_softmax(a, axis=1))[0] for a in (teacher, student))
    clipped = np.clip(p, 1e-7, 1), np.clip(q, 1e-7, 1)
    by_hand = float((clipped[0] * np.log(clipped[0] / clipped[1])).sum())
    loss = kl("tensorflow", "kl_div", teacher, student, "float64")
    assert loss[0] == pytest.approx(by_hand, rel=1e-12)
    exact = exact_kl_divergence(teacher, student).to_float64()[0]
    assert exact == pytest.approx(0.16061, rel=1e-4) and loss[0] == pytest.approx(0.067696, rel=1e-4)


def test_theory_by_hand():
    # ln(2**-150) = -103.9720770840 (float32), ln(2**-126) = -87.3365447506 where results flush
    assert theory.probability_underflows_at("float32") == pytest.approx(-103.97207708399180, rel=1e-15)
    assert theory.probability_underflows_at("float32", flushes_subnormals=True) == pytest.approx(-87.336544750553109)
    # p = (1/2, 1/2), q = (1/4, 3/4): KL = ln(4/3) / 2; sum p (|log p| + |log q|) = (ln 2 + ln 4 + ln 2 + ln(4/3)) / 2
    log_p, log_q = np.log([[0.5, 0.5]]), np.log([[0.25, 0.75]])
    kappa = (4 * math.log(2) + math.log(4 / 3)) / math.log(4 / 3)  # 10.6372...
    assert theory.condition(log_p, log_q)[0] == pytest.approx(kappa, rel=1e-14)
    assert theory.cancellation_bound(kappa, "float32") == pytest.approx(kappa * 2.0**-24)
    # H = 4, Var = 1, float32: sqrt(16 2**-24) = 2**-10
    assert theory.noise_below_delta("float32", 4.0, 1.0) == 2.0**-10
    assert theory.noise_below_delta("float32", 4.0, 1.0, temperature=2.0) == 2.0**-9


def test_bad_inputs_fail_in_one_line():
    with pytest.raises(ConfigError, match=r"teacher logits of shape \(2, 3\) and student logits of shape \(2, 4\)"):
        inputs.check_inputs(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ConfigError, match="temperature 0.0 is not positive"):
        inputs.check_inputs(np.zeros((2, 3)), np.zeros((2, 3)), temperature=0.0)


def test_families():
    base = inputs.draw(3, 5, seed=2)
    independent, near = inputs.independent(base, 2.0), inputs.near(base, 3.0, 1e-3)
    assert np.array_equal(independent["teacher"], 2.0 * base.teacher_z)
    assert np.array_equal(independent["student"], 2.0 * base.student_z)
    assert np.array_equal(near["student"], 3.0 * base.teacher_z + 1e-3 * base.student_z)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("framework", INSTALLED)
def test_gradients_on_ordinary_inputs(framework, dtype):
    """T (q - p) by autodiff with respect to the student, within 64 units of roundoff of the row's largest
    entry (measured up to 9.4); NumPy's are the harness's own backward passes."""
    from harness.losses.kl_divergence.exact import exact_kl_divergence_gradient

    teacher, student = rounded(inputs.independent(inputs.draw(4, 100, seed=0), 1.0), dtype)
    unit = DTYPES[backends.exp_dtype(framework, dtype)].unit_roundoff
    module = paths.implementations_module(framework)
    backend = backends.load(framework)
    for temperature in (1.0, 2.0):
        exact = exact_kl_divergence_gradient(teacher, student, temperature=temperature).to_float64()
        scale = np.max(np.abs(exact), axis=1, keepdims=True)
        for path in module.GRADIENTS:
            fn = backend.compile_gradient(functools.partial(module.GRADIENTS[path], temperature=temperature))
            with backend.dtype_scope(dtype):
                args = [native(framework, a.astype(dtype)) for a in (teacher, student)]
                gradient, returned = backend.to_numpy(fn(*args))
            assert returned == dtype
            error = np.max(np.abs(gradient - exact) / scale)
            assert error <= 64 * unit, (path, temperature, error / unit)


@pytest.mark.parametrize("framework", INSTALLED)
def test_every_path_is_noise_below_theorys_delta_in_float32(framework):
    """delta = 1e-4 < noise_below_delta(float32) ~ 1e-3 (100 classes, H ~ 4.1, Var ~ 1): every path is off by
    more than 100% in some row, and the three sums of p (log p - log q) come out negative somewhere."""
    base = inputs.draw(8, 100, seed=0)
    teacher, student = rounded(inputs.near(base, 1.0, 1e-4), "float32")
    p = np.exp(log_softmax(teacher, axis=1))
    entropy = float(-(p * np.log(p)).sum(axis=1).mean())
    assert theory.noise_below_delta("float32", entropy, 1.0) > 5e-4
    exact = exact_kl_divergence(teacher, student).to_float64()
    for path in paths.PATH_NAMES:
        if paths.unsupported_reason(framework, path):
            continue
        loss = kl(framework, path, teacher, student, "float32")
        assert np.max(np.abs(loss - exact) / exact) > 1.0, path
        if path in ("naive", "kl_div", "kl_div_log_target"):
            assert (loss < 0).any(), path


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("framework", INSTALLED)
def test_naive_is_nan_where_a_probability_underflows(framework, dtype):
    """Teacher [0, -a], student [0, -1]: the naive path is NaN (0 * -inf) once the teacher's second
    probability e**-a rounds to 0, which theory places from the backend's measured exp underflow and
    division flush (103.97 / 745.13; 87.34 / 708.40 for JAX and TensorFlow; MLX's 87.68); within 1%
    (TensorFlow's float32 softmax: 86.65, 0.8% early). kl_div and ce_minus_entropy stay finite."""
    zero = -theory.probability_is_zero_below(
        dtype, backends.exp_underflow(framework, dtype), backends.quotient_flushes(framework, dtype)
    )
    a = np.linspace(0.95 * zero, 1.05 * zero, 2001)
    teacher = np.stack([np.zeros_like(a), -a], axis=1)
    student = np.stack([np.zeros_like(a), np.full_like(a, -1.0)], axis=1)
    nan = np.isnan(kl(framework, "naive", teacher, student, dtype))
    assert nan.any() and nan[np.argmax(nan) :].all()
    assert float(a[np.argmax(nan)]) == pytest.approx(zero, rel=0.01)
    for path in ("kl_div", "ce_minus_entropy"):
        if not paths.unsupported_reason(framework, path):
            assert np.isfinite(kl(framework, path, teacher, student, dtype)).all(), path


def test_a_path_the_loss_does_not_have_fails_in_one_line():
    paths.check_paths(["naive", "kl_div"])
    with pytest.raises(
        ConfigError, match="unknown path 'log_sigmoid' for loss kl_divergence; valid choices: naive, kl_div"
    ):
        paths.check_paths(["log_sigmoid"])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("framework", INSTALLED)
def test_half_precision_runs_and_returns_its_dtype(framework, dtype):
    """Every BCE and KL path and gradient runs in float16 and bfloat16 and answers in that dtype; the losses
    of ordinary inputs lie within 64 units of roundoff of the exact ones (measured up to 30), the gradients
    are finite but for Keras's KL in float16."""
    from harness.losses.binary_cross_entropy import inputs as bce_inputs
    from harness.losses.binary_cross_entropy import paths as bce_paths
    from harness.losses.binary_cross_entropy.exact import exact_binary_cross_entropy

    backend = backends.load(framework)
    arrays = bce_inputs.spread(bce_inputs.draw((16, 8), seed=0), 1.0, "soft")
    bce_arrays = [round_to(arrays[k], dtype).astype(np.float64) for k in ("logits", "targets")]
    kl_arrays = list(rounded(inputs.independent(inputs.draw(4, 50, seed=0), 1.0), dtype))
    cases = [
        (bce_paths.implementations_module(framework), bce_arrays, exact_binary_cross_entropy(*bce_arrays)),
        (paths.implementations_module(framework), kl_arrays, exact_kl_divergence(*kl_arrays)),
    ]
    unit = DTYPES[dtype].unit_roundoff
    for module, arrays, exact in cases:
        for name in module.PATHS:
            loss = run_in(framework, module.PATHS[name], arrays, dtype, backend.compile)
            assert np.max(np.abs(loss - exact.to_float64()) / exact.to_float64()) <= 64 * unit, name
            gradient = run_in(framework, module.GRADIENTS[name], arrays, dtype, backend.compile_gradient)
            if (framework, name, dtype) == ("tensorflow", "kl_div", "float16"):
                # autodiff of Keras's p log(p / q) forms p / q**2 on the way to -p / q: it overflows 65504
                # where a student probability is small (3.5e-4 in the first row), and that row is inf or NaN
                assert not np.isfinite(gradient[0]).any() and np.isfinite(gradient[1:]).all()
                continue
            assert np.isfinite(gradient).all(), name


def run_in(framework, fn, arrays, dtype, compile_):
    """fn compiled by the backend on the dtype-rounded arrays; asserts the answer comes in that dtype."""
    backend = backends.load(framework)
    with backend.dtype_scope(dtype), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        values, returned = backend.to_numpy(compile_(fn)(*(native_in(framework, round_to(a, dtype)) for a in arrays)))
    assert returned == dtype
    return values
