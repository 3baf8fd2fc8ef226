"""What every backend promises, generated from harness.backends.FRAMEWORKS: a new backend module is
covered without editing this file (frameworks not installed are skipped).

Transfer to and from NumPy keeps every bit (bfloat16 included); `flushes_subnormals` agrees with a
direct measurement through the backend's own arithmetic; `threads` yields the thread count in force
and says why when it is not the one asked for; `dtype_scope` runs each dtype as itself.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from harness import backends
from harness.dtypes import DTYPES, round_to

INSTALLED = [
    pytest.param(name, marks=pytest.mark.skipif(bool(backends.missing_packages(name)), reason=f"{name} not installed"))
    for name in backends.FRAMEWORKS
]


def special_values(dtype: str) -> np.ndarray:
    """Every bit pattern of a 16-bit dtype; for float32 and float64 the edges (zeros, subnormals,
    normals' edges, largest finite, infinities, NaNs) and 4096 random bit patterns."""
    numpy_type = np.dtype(DTYPES[dtype].numpy_type)
    bits_type = np.dtype(f"uint{8 * numpy_type.itemsize}")
    if numpy_type.itemsize == 2:
        return np.arange(2**16, dtype=bits_type).view(numpy_type)
    info = np.finfo(numpy_type)
    edges = [0.0, -0.0, info.smallest_subnormal, -info.smallest_subnormal, info.smallest_normal]
    edges += [info.smallest_normal - info.smallest_subnormal, info.max, -info.max, np.inf, -np.inf, np.nan, 1.0]
    random_bits = np.random.default_rng(0).integers(0, np.iinfo(bits_type).max, 4096, dtype=bits_type, endpoint=True)
    return np.concatenate([np.array(edges, dtype=numpy_type), random_bits.view(numpy_type)])


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("framework", INSTALLED)
def test_transfer_to_and_from_numpy_keeps_every_bit(framework, dtype):
    backend = backends.load(framework)
    values = special_values(dtype)[None, :]
    labels = np.zeros(1, dtype=np.int64)
    with backend.dtype_scope(dtype), np.errstate(invalid="ignore"):  # casting a bfloat16 NaN warns; it stays NaN
        back, name = backend.to_numpy(backend.to_native(values, labels)[0])
        wide = values.astype(np.float64)  # exact: float64 holds every value of the narrower dtypes
    assert name == dtype and back.dtype == np.float64 and back.shape == values.shape
    nan = np.isnan(wide)
    assert np.isnan(back[nan]).all()  # a NaN stays a NaN (its payload is not promised)
    assert np.array_equal(back[~nan], wide[~nan]) and np.array_equal(np.signbit(back[~nan]), np.signbit(wide[~nan]))
    # and the bits, back in the dtype: subnormals, -0.0 and the largest finite included
    bits = np.dtype(f"uint{8 * values.dtype.itemsize}")
    assert np.array_equal(round_to(back[~nan], dtype).view(bits), values[~nan].view(bits))


def direct_flush(backend, dtype: str) -> bool:
    """smallest_normal * 0.25 by the framework's multiply and exp(ln(smallest_normal / 4)) by its exp,
    both in `dtype`: whether either subnormal result comes back as zero."""
    fmt = DTYPES[dtype]
    labels = np.zeros(1, dtype=np.int64)
    with backend.dtype_scope(dtype):
        normal = backend.to_native(np.array([[fmt.smallest_normal]], dtype=fmt.numpy_type), labels)[0]
        quarter = backend.to_native(np.array([[0.25]], dtype=fmt.numpy_type), labels)[0]
        log_quarter = round_to(np.array([[np.log(fmt.smallest_normal / 4)]]), dtype)
        product, _ = backend.to_numpy(normal * quarter)
        via_exp, _ = backend.to_numpy(backend.exp(backend.to_native(log_quarter, labels)[0]))
    assert 0 <= product[0, 0] < fmt.smallest_normal and 0 <= via_exp[0, 0] < fmt.smallest_normal
    return bool(product[0, 0] == 0 or via_exp[0, 0] == 0)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("framework", INSTALLED)
def test_flushes_subnormals_is_a_bool_that_a_direct_measurement_confirms(framework, dtype):
    backend = backends.load(framework)
    flushes = backend.flushes_subnormals(dtype, "cpu")
    assert isinstance(flushes, bool)
    assert flushes == direct_flush(backend, dtype)


@pytest.mark.parametrize("framework", INSTALLED)
def test_threads_yields_the_count_in_force_and_why_it_differs(framework):
    """Timing rows record what `threads` yields: never a count that was not in force."""
    backend = backends.load(framework)
    for asked in (1, 2):
        with backend.threads(asked) as (in_force, note):
            assert isinstance(in_force, int) and in_force >= 1 and isinstance(note, str)
            assert in_force == asked or note, (asked, in_force)


@pytest.mark.parametrize("framework", [p for p in INSTALLED if p.values[0] in ("numpy", "torch")])
def test_threads_that_can_change_at_run_time_are_set_and_restored(framework):
    import threadpoolctl
    import torch

    backend = backends.load(framework)
    before = (torch.get_num_threads(), threadpoolctl.threadpool_info())
    with backend.threads(1) as (in_force, note):
        assert (in_force, note) == (1, "")
        if framework == "torch":
            assert torch.get_num_threads() == 1
        else:
            assert all(pool["num_threads"] == 1 for pool in threadpoolctl.threadpool_info())
    assert (torch.get_num_threads(), threadpoolctl.threadpool_info()) == before


@pytest.mark.skipif(bool(backends.missing_packages("mlx")), reason="mlx not installed")
def test_mlx_has_no_thread_setting_and_says_it_runs_on_one_thread():
    backend = backends.load("mlx")
    with backend.threads(1) as answer:
        assert answer == (1, "")
    with backend.threads(4) as (in_force, note):
        assert in_force == 1 and note == "MLX has no thread setting: its CPU ops run on one thread, not 4"


TF_THREADS = """
import os, sys
from harness.backends import tensorflow as tb
import tensorflow as tf
print(tb.request_threads(1) == "", tb.threads_in_force())  # before the first op: set
tf.reduce_sum(tf.ones(3)).numpy()  # the runtime starts
try:
    tf.config.threading.set_intra_op_parallelism_threads(2)
except RuntimeError:
    print("RuntimeError")
with tb.threads(2) as (in_force, note):
    print(in_force, note)
"""


@pytest.mark.slow
@pytest.mark.skipif(bool(backends.missing_packages("tensorflow")), reason="tensorflow not installed")
def test_tensorflow_threads_are_set_before_its_runtime_starts_and_reported_after():
    """A fresh process: TensorFlow's pools take the count only before its first op; afterwards
    setting raises RuntimeError and `threads` yields the count the runtime started with."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", TF_THREADS], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "True 1",
        "RuntimeError",
        "1 not applied: TensorFlow's runtime had started with 1 intra-op thread(s)",
    ]


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("framework", INSTALLED)
def test_dtype_scope_runs_each_dtype_as_itself(framework, dtype):
    """Inside the scope an input of `dtype` arrives and computes in `dtype`, float64 included."""
    backend = backends.load(framework)
    one_plus = round_to(np.array([[1.0 + 2.0**-52, 1.0 + 2.0**-10]]), dtype)  # each exact in a dtype of its own
    with backend.dtype_scope(dtype):
        native, _ = backend.to_native(one_plus, np.zeros(1, dtype=np.int64))
        doubled, name = backend.to_numpy(native + native)
    assert name == dtype and np.array_equal(doubled, 2 * one_plus.astype(np.float64))


@pytest.mark.skipif(bool(backends.missing_packages("jax")), reason="jax not installed")
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_jax_x64_is_on_inside_float64_cells_only(dtype):
    import jax

    backend = backends.load("jax")
    assert not jax.config.jax_enable_x64
    with backend.dtype_scope(dtype):
        assert jax.config.jax_enable_x64 == (dtype == "float64")
    assert not jax.config.jax_enable_x64


def _x64_recorder(seen: list):
    """A JAX loss that records, as it is traced, whether x64 is on and the dtype of a Python float."""
    import jax
    import jax.numpy as jnp

    def record(logits, labels, **sizes):
        seen.append((str(logits.dtype), bool(jax.config.jax_enable_x64), str(jnp.asarray(1.0).dtype)))
        return jnp.zeros(logits.shape[0], logits.dtype) + logits[:, 0] * 0

    return record


def _default_mode_only_below_float64(seen: list) -> None:
    assert {dtype for dtype, *_ in seen} == set(DTYPES)
    for dtype, x64, python_float in seen:
        assert (x64, python_float) == ((True, "float64") if dtype == "float64" else (False, "float32")), dtype


@pytest.mark.skipif(bool(backends.missing_packages("jax")), reason="jax not installed")
def test_jax_cells_built_in_and_custom_run_with_x64_only_in_float64(monkeypatch):
    """The accuracy stage and the timing stage run float16, bfloat16 and float32 cells of a built-in
    JAX path and of a custom one in JAX's default mode, as users run them; float64 cells with x64."""
    from harness import api, pipeline
    from harness.api import compose_config, prepare, settings_of
    from harness.paths import jax_paths
    from harness.timing import stage

    builtin_seen, custom_seen = [], []
    monkeypatch.setitem(jax_paths.PATHS, "fused", _x64_recorder(builtin_seen))
    monkeypatch.setattr(api.MEASURED, "x64_probe", _x64_recorder(custom_seen), raising=False)
    grid = ["frameworks=[jax]", "paths=[fused]", "dtypes=[float16,bfloat16,float32,float64]", "families=[spread]"]
    grid += ["scales=[1]", "n_rows=2", "n_classes=4", "progress=false", "workers=1"]
    grid += ["custom_paths=[{framework: jax, name: x64_probe, fn: 'harness.api:MEASURED.x64_probe'}]"]
    sweep, _ = prepare(*settings_of(compose_config(grid)))
    errors = pipeline.sweep_errors(sweep)
    assert set(errors["path"]) == {"fused", "x64_probe"}
    _default_mode_only_below_float64(builtin_seen)
    _default_mode_only_below_float64(custom_seen)

    builtin_seen.clear(), custom_seen.clear()
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))  # the timing's request, undone after
    timings = stage.time_sweep(
        ["jax"],
        ["fused"],
        list(DTYPES),
        [(2, 4)],
        seed=0,
        budget_s=0.0,
        min_blocks=1,
        bandwidth_gb_per_s=1.0,
        custom_callables={("jax", "x64_probe"): api.MEASURED.x64_probe},
    )
    assert (timings["status"] == "ok").all(), timings["message"].tolist()
    _default_mode_only_below_float64(builtin_seen)
    _default_mode_only_below_float64(custom_seen)
