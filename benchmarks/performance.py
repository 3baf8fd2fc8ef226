"""The performance page's figures: wall time and peak memory of each experiment, with the machine they ran on.

Run by hand from the repository root (never a test):

    python benchmarks/performance.py [--experiments precision_sweep edge_cases ...] [--page docs/pages/performance.md]

Runs each experiment once as a user runs it (a fresh `python -m harness experiment=NAME`, imports
included, into a temporary folder), measures its wall time and its peak resident memory summed over
its processes (benchmarks/process_tree.py), and the main sweep's split into stages
(benchmarks/main_command.py); then rewrites the block between `<!-- performance -->` and
`<!-- /performance -->` (or `<!-- NAME -->` with --block NAME) of the page with the date, the
machine (CPU model, cores, memory, load average before the runs), the versions and every command.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import sys
from importlib import metadata
from pathlib import Path

from main_command import REPO, one_run

EXPERIMENTS = ("precision_sweep", "seed_article", "edge_cases", "gradient_sweep", "training_losses", "token_sweep")
EXPERIMENTS += ("bce_sweep", "distillation_kl")
PACKAGES = ("numpy", "scipy", "torch", "jax", "jaxlib", "optax", "mlx", "tensorflow-cpu", "pandas", "hydra-core")


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor() or platform.machine(),
    )
    memory = next(
        int(line.split()[1]) / 2**20
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    cores, load = len(os.sched_getaffinity(0)), os.getloadavg()
    shared = (
        " (other work was running: read the times as upper bounds, and compare only figures taken together)"
        if load[0] > cores  # the last minute's run queue longer than the cores
        else ""
    )
    return (
        f"{cpu}, {cores} cores, {memory:.0f} GiB, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; run at niceness {os.nice(0)}, load average "
        + ", ".join(f"{x:.1f}" for x in load)
        + f" when the runs began{shared}"
    )


def versions() -> str:
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def block(rows: list[tuple[str, float, float, list]], started: datetime.datetime, header: str, name: str) -> str:
    option = "" if name == "performance" else f" --block {name}"
    lines = [
        f"Measured {started:%Y-%m-%d} with `python benchmarks/performance.py --experiments "
        + " ".join(name for name, *_ in rows)
        + option
        + "`.",
        "",
        f"- Machine: {header}",
        f"- Versions: {versions()}",
        "",
        "| command | wall time | peak memory (summed over its processes) |",
        "|---|---|---|",
    ]
    for name, wall, peak, _ in rows:
        lines.append(f"| `python -m harness experiment={name}` | {wall:.0f} s | {peak / 1024:.1f} GiB |")
    for name, _, _, split in rows:
        if split:
            lines += [
                "",
                f"`{name}` by stage: " + ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in split) + ".",
            ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS))
    parser.add_argument("--page", type=Path, default=REPO / "docs" / "pages" / "performance.md")
    parser.add_argument("--block", default="performance", help="the page's block to rewrite: <!-- BLOCK -->")
    args = parser.parse_args()
    started, header = datetime.datetime.now(datetime.UTC), machine()
    rows = []
    for name in args.experiments:
        wall, peak_mib, split = one_run([], experiment=name)
        print(f"{name}: {wall:.1f} s, {peak_mib:.0f} MiB", file=sys.stderr)
        rows.append((name, wall, peak_mib, split))
    text = args.page.read_text()
    marker = re.compile(rf"(<!-- {re.escape(args.block)} -->\n).*?(<!-- /{re.escape(args.block)} -->)", re.S)
    if not marker.search(text):
        raise SystemExit(f"error: {args.page} has no <!-- {args.block} --> block")
    args.page.write_text(marker.sub(lambda m: m.group(1) + block(rows, started, header, args.block) + m.group(2), text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
