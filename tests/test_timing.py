"""The timing method, not absolute speed: no test asserts on a wall-clock time.

The timer's arithmetic runs on a clock that moves only by what each call declares it costs (FakeClock),
so batching, samples, budgets and warm-ups are checked exactly; JIT compilation lands in compile_s; a
tiny real sweep has the documented columns and positive finite numbers; failures are rows.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import threadpoolctl

from harness import backends
from harness.dtypes import DTYPES, round_to
from harness.outputs import timing_plots
from harness.paths import PATH_NAMES, paths_of
from harness.sweep import inputs, metrics
from harness.timing import head, memory, stage
from harness.timing import timer as timing

FRAMEWORKS = ("numpy", "torch", "jax")
COMMON_PATHS = tuple(p for p in PATH_NAMES if all(p in paths_of(f) for f in FRAMEWORKS))  # keras_probs aside
SWEEP_DTYPES = ("float32", "bfloat16")
SWEEP_SIZES = ((8, 16),)
MIN_BLOCKS = 3


def _isolate_thread_settings(mp: pytest.MonkeyPatch) -> None:
    """Make the XLA_FLAGS request revert when `mp` undoes (set or not before)."""
    for name in ("XLA_FLAGS",):
        was_set = name in os.environ
        mp.setenv(name, os.environ.get(name, ""))
        if not was_set:
            mp.delenv(name)


@pytest.fixture(scope="module")
def sweep() -> pd.DataFrame:
    import torch

    torch_threads = torch.get_num_threads()
    with threadpoolctl.threadpool_limits(limits=None), pytest.MonkeyPatch.context() as mp:
        _isolate_thread_settings(mp)
        try:
            return stage.time_sweep(
                FRAMEWORKS,
                COMMON_PATHS,
                SWEEP_DTYPES,
                SWEEP_SIZES,
                seed=0,
                threads=1,
                budget_s=0.02,
                rel_iqr_target=0.5,
                min_blocks=MIN_BLOCKS,
            )
        finally:
            torch.set_num_threads(torch_threads)


class FakeClock:
    """The timer's clock, moved only by `spend`: a call that spends s seconds is measured as exactly s."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def spend(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(timing, "time", fake)  # the timer's and the head timing's clock reads
    monkeypatch.setattr(head, "time", fake)
    return fake


# --- correct bits ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_ulp_err", "precision", "bits"),
    [
        (0.0, 24, 24),  # exact
        (0.5, 24, 24),  # correctly rounded: all bits
        (1.0, 24, 23),  # one doubling past half an ulp: one bit lost
        (4.0, 11, 8),
        (2.0**30, 24, 0),  # clipped at 0
        (math.inf, 53, 0),
    ],
)
def test_correct_bits(max_ulp_err, precision, bits):
    assert metrics.correct_bits(max_ulp_err, precision) == bits


def test_correct_bits_of_an_array_keeps_nan():
    bits = metrics.correct_bits(np.array([0.25, 8.0, np.nan]), 8)
    np.testing.assert_array_equal(bits, [8.0, 4.0, np.nan])


# --- the timer on functions of known cost ----------------------------------------------------------


def test_a_real_sleep_is_measured_as_at_least_its_length():
    t = timing.blocked_autorange(time.sleep, (0.002,), budget_s=0.03, rel_iqr_target=0.05, min_blocks=MIN_BLOCKS)
    assert 0.002 <= t.min_s <= t.median_s  # a sleep never returns early; how late it wakes is the machine's
    assert t.n_samples >= MIN_BLOCKS and t.compile_s == 0.0 and t.calls_per_block >= 1


