"""A backward pass the harness writes (NumPy has no autodiff) adds no error beyond what its forward's
dtype implies, and the tables say which gradients are the harness's own."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import harness
from harness.dtypes import DTYPES, round_to
from harness.exact.gradient import exact_gradient
from harness.paths import numpy_paths


def argmax_errors(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Relative error of NumPy fused's gradient at each row's largest logit (every tied one)."""
    computed = numpy_paths.GRADIENTS["fused"](x, labels).astype(np.float64)
    hi, lo, exponent = exact_gradient(x.astype(np.float64), labels)
    exact = np.ldexp(hi, exponent) + np.ldexp(lo, exponent)
    held = x.astype(np.float64)
    at_max = held == held.max(axis=1, keepdims=True)
    return np.abs(computed[at_max] - exact[at_max]) / np.abs(exact[at_max])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("scale", [0.01, 1.0, 3.0])
def test_fused_gradient_at_the_argmax_is_within_a_few_roundings(dtype, scale):
    """1000 classes within 0.01 of each other: s = sum over the others of exp(x - max) is about 999 and
    the argmax entry 1/(1 + s) about 0.001; formed as 1 - s/(1 + s) in float16 it was off by 89%."""
    rng = np.random.default_rng(7)
    x = round_to(scale * rng.standard_normal((32, 1000)), dtype)
    labels = rng.integers(0, 1000, 32)
    assert argmax_errors(x, labels).max() <= 4 * DTYPES[dtype].unit_roundoff


def test_tied_maxima_share_the_argmax_entry_exactly():
    """Two maxima of 0 and 998 classes at -8 in float16: each max gets (1/(1 + s/2))/2 with s = 998 e^-8."""
    x = np.full((1, 1000), -8.0, dtype=np.float16)
    x[0, [3, 500]] = 0.0
    labels = np.array([7])
    assert argmax_errors(x, labels).max() <= 4 * DTYPES["float16"].unit_roundoff


@pytest.mark.slow
def test_grad_errors_say_whose_gradient_it_is(tmp_path):
    harness.run(
        None,
        [
            "frameworks=[numpy,torch]",
            "paths=[fused]",
            "dtypes=[float32]",
            "families=[spread]",
            "scales=[1.0]",
            "n_rows=4",
            "n_classes=6",
            "grad.enabled=true",
            "timing.enabled=false",
            "progress=false",
            "workers=1",
        ],
        run_dir=tmp_path,
    )
    grads = pd.read_parquet(tmp_path / "grad_errors.parquet")
    assert dict(zip(grads["framework"], grads["gradient_by"], strict=True)) == {
        "numpy": "harness",
        "torch": "framework",
    }
