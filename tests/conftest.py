"""Shared inputs and helpers: the seed article's logits, an independent high-precision cross-entropy in
mpmath, the CLI runner; and when tests run in worker processes (pytest_cmdline_main below)."""

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

# The seed article's logits, one row per label: exact losses 19.1 + e, 36.6 + e and e = 5.0696199767698928e-09,
# with e = log1p(exp(-19.1) + exp(-36.6)).
SEED_ROW = (12.3, -5.2, 31.4)
SEED_LOGITS = np.array([SEED_ROW] * 3)
SEED_LABELS = np.array([0, 1, 2])


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """Two or more test files selected and no -n given: run them in worker processes (-n auto, at most 4),
    each file whole on one worker (module fixtures run once). One file, or one test, runs in this process:
    with whole files per worker it would gain nothing from workers and would pay their start."""
    if os.environ.get("PYTEST_XDIST_WORKER") or hasattr(config, "workerinput"):
        return  # a worker itself: it must never start workers of its own
    if getattr(config.option, "numprocesses", 0) is not None or config.getoption("collectonly"):
        return  # -n given, -p no:xdist, or only collecting
    files = set()
    for arg in config.args:
        path = Path(config.invocation_params.dir, arg.split("::")[0])
        files |= set(path.rglob("test_*.py")) if path.is_dir() else {path}
        if len(files) > 1:
            config.option.numprocesses = "auto"
            config.option.maxprocesses = config.option.maxprocesses or 4
            config.option.dist = "loadfile"
            return


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
