"""The accuracy grid spread over several processes (`workers`), one journal in the parent.

The grid's units of work are its inputs rounded to each dtype (runner.measure_units), each
independent of the others. This process and its workers take units in increasing order as they
come free (`Units`), so a worker that starts late or a costly unit leaves nobody idle. A worker is
`python -m harness.sweep.workers`: it reads the sweep and the cells already done as a pickle on
stdin, then one unit number per line, and writes one JSON line per finished cell, the journal's
own encoding (floats round-trip exactly), on the stdout it was started with; the parent appends
each line to the journal as it arrives, so a killed run resumes as before. Each process rounds,
references and measures its units with the same code, so the tables are the ones one process
writes, bit for bit (tests/test_workers.py).

`workers: auto` uses two processes where they pay: at least two cores, at least AUTO_MIN_LOGITS
logits measured over the grid (a worker costs a second start of Python and the frameworks, a few
seconds) and no input over AUTO_MAX_ELEMENTS logits (each process holds its own inputs in memory).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import queue
import subprocess
import sys
import tempfile
import threading
import time

from tqdm import tqdm

from harness.processes import cores, exit_now, python_environment
from harness.sweep import runner
from harness.sweep.config import SweepConfig

AUTO_MIN_LOGITS = 10**8  # the main sweep measures 8.2e8 (3200 cells of 256 x 1000), training_losses 9.8e8
AUTO_MAX_ELEMENTS = 2**24  # 256 x 32000 logits (8.2e6) still split; token_sweep's 1e7 x 16 does not
log = logging.getLogger(__name__)


def largest_input(sweep: SweepConfig) -> int:
    """Logits in the sweep's largest input (0 where a file or inline data fixes the shape)."""
    return max((size[0] * size[1] for f in sweep.families for size in sweep.sizes(f) if size), default=0)


def second_process_pays(sweep: SweepConfig) -> bool:
    """Whether the grid measures enough logits (AUTO_MIN_LOGITS) that work taken to a second process
    outweighs that process's start."""
    return sweep.n_cells * largest_input(sweep) >= AUTO_MIN_LOGITS


def worker_count(sweep: SweepConfig, available: int | None = None) -> int:
    """How many processes measure the grid: the `workers` setting, or for auto, 2 where they pay."""
    if sweep.kind != "grid":
        return 1  # stages of their own, in one process
    if sweep.workers != "auto":
        return int(sweep.workers)
    available = cores() if available is None else available
    largest = largest_input(sweep)
    if available < 2 or not second_process_pays(sweep) or largest > AUTO_MAX_ELEMENTS:
        return 1
    if runner.n_units(sweep) < 2:
        return 1
    return 2


class Units:
    """Hands out the grid's unit numbers (runner.measure_units) in increasing order, one at a time,
    to whichever process asks first: a worker that started late or a slow unit never leaves the
    others idle at the end."""

    def __init__(self, total: int):
        self.total, self.next, self.lock = total, 0, threading.Lock()

    def take(self) -> int | None:
        with self.lock:
            if self.next >= self.total:
                return None
            self.next += 1
            return self.next - 1

    def __iter__(self):
        return iter(self.take, None)


