"""Every BCE path in every installed framework: against the exact reference on ordinary inputs, and each
path's documented failure at inputs where theory places it (harness.losses.binary_cross_entropy.theory)."""

import functools
import inspect
import math
import warnings

import mpmath
import numpy as np
import pytest

from harness import backends
from harness.dtypes import DTYPES, round_to
from harness.losses.binary_cross_entropy import inputs, paths, theory
from harness.losses.binary_cross_entropy.exact import exact_binary_cross_entropy
from harness.paths import Unsupported

INSTALLED = [f for f in backends.FRAMEWORKS if not backends.missing_packages(f)]
ORDINARY_UNITS = 256  # measured up to 83 units of roundoff (softplus, scale 1): cancellation of log terms


def native(framework: str, array: np.ndarray):
    """The same bits as a framework array (float32 and float64)."""
    if framework == "numpy":
        return array
    if framework == "torch":
        import torch

        return torch.from_numpy(np.ascontiguousarray(array))
    if framework == "jax":
        import jax

        return jax.device_put(array)
    if framework == "mlx":
        import mlx.core as mx

        return mx.array(array, dtype=getattr(mx, array.dtype.name))  # without dtype, float64 becomes float32
    import tensorflow as tf

    return tf.constant(array)


def run(framework, fn, arrays, dtype, **options):
    """fn(*arrays, **options) compiled by the backend, arrays and array options in `dtype`; float64 back."""
    backend = backends.load(framework)
    with backend.dtype_scope(dtype), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        args = [native(framework, np.asarray(a, dtype=dtype)) for a in arrays]
        bound = {
            k: native(framework, np.asarray(v, dtype=dtype)) if isinstance(v, np.ndarray) else v
            for k, v in options.items()
        }
        compiled = backend.compile(functools.partial(fn, **bound))  # backends compile fn(x, y)
        values, returned = backend.to_numpy(compiled(*args))
    assert returned == dtype
    return values


def bce(framework, path, x, t, dtype, pos_weight=None):
    fn = paths.implementation(framework, path, {paths.POS_WEIGHT: pos_weight})
    options = {} if pos_weight is None else {"pos_weight": np.asarray(pos_weight)}
    return run(framework, fn, [np.atleast_1d(x), np.atleast_1d(t)], dtype, **options)


def test_declarations_match_the_implementations():
    for framework in INSTALLED:
        module = paths.implementations_module(framework)
        assert tuple(module.PATHS) == tuple(p for p in paths.PATH_NAMES if not paths.unsupported_reason(framework, p))
        assert tuple(module.GRADIENTS) == tuple(module.PATHS)
        for name, fn in module.PATHS.items():
            takes_weight = paths.POS_WEIGHT in inspect.signature(fn).parameters
            declared = framework not in paths.ENTRIES_BY_NAME[name].option_unsupported.get(paths.POS_WEIGHT, {})
            assert takes_weight == declared, (framework, name)


def test_unsupported_is_declared_never_tried():
    with pytest.raises(Unsupported, match="optax has no probability-input BCE"):
        paths.implementation("jax", "probs")
    with pytest.raises(Unsupported, match="no pos_weight"):
        paths.implementation("jax", "with_logits", {paths.POS_WEIGHT: 2.0})
    assert paths.implementation("torch", "with_logits", {paths.POS_WEIGHT: 2.0}) is not None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("framework", INSTALLED)
def test_ordinary_inputs(framework, dtype):
    """Scale 1 logits (|x| < 4), hard, smoothed and soft targets, with and without pos_weight: every path
    within 256 units of roundoff of the dtype its exp computes in (float32 for MLX's float64)."""
    base = inputs.draw((32, 8), seed=0)
    unit = DTYPES[backends.exp_dtype(framework, dtype)].unit_roundoff
    for kind in inputs.TARGET_KINDS:
        arrays = inputs.spread(base, 1.0, kind)
        x, t = (round_to(arrays[k], dtype).astype(np.float64) for k in ("logits", "targets"))
        for pos_weight in (None, 2.5):
            exact = exact_binary_cross_entropy(x, t, pos_weight=pos_weight).to_float64()
            for path in paths.PATH_NAMES:
                if paths.unsupported_reason(framework, path, {paths.POS_WEIGHT: pos_weight}):
                    continue
                loss = bce(framework, path, x, t, dtype, pos_weight)
                relative = np.max(np.abs(loss - exact) / exact)
                assert relative <= ORDINARY_UNITS * unit, (path, kind, pos_weight, relative / unit)


