"""Timing: how long each framework/path/dtype takes, measured soundly, against the memory bandwidth.

The method follows `torch.utils.benchmark.Timer.blocked_autorange`:

- The first call is never a sample. For a JIT framework (JAX) it compiles and runs once; its wall
  time, waited on, is `compile_s` (compilation plus one run; JAX's caches are cleared first so it
  is a real compilation). For the others it is an untimed warm-up and `compile_s` is 0.
- Short calls are batched: the number of calls per block grows until one block lasts at least
  `MIN_BLOCK_S` (10 ms), so the two clock reads per block (~0.1 us) cost under 1e-5 of it. Those
  calibration blocks are warm-up, never samples (as in torch.utils.benchmark): at 4096 x 32000 the
  call right after the first was seen to run up to ~10% slow.
- Every call's result is waited on (`sync`) inside the block, so a sample is the time until the
  result exists and asynchronously dispatched calls (JAX) cannot pile up between clock reads.
- Blocks repeat until at least `min_blocks` samples exist and either the relative IQR (IQR/median,
  judged on 3 samples or more) is at most `rel_iqr_target` or `budget_s` of measured time is
  spent. `min_blocks` wins over the budget, so a cell whose one call outlasts the budget still
  gets `min_blocks` samples (a 4096 x 32000 NumPy float16 cell: 7 calls of ~2-10 s each).
- The garbage collector is off inside a block (as in `timeit`), and a sample is a block's time
  divided by its calls: the per-call median, IQR and minimum are over samples.

Timing runs in one process on cores it does not share with other timed jobs; the thread count is
set once for every framework (`set_threads`) and recorded in every row.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm import tqdm

from harness import paths as registry
from harness.dtypes import DTYPES, round_to
from harness.sweep import inputs, metrics

log = logging.getLogger(__name__)

MIN_BLOCK_S = 0.01  # a block lasts at least this long: clock overhead under 1e-5 of it
MIN_BLOCKS = 5  # samples per cell, whatever the budget
MIN_SAMPLES_FOR_IQR = 3  # the relative-IQR target is judged on no fewer samples
DEFAULT_THREADS = 1  # as torch.utils.benchmark.Timer; the numpy paths are single-threaded anyway
BANDWIDTH_BUFFER_BYTES = 256 * 2**20
TIMING_FAMILY, TIMING_SCALE = "spread", 1.0  # a point of the accuracy grid where every path is finite
TIMING_SWEEP_SIZES = ((32, 1000), (256, 1000), (256, 32000), (4096, 32000), (64, 131072))
PEAK_COPIES = 6  # arrays of one input's size alive at once: rounded, native copy, path temporaries
ROUNDING_CHUNK_ELEMENTS = 2**22
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_XLA_THREAD_FLAGS = re.compile(r"--xla_cpu_multi_thread_eigen=\S+|intra_op_parallelism_threads=\S+")

COLUMNS = (
    "framework",
    "path",
    "dtype",
    "n_rows",
    "n_classes",
    "device",
    "threads",
    "n_samples",
    "median_s",
    "iqr_s",
    "min_s",
    "compile_s",
    "elements_per_s",
    "bytes_min",
    "gb_per_s",
    "bandwidth_gb_per_s",
    "bandwidth_fraction",
    "status",
    "message",
)


@dataclass(frozen=True)
class Timing:
    """Per-call times in seconds of one callable; `compile_s` is the first call, kept apart."""

    n_samples: int
    median_s: float
    iqr_s: float
    min_s: float
    compile_s: float
    calls_per_block: int


def xla_flags(threads: int, existing: str = "") -> str:
    """XLA_FLAGS with the CPU thread flags for `threads`, other flags kept."""
    kept = " ".join(_XLA_THREAD_FLAGS.sub("", existing).split())
    multi = "true" if threads > 1 else "false"
    return f"{kept} --xla_cpu_multi_thread_eigen={multi} intra_op_parallelism_threads={threads}".strip()


def jax_backend_started() -> bool:
    """Whether JAX has made its backend, after which XLA_FLAGS is no longer read."""
    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge

    return xla_bridge.backends_are_initialized()


def set_threads(threads: int, frameworks: Iterable[str] = ("numpy", "torch", "jax")) -> dict[str, str]:
    """Give every framework `threads` threads; return each setting made, by name.

    - NumPy: threadpoolctl limits the BLAS/OpenMP pools already loaded; the env vars cover those
      loaded later. (NumPy's elementwise ufuncs and reductions are single-threaded regardless.)
    - PyTorch: torch.set_num_threads (intra-op pool), effective at once.
    - JAX: XLA has no runtime setting. XLA_FLAGS is read once, when JAX makes its CPU backend (its
      first computation, not its import), so it only takes effect if set before that; otherwise
      the returned settings say so and the rows of JAX carry the note. On jax 0.10.2 with two
      cores the jitted losses used one core (CPU time / wall time ~1.0) with or without the flags.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    frameworks = tuple(frameworks)
    settings = {}
    for name in THREAD_ENV_VARS:
        os.environ[name] = str(threads)
        settings[name] = str(threads)
    import threadpoolctl

    threadpoolctl.threadpool_limits(limits=threads)
    pools = sorted({info["internal_api"] for info in threadpoolctl.threadpool_info()})
    settings["threadpoolctl"] = f"{threads} ({', '.join(pools) or 'no pool loaded'})"
    if "torch" in frameworks:
        try:
            import torch
        except ImportError as exc:  # its rows will say so; threads are still set for the others
            settings["torch.set_num_threads"] = f"not set: {exc}"
        else:
            torch.set_num_threads(threads)
            settings["torch.set_num_threads"] = str(torch.get_num_threads())
    if "jax" in frameworks:
        wanted = xla_flags(threads, os.environ.get("XLA_FLAGS", ""))
        in_force = os.environ.get("XLA_FLAGS", "") == wanted  # set before the backend started
        if not jax_backend_started():
            os.environ["XLA_FLAGS"] = wanted
            in_force = True
        settings["XLA_FLAGS"] = (
            wanted
            if in_force
            else f"not applied: JAX's backend had started (XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r})"
        )
    return settings


# --- the machine's memory bandwidth --------------------------------------------------------------


def measure_bandwidth(threads: int = 1, n_bytes: int = BANDWIDTH_BUFFER_BYTES, repeats: int = 5) -> float:
    """Read bandwidth in GB/s (1e9 bytes/s): NumPy sums of a float64 buffer, one slice per thread.

    The best of `repeats` reads is kept: noise (other processes, interrupts) only ever slows a
    read, so the fastest is the closest estimate of what the memory can deliver, which is the
    yardstick a fraction needs. The buffer is 256 MiB: on the 2-core development VM the read rate
    is flat from 128 MiB to 1 GiB (~15 GB/s per thread), so it already streams from DRAM although
    sysfs reports a 480 MiB L3; larger buffers only add page-fault time (~0.5 s per 256 MiB
    there). NumPy's reductions release the GIL, so `threads` threads read in parallel, matching
    the thread count the frameworks were given. Takes about 0.7 s there.
    """
    buffer = np.ones(max(n_bytes // 8, threads * 1024), dtype=np.float64)
    slices = np.array_split(buffer, threads)
    best = math.inf
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in range(repeats):
            start = time.perf_counter()
            total = sum(pool.map(np.sum, slices))
            best = min(best, time.perf_counter() - start)
    if total != buffer.size:  # the sum was really computed
        raise RuntimeError(f"bandwidth buffer summed to {total}, expected {buffer.size}")
    return buffer.nbytes / best / 1e9


# --- the timer -----------------------------------------------------------------------------------


def identity(result):
    return result


def time_block(fn: Callable, args: tuple, sync: Callable, number: int) -> float:
    """Wall time of `number` waited-on calls, with the garbage collector off."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(number):
            sync(fn(*args))
        return time.perf_counter() - start
    finally:
        if gc_was_enabled:
            gc.enable()


def calls_per_block(fn: Callable, args: tuple, sync: Callable, min_block_s: float = MIN_BLOCK_S) -> int:
    """The number of calls that makes a block last >= min_block_s (the blocks run here are warm-up).

    Grows by the factor the last block fell short (x2 to x10 per step), so it lands in a few steps.
    """
    number = 1
    while True:
        elapsed = time_block(fn, args, sync, number)
        if elapsed >= min_block_s:
            return number
        shortfall = 1.2 * min_block_s / max(elapsed, 1e-9)
        number *= min(10, max(2, math.ceil(shortfall)))


def summarize(samples: Sequence[float]) -> tuple[float, float, float]:
    """Median, IQR and minimum of per-call samples (linear quartiles, as torch.utils.benchmark)."""
    q25, median, q75 = np.percentile(samples, [25, 50, 75])
    return float(median), float(q75 - q25), float(min(samples))


def blocked_autorange(
    fn: Callable,
    args: tuple = (),
    *,
    sync: Callable = identity,
    compiles: bool = False,
    budget_s: float = 1.0,
    rel_iqr_target: float = 0.05,
    min_blocks: int = MIN_BLOCKS,
    min_block_s: float = MIN_BLOCK_S,
) -> Timing:
    """Time `fn(*args)` per call (see the module docstring for the method)."""
    if isinstance(min_blocks, bool) or not isinstance(min_blocks, int) or min_blocks < 1:
        raise ValueError(f"min_blocks must be an integer >= 1, got {min_blocks!r}")
    start = time.perf_counter()
    sync(fn(*args))
    first_call_s = time.perf_counter() - start
    number = calls_per_block(fn, args, sync, min_block_s)
    samples: list[float] = []
    spent = 0.0
    while not enough_samples(samples, spent, budget_s, rel_iqr_target, min_blocks):
        elapsed = time_block(fn, args, sync, number)
        samples.append(elapsed / number)
        spent += elapsed
    median, iqr, minimum = summarize(samples)
    return Timing(
        n_samples=len(samples),
        median_s=median,
        iqr_s=iqr,
        min_s=minimum,
        compile_s=first_call_s if compiles else 0.0,
        calls_per_block=number,
    )


def enough_samples(
    samples: Sequence[float], spent_s: float, budget_s: float, rel_iqr_target: float, min_blocks: int
) -> bool:
    """At least min_blocks samples, and the budget spent or IQR/median <= target (over >= 3 samples:
    the quartiles of fewer say nothing)."""
    if len(samples) < min_blocks:
        return False
    if spent_s >= budget_s:
        return True
    if len(samples) < MIN_SAMPLES_FOR_IQR:
        return False
    median, iqr, _ = summarize(samples)
    return median > 0 and iqr / median <= rel_iqr_target


# --- frameworks ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Runtime:
    """How to time one framework: wait on a result, whether it compiles, how to forget compilations."""

    sync: Callable
    compiles: bool
    clear_compile_cache: Callable[[], None]


def _nothing() -> None:
    return None


def _torch_sync(result):
    if result.device.type == "cuda":  # CPU results are ready when the call returns
        import torch

        torch.cuda.synchronize(result.device)
    return result


def runtime_of(framework: str) -> Runtime:
    """JAX: block_until_ready, jitted; its caches are cleared so compile_s is a real compilation
    even when the accuracy stage already compiled the same shapes. Others: no compilation."""
    if framework == "jax":
        import jax

        return Runtime(sync=jax.block_until_ready, compiles=True, clear_compile_cache=jax.clear_caches)
    if framework == "torch":
        return Runtime(sync=_torch_sync, compiles=False, clear_compile_cache=_nothing)
    return Runtime(sync=identity, compiles=False, clear_compile_cache=_nothing)


def device_of(array) -> str:
    """'cpu', 'cuda', ...: torch's device.type, JAX's device.platform, NumPy 2's array.device."""
    device = getattr(array, "device", "cpu")
    device = device() if callable(device) else device
    return str(getattr(device, "type", None) or getattr(device, "platform", None) or device)


# --- inputs --------------------------------------------------------------------------------------


def timing_inputs(n_rows: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The accuracy stage's float64 logits (family spread, scale 1) and random labels."""
    base = inputs.draw(n_rows, n_classes, seed)
    logits = inputs.make_logits(TIMING_FAMILY, TIMING_SCALE, base)
    return logits, inputs.choose_labels(logits, base, "random")


def rounded_logits(logits: np.ndarray, dtype: str, chunk_elements: int = ROUNDING_CHUNK_ELEMENTS) -> np.ndarray:
    """`round_to(logits, dtype)` a block of rows at a time: the same bits (rounding is elementwise)
    without round_to's several full-size float64 temporaries on a 1 GiB input."""
    out = np.empty(logits.shape, dtype=DTYPES[dtype].numpy_type)
    rows = max(1, chunk_elements // max(1, logits.shape[1]))
    for start in range(0, logits.shape[0], rows):
        out[start : start + rows] = round_to(logits[start : start + rows], dtype)
    return out


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else None (no check)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def memory_shortfall(needed_bytes: int, available_bytes: int | None) -> str:
    """'' if it fits, else the message of the rows that are not run (never skipped silently)."""
    if available_bytes is None or needed_bytes <= available_bytes:
        return ""
    return f"not run: needs about {needed_bytes / 1e9:.1f} GB of memory, {available_bytes / 1e9:.1f} GB available"


# --- the sweep -----------------------------------------------------------------------------------


def failure(exc: BaseException) -> dict:
    """status unsupported or error, and the message (the runner's rule)."""
    from harness.sweep.runner import failure_row

    return failure_row(exc)


def timing_row(timing: Timing, n_elements: int, bytes_min: int, bandwidth_gb_per_s: float) -> dict:
    gb_per_s = bytes_min / timing.median_s / 1e9
    return {
        "n_samples": timing.n_samples,
        "median_s": timing.median_s,
        "iqr_s": timing.iqr_s,
        "min_s": timing.min_s,
        "compile_s": timing.compile_s,
        "elements_per_s": n_elements / timing.median_s,
        "gb_per_s": gb_per_s,
        "bandwidth_fraction": gb_per_s / bandwidth_gb_per_s,
        "status": metrics.OK,
        "message": "",
    }


def time_framework(
    framework: str,
    path_names: Sequence[str],
    rounded: np.ndarray,
    labels: np.ndarray,
    key: dict,
    timer: dict,
    bandwidth_gb_per_s: float,
    note: str = "",
):
    """Rows for every path of one framework on one rounded input; failures are rows."""
    n_elements = rounded.size
    key = key | {"framework": framework, "bytes_min": n_elements * rounded.dtype.itemsize}
    try:
        module = registry.load(framework)
        runtime = runtime_of(framework)
        native = module.to_native(rounded, labels)
    except Exception as exc:
        for path in path_names:
            yield key | {"path": path, "device": ""} | failure(exc)
        return
    key = key | {"device": device_of(native[0])}
    for path in path_names:
        try:
            runtime.clear_compile_cache()
            fn = module.compile(module.PATHS[path])
            timing = blocked_autorange(fn, native, sync=runtime.sync, compiles=runtime.compiles, **timer)
        except Exception as exc:  # a path that cannot run is a row, never a crash
            yield key | {"path": path} | failure(exc)
            continue
        row = timing_row(timing, n_elements, key["bytes_min"], bandwidth_gb_per_s)
        yield key | {"path": path} | row | {"message": note}


def timings_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows -> the timings table, columns in documented order; rows not timed have n_samples 0."""
    frame = pd.DataFrame(rows).reindex(columns=list(COLUMNS))
    for column in ("n_rows", "n_classes", "threads", "bytes_min"):
        frame[column] = frame[column].astype("int64")
    frame["n_samples"] = frame["n_samples"].fillna(0).astype("int64")
    frame["message"] = frame["message"].fillna("").astype(str)
    for column in ("framework", "path", "dtype", "device", "status"):
        frame[column] = frame[column].fillna("").astype(str)
    for column in COLUMNS[COLUMNS.index("median_s") : COLUMNS.index("bytes_min")] + ("gb_per_s", "bandwidth_fraction"):
        frame[column] = frame[column].astype("float64")
    return frame


def time_sweep(
    frameworks: Sequence[str],
    paths: Sequence[str],
    dtypes: Sequence[str],
    sizes: Sequence[tuple[int, int]],
    seed: int,
    threads: int = DEFAULT_THREADS,
    budget_s: float = 1.0,
    rel_iqr_target: float = 0.05,
    progress: bool = False,
    *,
    min_blocks: int = MIN_BLOCKS,
    bandwidth_gb_per_s: float | None = None,
) -> pd.DataFrame:
    """The timings table: one row per (framework, path, dtype, n_rows, n_classes).

    Sets the threads, measures the bandwidth once (unless given), then times each path on the
    accuracy stage's inputs. A size or dtype whose input would not fit in the available memory
    gets rows with status error and a 'not run' message.
    """
    settings = set_threads(threads, frameworks)
    jax_note = settings["XLA_FLAGS"] if settings.get("XLA_FLAGS", "").startswith("not applied") else ""
    if bandwidth_gb_per_s is None:
        bandwidth_gb_per_s = measure_bandwidth(threads)
    log.info("timing with %d thread(s), memory read bandwidth %.1f GB/s (%s)", threads, bandwidth_gb_per_s, settings)
    timer = {"budget_s": budget_s, "rel_iqr_target": rel_iqr_target, "min_blocks": min_blocks}
    rows = []
    per_input = len(frameworks) * len(paths)
    with tqdm(total=per_input * len(dtypes) * len(sizes), disable=not progress, desc="timing", unit="cell") as bar:
        for n_rows, n_classes in sizes:
            n_elements = n_rows * n_classes
            size_shortfall = memory_shortfall(2 * 8 * n_elements, available_memory_bytes())  # draw + logits
            logits, labels = (None, None) if size_shortfall else timing_inputs(n_rows, n_classes, seed)
            for dtype in dtypes:
                bar.set_postfix_str(f"{n_rows}x{n_classes} {dtype}")
                key = {"dtype": dtype, "n_rows": n_rows, "n_classes": n_classes, "threads": threads}
                itemsize = np.dtype(DTYPES[dtype].numpy_type).itemsize
                shortfall = size_shortfall or memory_shortfall(
                    PEAK_COPIES * itemsize * n_elements, available_memory_bytes()
                )
                if shortfall:
                    rows += [
                        key
                        | {"framework": f, "path": p, "device": "", "bytes_min": n_elements * itemsize}
                        | {"status": metrics.ERROR, "message": shortfall}
                        for f in frameworks
                        for p in paths
                    ]
                    bar.update(per_input)
                    continue
                rounded = rounded_logits(logits, dtype)
                for framework in frameworks:
                    note = jax_note if framework == "jax" else ""
                    for row in time_framework(framework, paths, rounded, labels, key, timer, bandwidth_gb_per_s, note):
                        rows.append(row)
                        bar.update(1)
                del rounded
            del logits
    frame = timings_frame(rows)
    frame["bandwidth_gb_per_s"] = bandwidth_gb_per_s
    return frame