class Worker:
    """One child process measuring the units it is handed; its journal records queue up in
    `records` until the parent takes them (`take`). It starts at once (importing the frameworks)
    and waits for its first unit until `serve` is called."""

    def __init__(self, sweep: SweepConfig, done):
        self.errors = tempfile.TemporaryFile("w+")  # a file, not a pipe: warnings never stall the child
        self.process = subprocess.Popen(
            [sys.executable, "-m", "harness.sweep.workers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errors,
            env=python_environment(),
        )
        self.process.stdin.write(pickle.dumps((sweep, frozenset(done))))
        self.process.stdin.flush()
        self.records: queue.Queue = queue.Queue()
        self.reader: threading.Thread | None = None

    def serve(self, units: Units) -> None:
        """Hand the child units one at a time, each when it reports the last one finished."""
        self.reader = threading.Thread(target=self._serve, args=(units,), daemon=True)
        self.reader.start()

    def _hand(self, units: Units) -> None:
        unit = units.take()
        try:
            if unit is None:
                self.process.stdin.close()  # no more work: the child ends
            else:
                self.process.stdin.write(f"{unit}\n".encode())
                self.process.stdin.flush()
        except OSError:
            pass  # the child died; finish() reports its error output

    def _serve(self, units: Units) -> None:
        self._hand(units)
        for line in self.process.stdout:
            measured = json.loads(line)
            if "unit_done" in measured:
                self._hand(units)
            else:
                self.records.put(measured)
        self.records.put(None)  # the child closed its output: no more records

    def take(self, record, wait: bool = False) -> None:
        """Pass the records that have arrived to record(); with wait, all of them until the child ends."""
        while True:
            try:
                measured = self.records.get(block=wait)
            except queue.Empty:
                return
            if measured is None:
                self.records.put(None)
                return
            record(measured)

    def finish(self, record) -> None:
        """Take every record the child sends; raise with its error output if it failed."""
        self.take(record, wait=True)
        code = self.process.wait()
        self.errors.seek(0)
        message = self.errors.read()
        self.errors.close()
        if code != 0:
            raise RuntimeError(f"an accuracy worker failed (exit {code}):\n{message}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.errors.close()


def start(sweep: SweepConfig, done=frozenset()) -> list[Worker]:
    """Start the worker processes of a sweep (none where one process measures it): they import the
    frameworks while this process records the run's environment."""
    return [Worker(sweep, done) for _ in range(worker_count(sweep) - 1)]


@contextlib.contextmanager
def started(sweep: SweepConfig, done=frozenset()):
    """`start`, and kill whatever workers are still running when the block ends (by an error)."""
    running = start(sweep, done)
    try:
        yield running
    finally:
        for worker in running:
            worker.kill()


def measure_grid(sweep: SweepConfig, record, done=frozenset(), implementations=None, running=None) -> int:
    """Measure every cell of the grid not in `done` in this process and the `running` workers
    (from `start`; started here if None), which share the units of work as they come free. Every
    journal record is passed to record() in this thread. Returns the number of processes."""
    if running is None:
        with started(sweep, done) as running:
            return measure_grid(sweep, record, done, implementations, running)
    if not running:
        runner.sweep_cells(sweep, record, done, implementations)
        return 1
    units = Units(runner.n_units(sweep))
    with tqdm(total=sweep.n_cells, initial=len(done), disable=not sweep.progress, desc="cells", unit="cell") as bar:

        def counted(measured: dict) -> None:
            record(measured)
            bar.update(1)

        def measured_here(measured: dict) -> None:
            counted(measured)
            for worker in running:  # the workers' records so far, between this process's cells
                worker.take(counted)

        began = time.perf_counter()
        for worker in running:
            worker.serve(units)
        runner.measure_units(sweep, measured_here, done, implementations, units, bar.set_postfix_str)
        own = time.perf_counter() - began
        for worker in running:
            worker.finish(counted)
    n = len(running) + 1
    took = time.perf_counter() - began
    log.info("accuracy: %d processes, %.1f s (this one's last unit ended at %.1f s)", n, took, own)
    return n


def main() -> int:
    """A worker: the pickled (sweep, done) on stdin, then one unit number per line; out, one JSON
    line per finished cell and {"unit_done": unit} after each unit."""
    sweep, done = pickle.load(sys.stdin.buffer)
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # anything a library prints goes to stderr

    def send(measured: dict) -> None:
        out.write(json.dumps(measured) + "\n")
        out.flush()

    def units():
        for line in sys.stdin.buffer:
            yield int(line)
            send({"unit_done": int(line)})  # asked for when this unit's cells are all sent

    implementations = runner.compile_implementations(sweep)
    runner.measure_units(sweep, send, done, implementations, units())
    out.close()
    return 0


if __name__ == "__main__":
    exit_now(main())  # its parent waits for the exit: skip tearing the frameworks down (about a second)