@pytest.mark.parametrize("framework", INSTALLED)
def test_naive_is_nan_once_sigmoid_rounds_to_one(framework):
    # float32: sigmoid(40) rounds to 1 (past 17.33); t = 1: -(log 1 + 0 * log 0) = NaN; t = 0: -log(0) = inf
    assert 40 > theory.sigmoid_rounds_to_one("float32")
    loss = bce(framework, "naive", [40.0, 40.0], [1.0, 0.0], "float32")
    assert np.isnan(loss[0]) and loss[1] == np.inf


@pytest.mark.parametrize("framework", [f for f in ("torch", "mlx") if f in INSTALLED])
def test_probability_route_is_capped_at_100(framework):
    # exact losses 200 (t = 1, x = -200) and 200 (t = 0, x = 200): the log clamp at -100 returns 100
    loss = bce(framework, "probs", [-200.0, 200.0], [1.0, 0.0], "float64")
    assert loss.tolist() == [theory.LOG_CLAMP_CAP, theory.LOG_CLAMP_CAP]
    # float32: sigmoid(30) rounds to 1, so the exact 30 reads 100
    assert bce(framework, "probs", 30.0, 0.0, "float32").tolist() == [100.0]


@pytest.mark.skipif("tensorflow" not in INSTALLED, reason="TensorFlow not installed")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_keras_probability_clip_caps_the_loss(dtype):
    # exact losses 30 and 30: -log(1e-7) = 16.118 for t = 1; -log(1 - fl(1 - 1e-7)) for t = 0, 15.942 in float32
    cap_one, cap_zero = theory.keras_clip_caps(dtype)
    loss = bce("tensorflow", "probs", [-30.0, 30.0], [1.0, 0.0], dtype)
    assert loss == pytest.approx([cap_one, cap_zero], rel=DTYPES[dtype].unit_roundoff * 4)
    assert loss[0] == pytest.approx(16.118095650958319, rel=1e-6)
    assert loss[1] == pytest.approx(15.942385152878742 if dtype == "float32" else 16.118095650958319, rel=1e-6)


@pytest.mark.parametrize("framework", [f for f in ("torch", "numpy") if f in INSTALLED])
def test_fused_form_cancels_a_confident_negative(framework):
    # t = 0, x = -40: exact loss log1p(e**-40) = 4.248e-18; (1 - t) x - logsigmoid(x) = -40 - (-40) = 0
    loss = bce(framework, "with_logits", -40.0, 0.0, "float64")
    assert loss.tolist() == [0.0]
    assert -40 < -theory.absorbed_from("float64")


@pytest.mark.parametrize("framework", [f for f in ("tensorflow", "jax") if f in INSTALLED])
def test_fused_forms_that_keep_a_confident_negative(framework):
    # TF's max(x, 0) - x t + log1p(exp(-|x|)) and optax's log_sigmoid form keep it: 4.2484e-18
    exact = float(np.log1p(np.exp(-40.0)))
    assert bce(framework, "with_logits", [-40.0, 40.0], [0.0, 1.0], "float64") == pytest.approx(
        [exact, exact], rel=1e-15
    )


@pytest.mark.skipif("mlx" not in INSTALLED, reason="MLX not installed")
def test_mlx_fused_form_is_the_softplus_form():
    # mlx's with_logits=True is logaddexp(0, x) - x t: t = 1, x = 40 cancels to 0 (exact 4.248e-18)
    assert bce("mlx", "with_logits", 40.0, 1.0, "float32").tolist() == [0.0]


@pytest.mark.parametrize("framework", [f for f in ("torch", "tensorflow") if f in INSTALLED])
def test_softplus_threshold_returns_x(framework):
    dtype = "float64"
    threshold = theory.softplus_returns_x_above(framework, dtype)  # 20 (torch), 34.04 (TensorFlow)
    x = threshold + 1.0
    assert x < theory.absorbed_from(dtype) or framework == "tensorflow"
    loss = bce(framework, "softplus", [x, threshold - 1.0], [1.0, 1.0], dtype)
    assert loss[0] == 0.0  # softplus(x) - x = 0, exact log1p(e**-x) > 0
    assert loss[1] > 0.0


@pytest.mark.skipif("jax" not in INSTALLED, reason="JAX not installed")
def test_softplus_form_cancels_to_zero_once_absorbed():
    # jax.nn.softplus has no threshold: float64 x + e**-x rounds to x from 33.27 on (float32: 14.56)
    below, above = theory.absorbed_from("float64") - 0.05, theory.absorbed_from("float64") + 0.05
    loss = bce("jax", "softplus", [below, above], [1.0, 1.0], "float64")
    assert loss[0] > 0 and loss[1] == 0.0