def test_a_2_ms_call_is_measured_as_2_ms_in_blocks_of_at_least_10_ms(clock):
    t = timing.blocked_autorange(clock.spend, (0.002,), budget_s=0.05, rel_iqr_target=0.05, min_blocks=MIN_BLOCKS)
    # calibration: 1 call is 2 ms, 1.2 x 10 ms / 2 ms = 6 calls make 12 ms >= MIN_BLOCK_S
    assert t.calls_per_block == 6 and t.n_samples == MIN_BLOCKS and t.compile_s == 0.0
    assert (t.median_s, t.min_s, t.iqr_s) == pytest.approx((0.002, 0.002, 0.0), rel=1e-9, abs=1e-15)


def test_a_call_four_times_longer_is_measured_four_times_longer(clock):
    short = timing.blocked_autorange(clock.spend, (0.0005,), budget_s=0.1, rel_iqr_target=0.05)
    long = timing.blocked_autorange(clock.spend, (0.002,), budget_s=0.1, rel_iqr_target=0.05)
    assert long.median_s / short.median_s == pytest.approx(4.0, rel=1e-9)
    assert (short.calls_per_block, long.calls_per_block) == (30, 6)  # 0.5 ms: 1, 10 (x10 at most), 30 calls (x3)


def test_short_calls_are_batched_so_each_block_outlasts_the_clock(clock):
    t = timing.blocked_autorange(clock.spend, (2.5e-6,), budget_s=0.05, min_blocks=MIN_BLOCKS)
    # 1, 10, 100, 1000 calls (x10 at most a step), then x5 (1.2 x 10 ms / 2.5 ms = 4.8): 5000 calls, 12.5 ms
    assert t.calls_per_block == 5000 and t.median_s == pytest.approx(2.5e-6, rel=1e-9)
    assert t.calls_per_block * t.median_s >= timing.MIN_BLOCK_S


def test_min_blocks_wins_over_an_exhausted_budget(clock):
    t = timing.blocked_autorange(clock.spend, (0.012,), budget_s=0.0, rel_iqr_target=0.0, min_blocks=MIN_BLOCKS)
    assert (t.n_samples, t.calls_per_block) == (MIN_BLOCKS, 1)


def test_after_a_long_warm_up_only_the_samples_run(clock):
    # the language-model head: its accuracy call compiled, its memory call was the warm-up
    calls = []

    def call(seconds):
        calls.append(seconds)
        clock.spend(seconds)

    t = timing.blocked_autorange(call, (0.012,), budget_s=0.0, rel_iqr_target=0.0, min_blocks=2, warm_call_s=1.0)
    assert (len(calls), t.n_samples, t.calls_per_block, t.compile_s) == (2, 2, 1, 0.0)  # a warm-up only
    assert t.median_s == pytest.approx(0.012, rel=1e-9)  # the 1 s warm-up is no sample
    calls.clear()
    # the caller's warm-up ran what the samples run (nothing compiled): it is the first sample
    sample = {"budget_s": 0.0, "rel_iqr_target": 0.0, "warm_call_is_sample": True}
    t = timing.blocked_autorange(call, (0.012,), min_blocks=2, warm_call_s=1.0, **sample)
    assert (len(calls), t.n_samples, t.calls_per_block) == (1, 2, 1)
    assert t.min_s == pytest.approx(0.012, rel=1e-9) and t.median_s == pytest.approx((1.0 + 0.012) / 2)
    calls.clear()
    t = timing.blocked_autorange(call, (0.012,), min_blocks=1, warm_call_s=2.5, **sample)
    assert (len(calls), t.n_samples, t.median_s) == (0, 1, 2.5)  # one sample, the warm-up: no call here
    calls.clear()
    timing.blocked_autorange(call, (0.012,), budget_s=0.0, rel_iqr_target=0.0, min_blocks=2)
    assert len(calls) == 4  # first call, calibration block, two samples
    calls.clear()
    t = timing.blocked_autorange(call, (0.001,), budget_s=0.0, rel_iqr_target=0.0, min_blocks=1, warm_call_s=0.5)
    assert t.calls_per_block > 1 and len(calls) > t.calls_per_block  # a shorter warm-up: still calibrated


