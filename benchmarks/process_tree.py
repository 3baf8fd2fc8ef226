"""Peak memory of a command and every process it starts (the accuracy workers, the figure drawer).

The operating system's accounting of a finished child (`ru_maxrss`) reports the largest single
process, not the sum of processes alive at once, so a run in two processes would look half its
size. Here a thread samples the resident set (VmRSS in /proc, Linux) of the command and all its
descendants every `interval` seconds and keeps the largest sum: an upper bound (pages shared
between processes count twice) that can miss a spike shorter than the interval.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from harness.processes import children


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss_bytes(root: int) -> int:
    """The summed resident set of `root` and its descendants now."""
    tree, total, todo = children(), 0, [root]
    while todo:
        pid = todo.pop()
        total += _rss_bytes(pid)
        todo += tree.get(pid, [])
    return total


def run_measured(command: list[str], interval: float = 0.05, **popen) -> tuple[float, int, int]:
    """(wall seconds, peak summed resident bytes, exit status) of `command` and its descendants."""
    if not Path("/proc/self/status").exists():
        raise SystemExit("the summed peak memory needs /proc (Linux)")
    start = time.perf_counter()
    process = subprocess.Popen(command, **popen)
    peak, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss_bytes(process.pid))
            time.sleep(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = process.wait()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    return wall, peak, code


def main() -> None:
    """`python benchmarks/process_tree.py COMMAND ...`: wall time and summed peak memory of COMMAND."""
    if len(sys.argv) < 2:
        raise SystemExit("usage: python benchmarks/process_tree.py COMMAND [ARGS ...]")
    wall, peak, code = run_measured(sys.argv[1:], env=dict(os.environ))
    print(f"{wall:.1f} s wall, peak {peak / 2**30:.2f} GiB summed over the process tree (exit {code})")
    raise SystemExit(code)


if __name__ == "__main__":
    main()