@pytest.mark.skipif("mlx" not in INSTALLED, reason="MLX not installed")
def test_mlx_log_sigmoid_in_float64_has_float32_accuracy():
    x = np.array([1.0, -3.0, 0.5])
    exact = exact_binary_cross_entropy(x, np.ones(3)).to_float64()
    relative = np.abs(bce("mlx", "log_sigmoid", x, np.ones(3), "float64") - exact) / exact
    assert 1e-12 < relative.max() < 64 * DTYPES["float32"].unit_roundoff


def test_theory_by_hand():
    # ln(2**25 - 1) = 17.3286794842, ln(2**54 - 1) = 37.4299477502; 24 ln 2 = 16.6355323334 (mpmath, 200 bits)
    assert theory.sigmoid_rounds_to_one("float32") == pytest.approx(17.328679484196310, rel=1e-15)
    assert theory.sigmoid_rounds_to_one("float64") == pytest.approx(37.429947750237047, rel=1e-15)
    assert theory.one_plus_exp_rounds_to_one("float32") == pytest.approx(16.635532333438687, rel=1e-15)
    # ln(2**-150) = -103.9720770840, ln(2**-1075) = -745.1332191019; flushed: ln(2**-126) = -87.3365447506
    assert theory.sigmoid_rounds_to_zero("float32") == pytest.approx(-103.97207708399180, rel=1e-15)
    assert theory.sigmoid_rounds_to_zero("float64") == pytest.approx(-745.13321910194121, rel=1e-15)
    flushed = theory.sigmoid_rounds_to_zero("float32", flushes_subnormals=True)
    assert flushed == pytest.approx(-87.336544750553109, rel=1e-15)
    # ln(2**128 - 2**103): the largest float32 plus half an ulp
    assert theory.exp_minus_x_overflows("float32") == pytest.approx(-88.722839081870677, rel=1e-15)
    # Keras: -ln(fl32(1e-7)) = 16.1180956393, -ln(2**-23) = 15.9423851529; float16: fl(1 - 1e-7) = 1, so inf
    assert theory.keras_clip_caps("float32") == pytest.approx((16.118095639272222, 15.942385152878742), rel=1e-15)
    assert theory.keras_clip_caps("float16")[1] == math.inf
    # TensorFlow's softplus: -(ln 2**-23 + 2) = 13.9423851529
    # absorption: 21 ln 2 = 14.5560907918 (float32), 48 ln 2 = 33.2710646669 (float64)
    assert theory.softplus_returns_x_above("tensorflow", "float32") == pytest.approx(13.942385152878742, rel=1e-15)
    assert theory.absorbed_from("float32") == pytest.approx(14.556090791758851, rel=1e-15)
    assert theory.absorbed_from("float64") == pytest.approx(33.271064666877375, rel=1e-15)


def test_theory_against_correct_rounding():
    """Each threshold separates inputs whose correctly rounded results differ as it says."""
    from harness.losses.binary_cross_entropy.exact import sigmoid

    for dtype in ("float16", "float32", "float64"):
        fmt = DTYPES[dtype]
        t1 = theory.sigmoid_rounds_to_one(dtype)
        below, above = sigmoid(-np.array([t1 * (1 - 1e-9)])), sigmoid(-np.array([t1 * (1 + 1e-9)]))
        half_spacing = 2.0 ** -(fmt.precision + 1)  # 1 - s at most this: s rounds to 1
        assert below.to_float64()[0] > half_spacing and above.to_float64()[0] < half_spacing
        t0 = theory.sigmoid_rounds_to_zero(dtype)
        for factor, zero in ((1 - 1e-9, False), (1 + 1e-9, True)):
            s = sigmoid(np.array([t0 * factor]))
            assert bool(fmt.rounds_to_zero(s.hi, s.lo, s.exponent)[0]) is zero
        x = theory.absorbed_from(dtype)
        nearest = round_to(np.array([x]), dtype)[0]
        # the dtype's neighbours strictly around the threshold (which a float may hold only to its last bit)
        above = nearest if float(nearest) > x else np.nextafter(nearest, fmt.numpy_type(np.inf))
        below = nearest if float(nearest) < x else np.nextafter(nearest, fmt.numpy_type(0))
        for xr, absorbed in ((float(below), False), (float(above), True)):
            half_ulp = 2.0 ** (math.floor(math.log2(xr)) - fmt.precision)  # x + e**-x rounds to x below it
            with mpmath.workprec(128):
                assert (mpmath.exp(-mpmath.mpf(xr)) < half_ulp) is absorbed, (dtype, xr)


