"""Shared inputs and helpers: the seed article's logits, an independent high-precision cross-entropy in
mpmath, the CLI runner (its commands forked by tests/commands.py); and when and in which order tests run
in worker processes (pytest_cmdline_main and the scheduler below)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import commands
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


# Settings of every process of one test session (the worker processes and every command they start inherit
# them). JAX's persistent compilation cache: the suite compiles the same small paths in many processes, and a
# compiled program read back is the one XLA would compile again; empty at each session's start. Idle OpenMP
# threads sleep instead of spinning on the core that the other worker needs (as a run sets for itself,
# harness.timing.stage.quiet_idle_threads; it governs only waiting, not results).
SESSION = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def pytest_configure(config):
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return  # given by the session that started this one (a worker), or by whoever runs the tests
    folder = tempfile.mkdtemp(prefix="jax_cache_")
    os.environ.update(SESSION, JAX_COMPILATION_CACHE_DIR=folder)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """Two or more test files selected and no -n given: run them in worker processes (-n auto, at most 4),
    each file whole on one worker (module fixtures run once; the files of SPLIT go by parameter, see
    HeaviestFirst). One file, or one test, runs in this process: with whole files per worker it would gain
    nothing from workers and would pay their start."""
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


# --- which tests go together to a worker, and in which order ------------------------------------------
# Files whose tests share no module fixture across parameters: each parameter (with every test of the file
# that has it) is a unit of its own, so that one long file is spread over the workers.
SPLIT = ("test_readme.py", "test_baseline_tables.py")
# Seconds per file measured on 2 cores (the order of a first run; later runs order by the seconds they
# recorded, in .pytest_cache). Files not named here count 0.05 s a test.
FIRST_ORDER = {
    "test_readme.py": 80,
    "test_baseline_tables.py": 74,
    "test_matrix.py": 58,
    "test_shards.py": 28,
    "test_named_losses.py": 26,
    "test_cli.py": 25,
    "test_workers.py": 23,
    "test_kl_paths.py": 22,
    "test_gradient_sweep.py": 21,
    "test_gradients.py": 19,
    "test_install.py": 19,
    "test_experiments.py": 16,
    "test_custom_paths.py": 13,
    "test_resume.py": 13,
    "test_head_ignore.py": 11,
    "test_kl_exact.py": 10,
    "test_layout.py": 4,  # 461 quick tests
}
UNIT_SECONDS = "harness/unit_seconds"  # the cache's key


def unit_of(nodeid: str) -> str:
    """The scheduling unit of a test: its file, or for a file of SPLIT its file and parameter."""
    file = nodeid.split("::", 1)[0]
    param = re.search(r"\[(.*)\]$", nodeid)
    return f"{file}[{param.group(1)}]" if Path(file).name in SPLIT and param else file


@pytest.hookimpl(optionalhook=True)  # xdist's hook: absent under -p no:xdist
def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist") != "loadfile":
        return None  # another --dist asked for: xdist's own
    from xdist.scheduler import LoadScopeScheduling

    class HeaviestFirst(LoadScopeScheduling):
        """Whole files (units: unit_of) to workers, the longest first by the seconds last recorded, each
        worker given the next unit when it is down to the test it runs: the workers end within about one
        short unit of each other. (xdist's loadfile sends the files with most tests first, which puts the
        one-test files of minutes last, and hands out units two ahead.)"""

        def _split_scope(self, nodeid):
            return unit_of(nodeid)

        def _assign_work_unit(self, node):
            if not getattr(self, "ordered", False):  # the first unit handed out: the queue is complete
                self.ordered = True
                seconds = getattr(config, "cache", None) and config.cache.get(UNIT_SECONDS, {}) or {}
                files = [unit.split("[", 1)[0] for unit in self.workqueue]

                def weight(item):
                    unit, tests = item
                    file = unit.split("[", 1)[0]
                    first = FIRST_ORDER.get(Path(file).name, 0.05 * len(tests) * files.count(file))
                    return seconds.get(unit, first / files.count(file))

                units = sorted(self.workqueue.items(), key=weight, reverse=True)
                self.workqueue.clear()
                self.workqueue.update(units)
            super()._assign_work_unit(node)

        def _reschedule(self, node):
            if node.shutting_down:
                return
            if not self.workqueue:
                node.shutdown()
                return
            if self._pending_of(self.assigned_work[node]) >= 2:
                return  # the test it runs and the next one: enough to go on
            self._assign_work_unit(node)

    return HeaviestFirst(config, log)


_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report):
    _seconds[unit_of(report.nodeid)] = _seconds.get(unit_of(report.nodeid), 0.0) + report.duration


def pytest_sessionfinish(session):
    """Record each unit's seconds (in the process that schedules; a worker's are sent to it too)."""
    config = session.config
    if hasattr(config, "workerinput") or os.environ.get("PYTEST_XDIST_WORKER") or not _seconds:
        return
    if getattr(config, "cache", None) is None:
        return
    config.cache.set(UNIT_SECONDS, config.cache.get(UNIT_SECONDS, {}) | {k: round(v, 2) for k, v in _seconds.items()})


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


def run_cli(
    *overrides: str, cwd: Path | None = None, timeout: int = 300, path=(), new_interpreter: bool = False
) -> subprocess.CompletedProcess:
    """`python -m harness *overrides` as a process of its own (tests/commands.py), or with new_interpreter
    in a new Python, as a shell starts it; `path` adds folders to PYTHONPATH."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), *map(str, path)]), HYDRA_FULL_ERROR="0")
    command = [sys.executable, "-m", "harness", *overrides]
    if new_interpreter:
        return subprocess.run(command, cwd=cwd or REPO, env=env, capture_output=True, text=True, timeout=timeout)
    return commands.run(command, cwd or REPO, env, timeout)


@pytest.fixture
def refused(monkeypatch, capsys):
    """`harness *argv` from folder `cwd`, in this process, for a command line its checks refuse before any
    work: (exit status, stdout, stderr) of harness.__main__.run, the command's entry point. No job runs here:
    a command line that passes its checks fails the test. (A few tests run refusals as real subprocesses.)"""
    import harness.__main__ as command

    def refuse(*argv: str, cwd: Path) -> tuple[int, str, str]:
        monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["harness", *argv])
        monkeypatch.setattr(command, "main", lambda: pytest.fail(f"not refused: {' '.join(argv)}"))
        with pytest.raises(SystemExit) as stopped:
            command.run()
        captured = capsys.readouterr()
        return stopped.value.code, captured.out, captured.err

    return refuse


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
