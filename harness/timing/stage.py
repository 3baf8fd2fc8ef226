"""The timing stage: every framework/path/dtype at the timing sizes, on the accuracy stage's bits.

Each framework is timed inside its backend's thread scope (`threads`: NumPy's BLAS pools and
torch's intra-op pool are set for the timing only, so the accuracy stage runs as users run it)
and, for float64 in JAX, its x64 scope. XLA reads its thread flags, and TensorFlow sizes its
pools, once, when the framework starts, so their request is made before its first computation
in the process (`request_threads`) and holds for the whole run. MLX has no thread setting. Each
row's `threads` is the count in force, as its backend reports it; its message says why that is
not the count asked for.
Custom paths are timed like built-in ones: both come from `harness.paths.build`.
"""

from __future__ import annotations

import ast
import importlib.util
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from harness import backends
from harness.dtypes import DTYPES, round_to
from harness.paths import build
from harness.paths.options import CellOptions
from harness.sweep import inputs, metrics
from harness.sweep.journal import OPTION_COLUMNS
from harness.timing import memory
from harness.timing.memory import available_memory_bytes, measure_bandwidth, memory_shortfall
from harness.timing.timer import MIN_BLOCKS, Timing, blocked_autorange

log = logging.getLogger(__name__)

DEFAULT_THREADS = 1  # as torch.utils.benchmark.Timer; the numpy paths are single-threaded anyway
TIMING_FAMILY, TIMING_SCALE = "spread", 1.0  # a point of the accuracy grid where every path is finite
TIMING_SWEEP_SIZES = ((32, 1000), (256, 1000), (256, 32000), (4096, 32000), (64, 131072))
PEAK_COPIES = 6  # arrays of one input's size alive at once: rounded, native copy, path temporaries
ROUNDING_CHUNK_ELEMENTS = 2**22

COLUMNS = (
    "framework",
    "path",
    "dtype",
    "n_rows",
    "n_classes",
    *OPTION_COLUMNS,  # the loss options of what was timed: the bare per-row loss (option cells are not timed)
    "device",
    "threads",
    "n_samples",
    "median_s",
    "iqr_s",
    "min_s",
    "compile_s",
    "peak_bytes",
    "elements_per_s",
    "bytes_min",
    "gb_per_s",
    "bandwidth_gb_per_s",
    "bandwidth_fraction",
    "status",
    "message",
)


def check_threads(threads) -> int:
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    return threads


def sets_threads_at_start(framework: str) -> bool:
    """Whether the backend has `request_threads` (thread settings fixed when the framework starts),
    read from its source: asking does not import the framework."""
    source = Path(importlib.util.find_spec(backends.FRAMEWORKS[framework].module).origin).read_text()
    return any(isinstance(node, ast.FunctionDef) and node.name == "request_threads" for node in ast.parse(source).body)


def request_threads(frameworks: Sequence[str], threads: int) -> dict[str, str]:
    """Ask each framework whose thread settings are fixed at start-up (XLA's flags, TensorFlow's
    pools) for `threads` threads, before its first computation; returns what each answered."""
    check_threads(threads)
    return {f: backends.load(f).request_threads(threads) for f in frameworks if sets_threads_at_start(f)}


def quiet_idle_threads(timing_threads: int | None) -> bool:
    """Let idle OpenMP threads (PyTorch's intra-op pool) sleep rather than spin, unless the user set
    OMP_WAIT_POLICY or the timing stage times several threads (where waking them is part of a
    call). Spinning threads hold the core the other frameworks, and a second worker, need: the
    main command's accuracy stage ran 12% faster in one process without them. Results are
    unchanged (it governs only waiting). Takes effect only before PyTorch is first imported;
    returns whether it was set."""
    if "OMP_WAIT_POLICY" in os.environ or (timing_threads or 1) > 1:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


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


# --- the sweep -----------------------------------------------------------------------------------


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


def call_peak_bytes(backend, fn, native, device: str) -> float:
    """Memory one (already warm) call needs beyond its inputs: the device allocator's peak on an
    accelerator, the resident set's high-water mark on the CPU; NaN where neither can be read."""
    peak = backend.device_peak_bytes(lambda: backend.sync(fn(*native))) if device != "cpu" else None
    if peak is None and device == "cpu":
        peak = memory.peak_bytes(lambda: backend.sync(fn(*native)), backend.release_memory)
    return float("nan") if peak is None else float(peak)