@pytest.mark.parametrize(
    ("targets", "message"),
    [([[0.5, 1.5]], "target 1.5 is outside"), ([[0.5]], "do not match"), ([[0.5, -0.25]], "target -0.25")],
)
def test_bad_inputs_fail_in_one_line(targets, message):
    from harness.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        inputs.check_inputs(np.zeros((1, 2)), np.array(targets))


def test_families():
    base = inputs.draw((4, 3), seed=1)
    spread, offset = inputs.spread(base, 2.0, "hard"), inputs.offset(base, 5.0, "soft")
    assert np.array_equal(spread["logits"], 2.0 * base.z) and set(np.unique(spread["targets"])) <= {0.0, 1.0}
    assert np.array_equal(offset["logits"], base.z + 5.0) and np.array_equal(offset["targets"], base.soft)
    smoothed = inputs.spread(base, 1.0, "smoothed", smoothing=0.1)["targets"]
    assert set(np.unique(smoothed)) <= {0.05, 0.95}


def bce_gradient(framework, path, x, t, dtype, pos_weight=None):
    """The framework's autodiff of the path: d(sum of the losses)/d logits, as float64."""
    module = paths.implementations_module(framework)
    backend = backends.load(framework)
    with backend.dtype_scope(dtype):
        options = {} if pos_weight is None else {"pos_weight": native(framework, np.asarray(pos_weight, dtype=dtype))}
        fn = backend.compile_gradient(functools.partial(module.GRADIENTS[path], **options))
        values, returned = backend.to_numpy(fn(native(framework, x.astype(dtype)), native(framework, t.astype(dtype))))
    assert returned == dtype
    return values


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("framework", INSTALLED)
def test_gradients_on_ordinary_inputs(framework, dtype):
    """(1 - t) s(x) - w t s(-x) by autodiff, within 64 units of roundoff of the terms' size (1 - t) s + w t (1 - s)
    (measured up to 9.3); NumPy's are the harness's own backward passes."""
    from harness.losses.binary_cross_entropy.exact import exact_binary_cross_entropy_gradient

    base = inputs.draw((16, 8), seed=0)
    unit = DTYPES[backends.exp_dtype(framework, dtype)].unit_roundoff
    for kind in ("hard", "soft"):
        arrays = inputs.spread(base, 1.0, kind)
        x, t = (round_to(arrays[k], dtype).astype(np.float64) for k in ("logits", "targets"))
        s = 1 / (1 + np.exp(-x))
        for pos_weight in (None, 2.5):
            exact = exact_binary_cross_entropy_gradient(x, t, pos_weight=pos_weight).to_float64()
            scale = (1 - t) * s + (1.0 if pos_weight is None else pos_weight) * t * (1 - s)
            for path in paths.PATH_NAMES:
                if paths.unsupported_reason(framework, path, {paths.POS_WEIGHT: pos_weight}):
                    continue
                gradient = bce_gradient(framework, path, x, t, dtype, pos_weight)
                error = np.max(np.abs(gradient - exact) / scale)
                assert error <= 64 * unit, (path, kind, pos_weight, error / unit)


@pytest.mark.parametrize("framework", [f for f in ("numpy", "torch", "jax") if f in INSTALLED])
def test_naive_gradient_is_nan_once_sigmoid_rounds_to_one(framework):
    # float32, x = 40, t = 1: d/ds (1 - t) log(1 - s) = 0 / 0; the exact gradient is -4.2e-18 (s(x) - 1)
    gradient = bce_gradient(framework, "naive", np.array([40.0]), np.array([1.0]), "float32")
    assert np.isnan(gradient).all()
    assert bce_gradient(framework, "log_sigmoid", np.array([40.0]), np.array([1.0]), "float32")[0] < 0


def first_broken(framework, x, t, dtype, broken):
    """The first x of an increasing grid at which the naive loss is broken (NaN or inf)."""
    loss = bce(framework, "naive", x, np.full_like(x, t), dtype)
    bad = broken(loss)
    assert bad.any() and not bad[0]
    return float(x[np.argmax(bad)])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("framework", INSTALLED)
