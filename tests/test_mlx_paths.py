"""MLX's paths on the seed article's logits, against the exact loss and gradient, and MLX's own roundings."""

import numpy as np
import pytest
from conftest import SEED_LABELS, SEED_LOGITS  # exact losses 19.1, 36.6 and 5.0697e-09

pytest.importorskip("mlx.core", reason='MLX is not installed: pip install "mlx[cpu]==0.32.4"')

import mlx.core as mx  # noqa: E402

from harness.backends import mlx as MB  # noqa: E402
from harness.dtypes import DTYPES, round_to  # noqa: E402
from harness.exact.gradient import exact_gradient  # noqa: E402
from harness.exact.reference import exact_cross_entropy  # noqa: E402
from harness.paths import paths_of  # noqa: E402

PATH_NAMES = paths_of("mlx")
from harness.paths import mlx_paths as M  # noqa: E402


def run(fn, logits64, labels, dtype):
    rounded = round_to(logits64, dtype)
    return MB.to_numpy(fn(*MB.to_native(rounded, labels)))


def test_every_path_has_a_loss_and_a_gradient():
    assert tuple(M.PATHS) == paths_of("mlx")
    assert tuple(M.GRADIENTS) == paths_of("mlx")


@pytest.mark.parametrize("path", PATH_NAMES)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_returns_the_input_dtype(path, dtype):
    _, returned = run(M.PATHS[path], SEED_LOGITS, SEED_LABELS, dtype)
    _, gradient_dtype = run(M.GRADIENTS[path], SEED_LOGITS, SEED_LABELS, dtype)
    assert returned == gradient_dtype == dtype


@pytest.mark.parametrize("path", PATH_NAMES)
def test_seed_article_float32(path):
    held = round_to(SEED_LOGITS, "float32").astype(np.float64)
    exact = exact_cross_entropy(held, SEED_LABELS)[0]
    loss, _ = run(M.PATHS[path], SEED_LOGITS, SEED_LABELS, "float32")
    # 19.1 and 36.6 within one float32 unit roundoff (2**-24) relative, as every framework does
    assert np.abs(loss[:2] - exact[:2]).max() <= 2.0**-24 * exact[:2].max()
    if path == "log1p_lse":  # log1p(s) keeps the small loss of the confident row
        assert loss[2] == pytest.approx(exact[2], rel=2.0**-20)
    else:  # the others give 0: 5.07e-9 is below float32's half ulp at 31.4 (2**-20)
        assert loss[2] == 0.0


@pytest.mark.parametrize("path", PATH_NAMES)
def test_seed_article_float64_has_float32_exponentials(path):
    held = round_to(SEED_LOGITS, "float64")
    exact = exact_cross_entropy(held, SEED_LABELS)[0]
    loss, _ = run(M.PATHS[path], SEED_LOGITS, SEED_LABELS, "float64")
    if path == "upcast_fused":  # float32 by definition
        assert np.abs(loss[:2] - exact[:2]).max() <= 2.0**-24 * exact[:2].max()
        return
    # MLX's exp rounds its argument to float32 (half an ulp at 36.6: 2**-19 = 1.9e-6) and its
    # polynomial is good to about 16 float32 ulps (2**-20 relative): the loss is off by up to
    # 2.9e-6, where float64 would be within 2**-53 * 36.6 = 4e-15
    assert np.abs(loss - exact).max() <= 2.0**-19 + 2.0**-20
    if path not in ("naive", "softmax_log"):  # shifted: (max - x[y]) exact, plus the log of 1 + tiny
        assert np.abs(loss[:2] - exact[:2]).max() <= 2.0**-47  # one float64 ulp at 36.6


def test_float64_exp_is_float32_exp():
    one, dtype = MB.to_numpy(mx.exp(mx.array([1.0, 89.0, -100.0], dtype=mx.float64)))
    assert dtype == "float64"
    assert one[0] == float(np.float32(np.e))  # 2.7182817459106445, float32's e, not 2.718281828459045
    assert one[1] == np.inf  # float32 overflows above 88.72; float64's exp(89) is 4.5e38
    assert one[2] == 0.0  # float64's exp(-100) is 3.7e-44


@pytest.mark.parametrize("path", PATH_NAMES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_seed_article_gradient(path, dtype):
    held = round_to(SEED_LOGITS, dtype).astype(np.float64)
    exact = exact_gradient(held, SEED_LABELS)[0]
    gradient, _ = run(M.GRADIENTS[path], SEED_LOGITS, SEED_LABELS, dtype)
    # entries lie in [-1, 1]: float32's 2**-24 per rounding, a few roundings; float64 with float32
    # exponentials gets the tiny entries (5e-9, 1e-16) to float32's relative accuracy
    tolerance = 2.0**-23 if dtype == "float32" or path == "upcast_fused" else 2.0**-50
    assert np.abs(gradient - exact).max() <= tolerance


def test_float16_softmax_log_gives_inf_on_the_first_two_labels():
    # softmax(x) = 5.07e-9 and 1.27e-16 for labels 0 and 1: below half of float16's smallest
    # subnormal (2**-25 = 2.98e-8), so a correctly rounded softmax is 0 and -log(0) = inf
    loss, _ = run(M.PATHS["softmax_log"], SEED_LOGITS, SEED_LABELS, "float16")
    assert loss.tolist() == [np.inf, np.inf, 0.0]
    fused, _ = run(M.PATHS["fused"], SEED_LOGITS, SEED_LABELS, "float16")
    assert fused.tolist() == [19.109375, 36.59375, 0.0]  # float16's nearest to 19.1 and 36.6


@pytest.mark.parametrize(("dtype", "stall"), [("float16", 2048), ("bfloat16", 256)])
def test_softmax_sums_in_the_input_dtype(dtype, stall):
    # n equal logits: loss = log(n) exactly. mx.softmax adds exp(0) = 1 in the input dtype, where
    # the sum stops growing at 2**11 (float16) or 2**8 (bfloat16); every other path sums in float32
    n = 4096
    labels = np.array([0])
    for path in PATH_NAMES:
        loss, _ = run(M.PATHS[path], np.zeros((1, n)), labels, dtype)
        expected = np.log(stall) if path == "softmax_log" else np.log(n)
        if path == "chunked" and dtype == "bfloat16":  # 16 chunk merges, each rounded to bfloat16
            assert loss[0] == pytest.approx(expected, abs=0.1)
        else:
            assert loss[0] == float(round_to(np.array([expected]), dtype)[0]), path


def test_flushes_subnormals_through_exp_only():
    assert {d: MB.flushes_subnormals(d) for d in DTYPES} == {
        "float16": False,  # exp(ln 2**-16) is computed in float32, where 2**-16 is normal
        "bfloat16": True,
        "float32": True,
        "float64": True,
    }
    # a multiply keeps the subnormal 2**-128; exp(-88.7) is 0 (the float32 polynomial stops near -87.7)
    quarter, _ = MB.to_numpy(mx.array([2.0**-126], dtype=mx.float32) * 0.25)
    assert quarter[0] == 2.0**-128
    assert MB.to_numpy(mx.exp(mx.array([-88.7], dtype=mx.float32)))[0][0] == 0.0


def test_compile_is_the_plain_lazy_function():
    assert not MB.COMPILES
    loss, _ = run(MB.compile(M.PATHS["fused"]), SEED_LOGITS, SEED_LABELS, "float32")
    assert loss[0] == pytest.approx(19.1, rel=2.0**-23)