def test_min_blocks_must_be_positive():
    with pytest.raises(ValueError, match="min_blocks must be an integer >= 1"):
        timing.blocked_autorange(lambda: None, min_blocks=0)


def test_an_unmet_iqr_target_stops_at_the_budget(clock):
    costs = iter([0.001, 0.002, 0.003] * 100)  # the samples never agree: only the budget stops them
    t = timing.blocked_autorange(lambda: clock.spend(next(costs)), budget_s=0.08, rel_iqr_target=0.0, min_blocks=1)
    # first call 1 ms, calibration 1 call (2 ms) then 6 calls (12 ms); then blocks of 6 calls, 12 ms each,
    # until 0.08 s of samples are spent: 7 blocks (84 ms), the last one crossing the budget
    assert (t.calls_per_block, t.n_samples) == (6, 7)
    assert clock.now == pytest.approx(0.001 + 0.002 + 0.012 + 7 * 0.012, rel=1e-9)


@pytest.mark.parametrize(
    ("samples", "spent_s", "enough"),
    [
        ([1.0, 1.0], 0.0, False),  # fewer than min_blocks
        ([1.0, 1.0, 1.0], 5.0, True),  # budget spent
        ([1.0, 1.0, 1.0], 0.0, True),  # IQR 0 <= 5% of the median
        ([1.0, 2.0, 3.0, 4.0], 0.0, False),  # IQR 1.5 is 60% of the median 2.5
    ],
)
def test_enough_samples(samples, spent_s, enough):
    assert timing.enough_samples(samples, spent_s, budget_s=1.0, rel_iqr_target=0.05, min_blocks=3) is enough


def test_one_sample_never_meets_the_iqr_target():
    assert not timing.enough_samples([1.0], 0.0, budget_s=1.0, rel_iqr_target=0.05, min_blocks=1)


def test_the_first_call_is_compile_s_and_never_a_sample(clock):
    costs = iter([2.0] + [0.02] * 100)  # a compiling first call, then every call alike
    t = timing.blocked_autorange(lambda: clock.spend(next(costs)), compiles=True, budget_s=0.1, min_blocks=5)
    assert (t.compile_s, t.median_s, t.min_s, t.calls_per_block) == pytest.approx((2.0, 0.02, 0.02, 1), rel=1e-9)
    costs = iter([2.0] + [0.02] * 100)
    assert timing.blocked_autorange(lambda: clock.spend(next(costs)), compiles=False).compile_s == 0.0


def test_jax_compiles_in_the_first_call_only():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    traces = []

    def loss(v):
        traces.append(None)  # runs when JAX traces the function, i.e. compiles it
        return jax.nn.logsumexp(jnp.tanh(v) * 3.0, axis=1)

    x = jnp.asarray(np.random.default_rng(0).standard_normal((256, 1000)), dtype=jnp.float32)
    t = timing.blocked_autorange(jax.jit(loss), (x,), sync=jax.block_until_ready, compiles=True, budget_s=0.05)
    assert len(traces) == 1 and t.compile_s > 0 and t.median_s > 0 and t.n_samples >= timing.MIN_BLOCKS


# --- inputs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_inputs_are_the_accuracy_stages_bits(dtype):
    logits, labels = stage.timing_inputs(7, 50, seed=3)
    base = inputs.draw(7, 50, 3)
    expected = round_to(inputs.make_logits("spread", 1.0, base), dtype)
    chunked = stage.rounded_logits(logits, dtype, chunk_elements=120)  # 2 rows per chunk, last one short
    assert chunked.dtype == expected.dtype
    np.testing.assert_array_equal(chunked.view(np.uint8), expected.view(np.uint8))
    np.testing.assert_array_equal(labels, base.labels)