def test_naive_breaks_where_theory_says(framework, dtype):
    """t = 1: NaN from where the framework's sigmoid returns 1 (16.64 in float32 for 1 / (1 + exp(-x)),
    17.33 for MLX's); inf (log 0) from where 1 / (1 + exp(-x)) returns 0, from the backend's measured exp
    overflow and division flush: measured within two steps of a 0.001 grid."""
    one = theory.sigmoid_is_one_from(framework, dtype)
    x = np.linspace(one - 1.0, one + 1.0, 2001)
    assert first_broken(framework, x, 1.0, dtype, np.isnan) == pytest.approx(one, abs=2e-3)
    zero = theory.sigmoid_is_zero_below(
        dtype, backends.exp_overflow(framework, dtype), backends.quotient_flushes(framework, dtype)
    )
    x = -np.linspace(-zero - 1.0, -zero + 1.0, 2001)
    assert first_broken(framework, x, 1.0, dtype, np.isinf) == pytest.approx(zero, abs=2e-3)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("framework", INSTALLED)
def test_softplus_loss_is_zero_where_theory_says(framework, dtype):
    """t = 1: softplus(x) - x is 0 for every x past the framework's threshold or absorption (20 for
    PyTorch's float64, 13.94 for TensorFlow's float32, else 14.56 / 33.27), and its first zero lies within
    1% of it (2% for TensorFlow's float64, whose log1p(exp(x)) is off by up to an ulp of x)."""
    zero = theory.softplus_loss_is_zero_from(framework, dtype)
    x = np.linspace(0.9 * zero, 1.1 * zero, 4001)
    loss = bce(framework, "softplus", x, np.ones_like(x), dtype)
    beyond = 1.01 if (framework, dtype) == ("torch", "float32") else 1.0005  # PyTorch's: one ulp up to 14.65
    assert (loss[x > zero * beyond] == 0).all()
    first = float(x[np.argmax(loss == 0)])
    tolerance = 0.02 if framework == "tensorflow" and dtype == "float64" else 0.01
    if framework == "tensorflow" and dtype == "float32":
        tolerance = 0.06  # isolated zeros from 13.23 below its threshold 13.94
    assert first == pytest.approx(zero, rel=tolerance)


@pytest.mark.parametrize("framework", [f for f in ("numpy", "torch") if f in INSTALLED])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_form_is_zero_where_theory_says(framework, dtype):
    # t = 0: (1 - t) x - logsigmoid(x) is 0 for every x below -absorbed_from (-14.56 / -33.27), not before
    zero = -theory.absorbed_from(dtype)
    x = -np.linspace(-0.9 * zero, -1.1 * zero, 4001)
    loss = bce(framework, "with_logits", x, np.zeros_like(x), dtype)
    assert (loss[x < zero * 1.0005] == 0).all() and (loss[x > zero * 0.9995] > 0).all()


def test_a_path_the_loss_does_not_have_fails_in_one_line():
    from harness.errors import ConfigError

    paths.check_paths(["naive", "softplus"])
    with pytest.raises(
        ConfigError, match="unknown path 'fused' for loss binary_cross_entropy; valid choices: naive, probs"
    ):
        paths.check_paths(["naive", "fused"])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("framework", [f for f in ("torch", "mlx") if f in INSTALLED])
def test_log_clamp_reads_100_where_theory_says(framework, dtype):
    """F.binary_cross_entropy and MLX's probability route return exactly 100 for t = 1 below
    max(-100, where sigmoid returns 0) (-88.72 / -100 for PyTorch, -88.0 for MLX) and for t = 0 from where
    sigmoid returns 1 (16.64 / 36.74 for PyTorch, 17.33 / 37.43 for MLX): measured to the 0.001 grid."""
    low, high = theory.log_clamp_reads_cap(
        framework, dtype, backends.exp_overflow(framework, dtype), backends.quotient_flushes(framework, dtype)
    )
    x = -np.linspace(-low - 1.0, -low + 1.0, 2001)
    capped = bce(framework, "probs", x, np.ones_like(x), dtype) == theory.LOG_CLAMP_CAP
    assert not capped[0] and capped[np.argmax(capped) :].all()
    assert float(x[np.argmax(capped)]) == pytest.approx(low, abs=2e-3)
    x = np.linspace(high - 1.0, high + 1.0, 2001)
    capped = bce(framework, "probs", x, np.zeros_like(x), dtype) == theory.LOG_CLAMP_CAP
    assert not capped[0] and capped[np.argmax(capped) :].all()
    assert float(x[np.argmax(capped)]) == pytest.approx(high, abs=2e-3)