def time_framework(
    framework: str,
    implementations: dict[str, build.Implementation],
    rounded: np.ndarray,
    labels: np.ndarray,
    key: dict,
    timer: dict,
    bandwidth_gb_per_s: float,
    device: str = "cpu",
    note: str = "",
):
    """Rows for every path of one framework on one rounded input, on `device`; failures are rows.

    `rounded` is the logits (with `labels`), or a loss's named arrays, all read by every call (labels
    None). The inputs are moved to the device once; every call is waited on (the backend's `sync`),
    so a CUDA or JAX call is timed until its result exists."""
    named = isinstance(rounded, dict)
    n_elements = next(iter(rounded.values())).size if named else rounded.size
    read = sum(a.nbytes for a in rounded.values()) if named else n_elements * rounded.dtype.itemsize
    backend = backends.load(framework)
    on = backends.row_device(framework, device)
    key = key | {"framework": framework, "bytes_min": read, "device": on}
    with backend.dtype_scope(key["dtype"]):
        try:
            if named:
                native = [backend.transfer(array, on) for array in rounded.values()]
            else:
                native = backend.to_native(rounded, labels, on)
        except Exception as exc:
            for path in implementations:
                yield key | {"path": path} | metrics.failure(exc)
            return
        for path, impl in implementations.items():
            try:
                if impl.unsupported:
                    raise NotImplementedError(impl.unsupported)
                backend.clear_compile_cache()
                timing = blocked_autorange(impl.loss, native, sync=backend.sync, compiles=backend.COMPILES, **timer)
                peak = call_peak_bytes(backend, impl.loss, native, on)
            except Exception as exc:  # a path that cannot run is a row, never a crash
                yield key | {"path": path} | metrics.failure(exc)
                continue
            row = timing_row(timing, n_elements, key["bytes_min"], bandwidth_gb_per_s) | {"peak_bytes": peak}
            yield key | {"path": path} | row | {"message": note}


def timings_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows -> the timings table, columns in documented order; rows not timed have n_samples 0."""
    frame = pd.DataFrame(rows).reindex(columns=list(COLUMNS))
    for name, default in CellOptions().columns().items():  # rows that name no option timed the bare loss
        if default is not None:
            frame[name] = frame[name].astype(object).where(frame[name].notna(), default)
            frame[name] = frame[name].astype(type(default) if isinstance(default, float) else str)
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
    device: str = "cpu",
    custom_callables: dict | None = None,
    chunk_size: int | None = None,
    block_size: int | None = None,
) -> pd.DataFrame:
    """The timings table: one row per (framework, path, dtype, n_rows, n_classes).

    Measures the bandwidth once (unless given), then times each path, built-in and custom, on the
    accuracy stage's inputs, each framework inside its thread scope. A size or dtype whose input
    would not fit in the available memory gets rows with status error and a 'not run' message.
    """
    request_threads(frameworks, threads)
    if bandwidth_gb_per_s is None:
        bandwidth_gb_per_s = measure_bandwidth(threads)
    log.info("timing with %d thread(s), memory read bandwidth %.1f GB/s", threads, bandwidth_gb_per_s)
    timer = {"budget_s": budget_s, "rel_iqr_target": rel_iqr_target, "min_blocks": min_blocks}
    built = build.implementations(frameworks, paths, custom_callables, chunk_size, block_size)
    by_framework = {f: {p: impl for (g, p), impl in built.items() if g == f} for f in frameworks}
    rows = []
    per_input = len(built)
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
                        for f, p in built
                    ]
                    bar.update(per_input)
                    continue
                rounded = rounded_logits(logits, dtype)
                for framework, implementations in by_framework.items():
                    with backends.load(framework).threads(threads) as (in_force, note):
                        for row in time_framework(
                            framework,
                            implementations,
                            rounded,
                            labels,
                            key | {"threads": in_force},
                            timer,
                            bandwidth_gb_per_s,
                            device,
                            note,
                        ):
                            rows.append(row)
                            bar.update(1)
                del rounded
            del logits
    frame = timings_frame(rows)
    frame["bandwidth_gb_per_s"] = bandwidth_gb_per_s
    return frame
