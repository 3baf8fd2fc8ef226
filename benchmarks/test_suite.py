"""How long does the whole test suite take? Run by hand, not a test.

    python benchmarks/test_suite.py [--commit c4a7fc2] [--commit HEAD] [--args "-q --durations=25"]

For each --commit (default: the working tree as it is), a copy of that commit's files (git archive; the
working tree: its tracked files as they are now, and new ones not ignored) in a scratch folder, and there
`python -m pytest ARGS` with this interpreter, as `nice -n 5`: the suite's own settings start its worker
processes. Prints each run's wall seconds, its pytest summary line, the load average before it, and the
seconds per test file (setup, call and teardown of its tests, from pytest's JUnit XML: with workers,
files overlap, so these add up to more than the wall time). Commits run one after another, so that they
share the machine's conditions: on a shared machine, rerun them in turn and compare the same round.
"""

from __future__ import annotations

import argparse
import collections
import os
import shlex
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def copy_of(commit: str | None, folder: Path) -> None:
    """The commit's files (or the working tree's) in folder."""
    if commit is not None:
        archive = subprocess.run(["git", "-C", REPO, "archive", commit], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
        return
    listed = subprocess.run(
        ["git", "-C", REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(source.read_bytes())


def seconds_per_file(junit: Path) -> collections.Counter:
    found: collections.Counter = collections.Counter()
    for case in ET.parse(junit).iter("testcase"):
        found[case.get("classname", "").rsplit(".", 1)[-1] + ".py"] += float(case.get("time", 0))
    return found


def measure(commit: str | None, args: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="suite_") as scratch:
        folder = Path(scratch)
        copy_of(commit, folder)
        junit = folder / "junit.xml"
        load = os.getloadavg()
        start = time.perf_counter()
        done = subprocess.run(
            ["nice", "-n", "5", sys.executable, "-m", "pytest", *args, f"--junitxml={junit}"],
            cwd=folder,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
        summary = next((line for line in reversed(done.stdout.splitlines()) if " in " in line), "")
        print(f"{commit or 'working tree'}: {wall:.0f} s wall, load before {load[0]:.1f}; {summary.strip('= ')}")
        if junit.is_file():
            for name, seconds in seconds_per_file(junit).most_common(25):
                print(f"  {seconds:7.1f} s  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commit", action="append", help="a commit to measure (repeat; default: the working tree)")
    parser.add_argument("--args", default="-q --durations=25", help="pytest's arguments")
    options = parser.parse_args()
    for commit in options.commit or [None]:
        measure(commit, shlex.split(options.args))


if __name__ == "__main__":
    main()
