"""Shared helpers: an independent high-precision cross-entropy in mpmath, and the CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mpmath
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
mpmath.mp.prec = 256  # every mpmath value in the tests, unless a test says otherwise


def mp_cross_entropy(row, label: int) -> mpmath.mpf:
    """log(sum_j exp(x_j - x_y)) = log1p(sum_{j != y} exp(x_j - x_y)), in mpmath at 256 bits."""
    xy = mpmath.mpf(float(row[label]))
    rest = mpmath.fsum(mpmath.exp(mpmath.mpf(float(v)) - xy) for j, v in enumerate(row) if j != label)
    return mpmath.log1p(rest)


def dd_value(hi, lo) -> mpmath.mpf:
    return mpmath.mpf(float(hi)) + mpmath.mpf(float(lo))


def rel_diff(value, exact) -> float:
    if exact == 0:
        return float(abs(value))
    return float(abs(value - exact) / abs(exact))


def small_sweep(**changes):
    """A small SweepConfig for tests that drive the runner API: the full grid of names, 8 x 50 logits."""
    from harness.sweep.config import SweepConfig

    settings = dict(
        experiment="test",
        frameworks=("numpy", "torch", "jax"),
        paths=("naive", "softmax_log", "log_softmax_nll", "fused"),
        dtypes=("float16", "bfloat16", "float32", "float64"),
        families=("spread", "offset"),
        scales=(0.01, 1.0, 30.0, 1000.0, 1e5),
        n_rows=8,
        n_classes=50,
        seed=3,
        label="random",
        progress=False,
    )
    return SweepConfig(**(settings | changes))


def run_cli(*overrides: str, cwd: Path | None = None, timeout: int = 300, path=()) -> subprocess.CompletedProcess:
    """`python -m harness *overrides` in a subprocess; `path` adds folders to PYTHONPATH."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), *map(str, path)]), HYDRA_FULL_ERROR="0")
    return subprocess.run(
        [sys.executable, "-m", "harness", *overrides],
        cwd=cwd or REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def exp_slack(framework: str, dtype: str) -> float:
    """How many times looser than `dtype` a path that exponentiates can be, from the framework's measured
    exp: 2**(p - p_exp) where exp computes in a narrower dtype (MLX's float64 exp is float32's), times
    4 x its error in ulps where that exceeds 2 (MLX's float32 exp is 7 ulps off); 1 everywhere else."""
    from harness import backends
    from harness.dtypes import DTYPES

    narrower = 2.0 ** (DTYPES[dtype].precision - DTYPES[backends.exp_dtype(framework, dtype)].precision)
    exp_ulps = backends.exp_error_ulps(framework, dtype)
    return narrower * (4.0 * exp_ulps if exp_ulps > 2.0 else 1.0)
