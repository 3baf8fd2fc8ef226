"""Timing: how long each framework/path/dtype takes, measured soundly, against the memory bandwidth.

The method follows `torch.utils.benchmark.Timer.blocked_autorange`: the first call is never a
sample (for JAX it compiles, and its wall time is `compile_s`); short calls are batched until a
block lasts at least `MIN_BLOCK_S`, and those calibration blocks are warm-up, never samples; every
call's result is waited on (`sync`) inside the block, so asynchronous dispatch cannot pile calls up
between clock reads; blocks repeat until `min_blocks` samples exist and either IQR/median is at
most `rel_iqr_target` or `budget_s` is spent (`min_blocks` wins, so a call that outlasts the
budget still gets its samples); the garbage collector is off inside a block, as in `timeit`.
A sample is a block's time divided by its calls; median, IQR and minimum are over samples.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

MIN_BLOCK_S = 0.01  # a block lasts at least this long: clock overhead under 1e-5 of it
MIN_BLOCKS = 5  # samples per cell, whatever the budget
MIN_SAMPLES_FOR_IQR = 3  # the relative-IQR target is judged on no fewer samples
LONG_CALL_S = 1.0  # a warm-up this long: one call per block without calibrating


@dataclass(frozen=True)
class Timing:
    """Per-call times in seconds of one callable; `compile_s` is the first call, kept apart."""

    n_samples: int
    median_s: float
    iqr_s: float
    min_s: float
    compile_s: float
    calls_per_block: int


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
    warm_call_s: float | None = None,
    warm_call_is_sample: bool = False,
) -> Timing:
    """Time `fn(*args)` per call (see the module docstring for the method).

    `warm_call_s`: the caller has already made the first call and a warm-up call after it, which
    took this long (the language-model head: its accuracy call compiles, its memory call, which
    hands freed memory back first, warms up). Then no first call is made here (compile_s is 0: the
    caller has it), and a warm-up of at least LONG_CALL_S fixes one call per block without a
    calibration block (no call that long runs under MIN_BLOCK_S). With `warm_call_is_sample`, such
    a warm-up is also the first sample: the caller says it ran what the samples run, so a call of
    many seconds runs twice in all instead of three times. Never for a compiled function:
    torch.compile compiles again for the thread count the timing sets."""
    if isinstance(min_blocks, bool) or not isinstance(min_blocks, int) or min_blocks < 1:
        raise ValueError(f"min_blocks must be an integer >= 1, got {min_blocks!r}")
    first_call_s = 0.0
    if warm_call_s is None:
        start = time.perf_counter()
        sync(fn(*args))
        first_call_s = time.perf_counter() - start
    samples: list[float] = []
    spent = 0.0
    if warm_call_s is not None and warm_call_s >= max(LONG_CALL_S, min_block_s):
        number = 1
        if warm_call_is_sample:
            samples.append(warm_call_s)
            spent = warm_call_s
    else:
        number = calls_per_block(fn, args, sync, min_block_s)
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