def test_memory_shortfall_says_what_is_not_run():
    assert memory.memory_shortfall(10, 100) == ""
    assert memory.memory_shortfall(10, None) == ""
    assert memory.memory_shortfall(3 * 10**9, 10**9).startswith("not run: needs about 3.0 GB")


# --- threads ---------------------------------------------------------------------------------------


def test_xla_flags_replace_thread_flags_and_keep_others():
    from harness.backends import jax as jax_backend

    old = "--xla_dump_to=/tmp/x --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    assert jax_backend.xla_flags(2, old) == (
        "--xla_dump_to=/tmp/x --xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads=2"
    )


def test_rows_record_the_threads_in_force_not_the_threads_asked_for():
    """MLX has no thread setting: asked for 2, its rows say 1 and why (tests/test_backend_contract.py
    checks each backend's answer)."""
    pytest.importorskip("mlx.core")
    rows = stage.time_sweep(
        ["mlx"], ["fused"], ["float32"], [(2, 4)], seed=0, threads=2, budget_s=0.0, min_blocks=1, bandwidth_gb_per_s=1.0
    )
    assert rows["status"].tolist() == [metrics.OK] and rows["threads"].tolist() == [1]
    assert rows["message"].tolist() == ["MLX has no thread setting: its CPU ops run on one thread, not 2"]


def test_threads_are_requested_only_of_frameworks_fixed_at_start_up():
    assert [f for f in backends.FRAMEWORKS if stage.sets_threads_at_start(f)] == ["jax", "tensorflow"]


def test_bad_thread_counts_are_refused():
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        stage.check_threads(0)


# --- the sweep -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sweep_has_exactly_the_documented_columns_and_one_row_per_cell(sweep):
    assert tuple(sweep.columns) == stage.COLUMNS
    assert len(sweep) == len(FRAMEWORKS) * len(COMMON_PATHS) * len(SWEEP_DTYPES) * len(SWEEP_SIZES)
    assert not sweep.duplicated(["framework", "path", "dtype", "n_rows", "n_classes"]).any()
    # the loss options of what was timed: the bare per-row loss
    assert (sweep["reduction"] == "none").all() and (sweep["target"] == "index").all()
    assert (sweep[["ignore_fraction", "label_smoothing", "z_loss"]] == 0.0).all().all()
    assert sweep["class_weights"].isna().all() and sweep["softcap"].isna().all()


@pytest.mark.slow
def test_sweep_rows_have_positive_finite_times(sweep):
    assert (sweep["status"] == metrics.OK).all(), sweep.loc[sweep["status"] != metrics.OK, "message"].tolist()
    for column in ("median_s", "min_s", "elements_per_s", "gb_per_s", "bandwidth_fraction"):
        assert np.isfinite(sweep[column]).all() and (sweep[column] > 0).all(), column
    assert (sweep["iqr_s"] >= 0).all() and (sweep["min_s"] <= sweep["median_s"]).all()
    assert (sweep["n_samples"] >= MIN_BLOCKS).all()
    assert (sweep["device"] == "cpu").all()
    # the count in force: 1 as asked, unless JAX had started (an earlier test) with other flags, which the row says
    asked = (sweep["threads"] == 1) & (sweep["message"] == "")
    late = (sweep["framework"] == "jax") & sweep["message"].str.startswith("not applied: JAX's backend had started")
    assert (asked | late).all(), sweep[["framework", "threads", "message"]]


@pytest.mark.slow
def test_sweep_compile_time_is_recorded_for_jax_only(sweep):
    jitted = sweep["framework"] == "jax"
    assert (sweep.loc[jitted, "compile_s"] > 0).all()
    assert (sweep.loc[~jitted, "compile_s"] == 0).all()


