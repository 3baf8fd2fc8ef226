"""The machine's memory: read bandwidth (the yardstick of a timing), what is free (what fits), and the
peak memory one call needs (peak_bytes)."""

from __future__ import annotations

import ctypes
import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

BANDWIDTH_BUFFER_BYTES = 256 * 2**20


def measure_bandwidth(threads: int = 1, n_bytes: int = BANDWIDTH_BUFFER_BYTES, repeats: int = 5) -> float:
    """Read bandwidth in GB/s (1e9 bytes/s): NumPy sums of a float64 buffer, one slice per thread.

    The best of `repeats` reads is kept: noise (other processes, interrupts) only ever slows a
    read, so the fastest is the closest estimate of what the memory can deliver, which is the
    yardstick a fraction needs. 256 MiB is past the last-level caches of common CPUs, so the read
    streams from DRAM; a larger buffer only adds page-fault time. NumPy's reductions release the
    GIL, so `threads` threads read in parallel, matching the thread count the frameworks were given.
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


# --- what one call needs --------------------------------------------------------------------------


def _status_bytes(field: str) -> int | None:
    """A VmRSS/VmHWM-style line of /proc/self/status, in bytes (Linux), else None."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the process's resident-set high-water mark (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def _release_free_memory() -> None:
    """Hand freed heap memory back to the OS (glibc's malloc_trim), so that a call which reuses it
    shows up in the resident set instead of hiding in pages already counted. (No gc.collect: with
    torch and JAX loaded it costs 0.1-0.2 s a cell, and the arrays of a finished call are freed by
    reference counting already.)"""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_rss_supported() -> bool:
    return _status_bytes("VmHWM:") is not None and _reset_peak_rss()


def peak_bytes(call, release=None) -> int | None:
    """Bytes of resident memory one call (`call()`, which must wait for its result) needs beyond what
    was resident before it, its output included: the high-water mark of the resident set during
    the call minus the resident set before. Measured, not estimated; None where the OS cannot say
    (not Linux). Run it after a warm-up call, so that one-off allocations (compilation) are not
    counted. `release`: the framework's own hand-back of the buffers it keeps for reuse (the
    backend's `release_memory`; MLX's cache held the warm-up call's buffers, so its calls read
    as needing nothing)."""
    if not peak_rss_supported():
        return None
    if release is not None:
        release()
    _release_free_memory()
    before = _status_bytes("VmRSS:")
    _reset_peak_rss()
    result = call()
    peak = _status_bytes("VmHWM:")
    del result
    return max(0, peak - before)
