"""The head's gradient calls of a framework whose ops run on one thread (MLX), several at a time.

MLX's CPU backend runs every op on one thread (harness.backends.mlx.threads), so while one of its
gradient calls runs, the other cores idle, and in `lm_head` those calls are most of MLX's time.
The calls are independent and single-threaded, so in separate processes
they give the same bits (tests/test_head_gradients.py) in a fraction of the wall time. The head
stage measures such a framework's losses and their timings first, alone (a timing wants a quiet
machine), then hands its gradient calls to a pool of processes, one per core (at most
MAX_PROCESSES, each holds an input and its gradients) and waits for them all before the next
framework starts.

Processes, not threads: MLX 0.32 gives each thread a stream of its own, and a process in which two
threads had evaluated MLX graphs aborted at exit (std::terminate) in 3 of 30 runs.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from dataclasses import dataclass

import numpy as np

from harness import backends
from harness.paths import head as head_paths
from harness.processes import cores

MAX_PROCESSES = 4


@dataclass(frozen=True)
class GradientCall:
    """One cell's gradient call: what `build` takes, and its inputs as NumPy arrays, already rounded
    to the dtype (h, W, b or None, the labels with the ignore index at ignored rows, the upstream
    gradient u)."""

    framework: str
    path: str
    reduction: str
    mode: str
    chunk_size: int
    ignore: bool
    dtype: str
    device: str
    inputs: tuple


def native_arrays(backend, arrays, device: str) -> list:
    """Each NumPy array (h, W, b; None stays None) as the framework's, same bits, on the device."""
    return [None if a is None else backend.transfer(a, device) for a in arrays]


def gradient_values(grad_fn, native, u, backend) -> list:
    """(values, dtype name) of each gradient with respect to h, W and b (None where there is no b),
    as backend.to_numpy hands them back."""
    return [None if g is None else backend.to_numpy(g) for g in grad_fn(*native, u)]


def call(job: GradientCall) -> list:
    """gradient_values of one call, built and run in this process (a pool's worker)."""
    backend = backends.load(job.framework)
    build = head_paths.implementations_module(job.framework).build
    with_ignore = {"ignore": True} if job.ignore else {}
    _, grad_fn = build(job.path, job.reduction, job.mode, job.chunk_size, **with_ignore)
    h, W, b, labels, u = job.inputs
    with backend.dtype_scope(job.dtype):
        native = native_arrays(backend, (h, W, b), job.device)
        y = backend.transfer(np.asarray(labels, dtype=np.int64), job.device)
        u_native = backend.transfer(u, job.device)
        return gradient_values(grad_fn, (*native, y), u_native, backend)


def runs_on_one_thread(backend) -> bool:
    """Whether the framework's ops run on one thread whatever is asked, in this process and in a
    fresh one (its backend's OPS_ON_ONE_THREAD: a JAX or TensorFlow started on one thread would start
    on every core in a worker, and could sum in another order), on a machine with a core to lend."""
    return cores() >= 2 and getattr(backend, "OPS_ON_ONE_THREAD", False)


class Pool:
    """Processes started on first use (spawned: a fresh interpreter imports only this harness and
    the framework), closed with the stage."""

    def __init__(self):
        self._executor = None

    def run(self, jobs: list[GradientCall]) -> list[concurrent.futures.Future]:
        """Submit every job at once (the caller has finished its timings); one future per job."""
        if self._executor is None:
            self._executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=min(cores(), MAX_PROCESSES), mp_context=multiprocessing.get_context("spawn")
            )
        return [self._executor.submit(call, job) for job in jobs]

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