@pytest.mark.slow
def test_sweep_throughput_columns_follow_from_the_median(sweep):
    n_elements = sweep["n_rows"] * sweep["n_classes"]
    itemsize = sweep["dtype"].map(lambda d: np.dtype(DTYPES[d].numpy_type).itemsize)
    np.testing.assert_array_equal(sweep["bytes_min"], n_elements * itemsize)
    np.testing.assert_allclose(sweep["elements_per_s"] * sweep["median_s"], n_elements)
    np.testing.assert_allclose(sweep["gb_per_s"] * 1e9 * sweep["median_s"], sweep["bytes_min"])
    np.testing.assert_allclose(sweep["bandwidth_fraction"] * sweep["bandwidth_gb_per_s"], sweep["gb_per_s"])


@pytest.mark.slow
def test_bandwidth_is_measured_once_and_positive(sweep):
    assert sweep["bandwidth_gb_per_s"].nunique() == 1
    assert np.isfinite(sweep["bandwidth_gb_per_s"].iloc[0]) and sweep["bandwidth_gb_per_s"].iloc[0] > 0
    measured = memory.measure_bandwidth(threads=2, n_bytes=32 * 2**20, repeats=2)
    assert math.isfinite(measured) and measured > 0


def test_a_path_that_cannot_run_is_a_row_not_a_crash(monkeypatch):
    from harness.paths import numpy_paths

    def not_implemented(x, y):
        raise NotImplementedError(f"{x.dtype} not implemented for this path")

    def broken(x, y):
        raise ValueError("boom")

    monkeypatch.setitem(numpy_paths.PATHS, "naive", not_implemented)
    monkeypatch.setitem(numpy_paths.PATHS, "fused", broken)
    frame = stage.time_sweep(
        ["numpy"], ["naive", "fused", "log_softmax_nll"], ["float32"], [(4, 8)], 0, 1, 0.01, 0.5, min_blocks=1,
        bandwidth_gb_per_s=10.0,
    )  # fmt: skip
    assert frame["status"].tolist() == [metrics.UNSUPPORTED, metrics.ERROR, metrics.OK]
    assert frame["message"].tolist()[:2] == [
        "NotImplementedError: float32 not implemented for this path",
        "ValueError: boom",
    ]
    assert frame["n_samples"].tolist()[:2] == [0, 0] and frame["median_s"].iloc[:2].isna().all()


def test_an_input_too_large_for_memory_is_a_row_that_says_so(monkeypatch):
    monkeypatch.setattr(stage, "available_memory_bytes", lambda: 100)
    frame = stage.time_sweep(["numpy"], ["fused"], ["float64"], [(4, 8)], 0, 1, 0.01, 0.5, bandwidth_gb_per_s=10.0)
    assert frame["status"].tolist() == [metrics.ERROR]
    assert frame["message"].iloc[0].startswith("not run: needs about")


# --- plots -----------------------------------------------------------------------------------------


def test_worst_correct_bits_skips_the_breaking_scales():
    cells = pd.DataFrame({"status": ["ok", "ok", "inf"], "max_ulp_err": [0.5, 4.0, np.nan]})
    assert timing_plots.worst_correct_bits(cells, 24) == 21


