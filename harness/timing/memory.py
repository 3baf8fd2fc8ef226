"""The machine's memory: read bandwidth (the yardstick of a timing) and what is free (what fits)."""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

BANDWIDTH_BUFFER_BYTES = 256 * 2**20


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
