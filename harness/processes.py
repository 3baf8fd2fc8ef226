"""Processes of a run (the command, the accuracy worker, the figure drawer): the cores there are to
run them on, the environment in which `python -m harness...` imports this harness, and how each
ends once its work is written."""

from __future__ import annotations

import atexit
import os
import sys
import threading
from pathlib import Path
from typing import NoReturn

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def python_environment() -> dict[str, str]:
    """os.environ with this harness first on PYTHONPATH, for a child `python -m harness...`."""
    paths = [str(PACKAGE_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return os.environ | {"PYTHONPATH": os.pathsep.join(paths)}


def exit_now(status: int = 0) -> NoReturn:
    """End the process as the interpreter would, without tearing its runtimes down: the atexit
    callbacks run (the log is flushed and closed, file locks released), stdout and stderr are
    flushed, then os._exit. The teardown skipped writes nothing and took about a second once
    PyTorch and JAX were loaded (0.45 s and 0.3 s of it measured alone), which a run's command, and
    a parent waiting for its worker, would spend idle. Where a thread or a child process of this one
    still runs (a multirun launcher's pool, torch.compile's compile workers), or a profiler or
    tracer watches (`python -m cProfile` writes its file after the program returns), it exits as
    usual: sys.exit. Call it only when every file the process writes is closed."""
    if sys.getprofile() is not None or sys.gettrace() is not None or _others_running():
        sys.exit(status)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            pass
    os._exit(status)


def _others_running() -> bool:
    """Whether a non-daemon thread or a child process of this one is alive (children are read from
    /proc; without it, assume one is)."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        return True
    if not Path("/proc/self/stat").is_file():
        return True
    return bool(children().get(os.getpid()))


def children() -> dict[int, list[int]]:
    """Every running process's children, by parent id, from /proc (Linux; empty without it)."""
    tree: dict[int, list[int]] = {}
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state letter
        tree.setdefault(parent, []).append(int(entry.name))
    return tree