@pytest.mark.slow
def test_plots_are_written(sweep, tmp_path):
    two_sizes = pd.concat([sweep, sweep.assign(n_classes=32)])  # one panel per size
    timing_plots.timing_bars(two_sizes, "float32", tmp_path / "plots" / "timing_float32.png")
    keys = sweep[["framework", "path", "dtype", "n_rows", "n_classes"]]
    errors = pd.concat(
        [
            keys.assign(scale=1.0, status="ok", max_ulp_err=0.7),
            keys.assign(scale=1e3, status=np.where(keys["path"] == "naive", "inf", "ok"), max_ulp_err=3.0),
        ]
    )
    timing_plots.accuracy_vs_time(errors, sweep, tmp_path / "plots" / "accuracy_vs_time.png")
    for name in ("timing_float32.png", "accuracy_vs_time.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class _Backend:
    """The part of a backend head timing uses: a thread scope and sync."""

    @staticmethod
    @contextlib.contextmanager
    def threads(n):
        yield n, ""

    @staticmethod
    def sync(result):
        return result

    @staticmethod
    def release_memory():
        return None


@pytest.mark.skipif(importlib.util.find_spec("mlx") is None, reason="mlx not installed")
def test_the_memory_of_an_mlx_call_is_measured_past_its_buffer_cache():
    """MLX keeps a call's freed buffers for the next: without the backend's release_memory the
    second call of exp over 4M float32 (16 MB out) reads as needing nothing."""
    from harness.backends import mlx as mlx_backend

    x = mlx_backend.mx.zeros((4_000_000,), dtype=mlx_backend.mx.float32)
    mlx_backend.sync(x)

    def call():
        return mlx_backend.sync(mlx_backend.mx.exp(x))

    call()  # the warm-up
    peak = memory.peak_bytes(call, mlx_backend.release_memory)
    if peak is None:
        pytest.skip("the resident set's high-water mark cannot be read here")
    assert peak >= 15_000_000
    call()
    assert memory.peak_bytes(call) < 4_000_000  # what the cache hid


def test_head_timing_counts_the_memory_call_unless_the_loss_compiles_again_for_the_thread_count(clock):
    settings = SimpleNamespace(threads=1, budget_s=0.0, rel_iqr_target=0.0, min_blocks=1)
    calls = []

    def recompiles_first(*_):  # a compiled loss meeting the timing's thread count: compiles again once
        calls.append(None)
        clock.spend(1.1 if len(calls) == 1 else 0.01)

    row = head.time_loss(recompiles_first, (), _Backend, settings, first_call_s=5.0, compiles=True, recompiles=True)
    assert len(calls) == 2 and row["n_samples"] == 1 and row["compile_s"] == 5.0
    assert row["median_s"] == pytest.approx(0.01, rel=1e-9)  # the recompiling memory call is no sample

    calls.clear()

    def compiled_long_call(*_):  # compiled by the accuracy call (mx.compile, jax.jit): every later call alike
        calls.append(None)
        clock.spend(1.05)

    row = head.time_loss(compiled_long_call, (), _Backend, settings, first_call_s=5.0, compiles=True)
    assert (
        len(calls) == 1 and row["n_samples"] == 1 and row["median_s"] == pytest.approx(1.05) and row["compile_s"] == 5.0
    )

    calls.clear()

    def long_call(*_):  # eager: every call alike
        calls.append(None)
        clock.spend(1.05)

    row = head.time_loss(long_call, (), _Backend, settings, first_call_s=1.05, compiles=False)
    assert (
        len(calls) == 1 and row["n_samples"] == 1 and row["median_s"] == pytest.approx(1.05) and row["compile_s"] == 0.0
    )


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="no CUDA device")
def test_torch_on_cuda_times_on_the_device_and_online_runs_there():
    """device=cuda: inputs move to the GPU, every call is synchronised, and torch's online path
    allocates on the input's device."""
    from harness.paths import build

    rounded = round_to(inputs.make_logits("spread", 1.0, inputs.draw(8, 16, 0)), "float32")
    labels = np.arange(8) % 16
    online = build.builtin("torch", "online").loss
    on_gpu, dtype = build.evaluate("torch", online, rounded, labels, "cuda")
    on_cpu, _ = build.evaluate("torch", online, rounded, labels, "cpu")
    assert dtype == "float32" and np.allclose(on_gpu, on_cpu, rtol=1e-6)
    rows = stage.time_sweep(
        ["torch"],
        ["fused", "online"],
        ["float32"],
        [(8, 16)],
        seed=0,
        budget_s=0.0,
        min_blocks=1,
        bandwidth_gb_per_s=1.0,
        device="cuda",
    )
    assert (rows["status"] == metrics.OK).all(), rows["message"].tolist()
    assert (rows["device"] == "cuda").all() and (rows["median_s"] > 0).all()
