"""NumPy's hand-written backward pass of the loss with options (harness.paths.numpy_option_grads)
against the exact gradient (harness.exact.options), central differences, and torch autograd."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from conftest import REPO, small_sweep

from harness import backends, paths
from harness.dtypes import round_to
from harness.exact.options import exact_option_gradient
from harness.outputs import tables
from harness.paths import options as opt
from harness.paths.numpy_option_grads import gradient_with_options
from harness.sweep import metrics, option_inputs, runner
from harness.sweep.option_cells import exact_loss_options

NUMPY = backends.load("numpy")
RNG = np.random.default_rng(11)
X = RNG.standard_normal((10, 7)) * 4  # 10 rows, 7 classes
Y = RNG.integers(0, 7, size=10)
FLOAT64_PATHS = [p for p in paths.paths_of("numpy") if p != "upcast_fused"]  # upcast_fused: float32 inside
ULP = 2.0**-53
TRAINING = yaml.safe_load((REPO / "conf/experiment/training_losses.yaml").read_text())
TRAINING_SETS = {
    " ".join(f"{k}={v}" for k, v in s.items()) or "plain": opt.CellOptions(reduction=TRAINING["reduction"][0], **s)
    for s in TRAINING["option_sets"]
}
ALONE = {
    "none": opt.CellOptions(),
    "sum": opt.CellOptions(reduction="sum"),
    "ignored none": opt.CellOptions(ignore_fraction=0.3),
    "weighted ignored sum": opt.CellOptions(reduction="sum", ignore_fraction=0.3, class_weights="random"),
    "weighted ignored mean": opt.CellOptions(reduction="mean", ignore_fraction=0.3, class_weights="random"),
    "smoothing 0.3": opt.CellOptions(label_smoothing=0.3),
    "z-loss 0.05": opt.CellOptions(z_loss=0.05),
    "soft-cap 3": opt.CellOptions(softcap=3.0),
    "dense smoothed": opt.CellOptions(target="dense", label_smoothing=0.2),
    "dense z-loss weighted mean": opt.CellOptions(
        target="dense", z_loss=0.01, class_weights="random", reduction="mean"
    ),
    "all": opt.CellOptions(
        reduction="mean", ignore_fraction=0.2, class_weights="random", label_smoothing=0.1, z_loss=1e-3, softcap=5.0
    ),
}
CASES = ALONE | {f"training_losses {name}": options for name, options in TRAINING_SETS.items()}


def setup(options: opt.CellOptions, path: str, dtype: str = "float64", x=X, y=Y):
    """(rounded logits, option inputs, the composed NumPy loss, its packed arrays)."""
    rounded = round_to(x, dtype)
    inputs = option_inputs.option_inputs(y, x.shape[1], options, seed=0)
    arrays = option_inputs.native_arrays(NUMPY, inputs, options, dtype, "cpu")
    fn = opt.option_function("numpy", path, paths.loss_function("numpy", path), arrays, options)
    return rounded, inputs, fn, arrays


def exact_gradient(rounded, inputs, options: opt.CellOptions, upstream=None) -> np.ndarray:
    lo = exact_loss_options(inputs, options)
    held = rounded.astype(np.float64)
    return exact_option_gradient(held, inputs.safe_labels, lo, options.reduction, upstream).to_float64()


def row_relative(got, exact) -> float:
    """The largest error divided by its row's largest exact entry (the harness's max_row_rel_err)."""
    scale = np.abs(exact).max(axis=1, keepdims=True)
    return float((np.abs(got - exact) / np.where(scale > 0, scale, 1.0)).max())


def applicable(path: str, options: opt.CellOptions) -> bool:
    return options.target != "dense" or path in opt.DENSE_PATHS


@pytest.mark.parametrize("case", list(CASES))
def test_float64_gradients_match_the_exact_gradient_to_a_few_ulps(case):
    options = CASES[case]
    for path in [p for p in FLOAT64_PATHS if applicable(p, options)]:
        rounded, inputs, fn, arrays = setup(options, path)
        got = fn.gradient(rounded, arrays.packed())
        assert got.dtype == np.float64 and got.shape == X.shape
        exact = exact_gradient(rounded, inputs, options)
        assert row_relative(got, exact) <= 8 * ULP, (path, row_relative(got, exact) / ULP)
        assert (got[~inputs.kept] == 0).all()  # ignored rows: exactly 0


def test_upcast_fused_is_as_accurate_as_float32():
    rounded, inputs, fn, arrays = setup(CASES["all"], "upcast_fused")
    got = fn.gradient(rounded, arrays.packed())
    assert got.dtype == np.float64 and row_relative(got, exact_gradient(rounded, inputs, CASES["all"])) < 2.0**-21


@pytest.mark.parametrize("path", ["fused", "log_softmax_nll", "online"])
def test_a_non_uniform_upstream_for_reduction_none(path):
    options = opt.CellOptions(ignore_fraction=0.3, class_weights="random", label_smoothing=0.1, z_loss=0.01)
    rounded, inputs, fn, arrays = setup(options, path)
    upstream = np.linspace(-2.0, 3.0, len(Y))
    got = gradient_with_options(path, paths.loss_function("numpy", path), rounded, arrays, options, upstream)
    exact = exact_gradient(rounded, inputs, options, upstream)
    assert row_relative(got, exact) <= 8 * ULP


def test_a_row_checkable_by_hand():
    """Logits [0, log 3], label 1, soft-cap none, smoothing 0.5, z-loss 1/4, sum: p = (1/4, 3/4),
    q = (1/4, 3/4) (so p - q = 0), lse = log 4: g = 2 z lse p = (log 4) / 2 (1/4, 3/4)."""
    x = np.array([[0.0, np.log(3.0)]])
    options = opt.CellOptions(reduction="sum", label_smoothing=0.5, z_loss=0.25)
    _, _, fn, arrays = setup(options, "fused", x=x, y=np.array([1]))
    expected = np.log(4.0) / 2 * np.array([[0.25, 0.75]])
    np.testing.assert_allclose(fn.gradient(x, arrays.packed()), expected, rtol=4 * ULP)


@pytest.mark.parametrize("case", ["all", "dense z-loss weighted mean", "training_losses " + list(TRAINING_SETS)[-1]])
def test_central_differences_agree(case):
    """Independent of the exact reference: (L(x + h e_ij) - L(x - h e_ij)) / 2h of the NumPy loss itself."""
    options = CASES[case]
    x, y = X[:4], Y[:4]
    rounded, _, fn, arrays = setup(options, "log_softmax_nll", x=x, y=y)
    y_arrays = arrays.packed()

    def total(v):
        return float(np.sum(fn(v, y_arrays)))

    h = 1e-5
    numeric = np.zeros_like(x)
    for i, j in np.ndindex(*x.shape):
        step = np.zeros_like(x)
        step[i, j] = h
        numeric[i, j] = (total(rounded + step) - total(rounded - step)) / (2 * h)
    np.testing.assert_allclose(fn.gradient(rounded, y_arrays), numeric, rtol=0, atol=1e-8)


@pytest.mark.parametrize("case", ["all", "dense smoothed", "ignored none", "soft-cap 3"])
def test_torch_autograd_agrees_in_float64(case):
    """The same composed loss in torch (harness.paths.torch_options), differentiated by autograd."""
    torch = pytest.importorskip("torch")
    torch_backend = backends.load("torch")
    options = CASES[case]
    for path in ("log_softmax_nll", "fused"):
        if path == "fused" and options.class_weights and options.label_smoothing:
            continue  # torch's fused weights the smoothing term differently (opt.TORCH_WEIGHTED_SMOOTHING)
        rounded, inputs, fn, arrays = setup(options, path)
        upstream = np.linspace(0.5, 2.0, len(Y)) if options.reduction == "none" else 1.0
        with torch_backend.dtype_scope("float64"):
            t_arrays = option_inputs.native_arrays(torch_backend, inputs, options, "float64", "cpu")
            t_fn = opt.option_function("torch", path, paths.loss_function("torch", path), t_arrays, options)
            x = torch.tensor(rounded, requires_grad=True)
            loss = t_fn(x, t_arrays.packed())
            (torch_grad,) = torch.autograd.grad(loss, x, grad_outputs=torch.as_tensor(upstream).expand_as(loss))
        got = gradient_with_options(path, paths.loss_function("numpy", path), rounded, arrays, options, upstream)
        assert row_relative(got, torch_grad.numpy()) <= 8 * ULP, path


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_low_precision_gradients_stay_in_the_dtype_within_a_few_of_its_ulps(dtype):
    options = TRAINING_SETS[list(TRAINING_SETS)[-1]]
    eps = {"float16": 2.0**-11, "bfloat16": 2.0**-8, "float32": 2.0**-24}[dtype]
    for path in ("fused", "log_softmax_nll", "chunked"):
        rounded, inputs, fn, arrays = setup(options, path, dtype)
        got = fn.gradient(rounded, arrays.packed())
        assert got.dtype == rounded.dtype, path
        err = row_relative(got.astype(np.float64), exact_gradient(rounded, inputs, options))
        assert err < 16 * eps, (path, err / eps)


def test_float32_option_cells_have_gradient_rows_through_the_sweep():
    """The grad_errors rows of NumPy option cells: status ok and float32-sized errors, as torch's."""
    sweep = small_sweep(
        frameworks=("numpy",),
        paths=("log_softmax_nll", "fused"),
        dtypes=("float32",),
        families=("spread",),
        scales=(3.0,),
        n_rows=12,
        n_classes=30,
        reduction=("mean",),
        option_sets=tuple(TRAINING["option_sets"]),
        gradient=True,
    )
    records = []
    runner.sweep_cells(sweep, records.append)
    grads = tables.grad_errors_frame(records, runner.NAME_ORDER)
    assert len(grads) == 2 * len(TRAINING_SETS)  # log_softmax_nll and fused (both have a dense form)
    assert (grads["status"] == metrics.OK).all(), grads[["path", "status", "message"]]
    assert (grads["max_row_rel_err"] < 2.0**-20).all(), grads[["path", "max_row_rel_err"]]


def test_a_custom_numpy_path_with_options_still_has_no_gradient():
    def mine(x, y):
        return paths.loss_function("numpy", "fused")(x, y)

    options = opt.CellOptions(reduction="mean")
    inputs = option_inputs.option_inputs(Y, X.shape[1], options, 0)
    arrays = option_inputs.native_arrays(NUMPY, inputs, options, "float64", "cpu")
    fn = opt.option_function("numpy", "mine", mine, arrays, options)
    assert not hasattr(fn, "gradient") and NUMPY.autodiff_gradient is None
