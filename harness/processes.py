"""Child processes of a run (the accuracy worker, the figure drawer): the cores there are to run
them on, and the environment in which `python -m harness...` imports this harness."""

from __future__ import annotations

import os
from pathlib import Path

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
