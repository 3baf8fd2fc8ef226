"""Wall time of the main command, imports included: `python -m harness experiment=precision_sweep`.

Run by hand from the repository root (never a test):

    python benchmarks/main_command.py [--runs 3] [--against REV] [--experiment NAME] [extra overrides ...]

Each run is a fresh process writing to a temporary folder; prints every run's wall time and peak
memory (summed over the command and the processes it starts: benchmarks/process_tree.py), the
split into stages (read from when each stage's last file was written), then the median.

`--against REV` also runs the main command of commit REV (checked out into a temporary git
worktree, run with this interpreter), in turn with this one, and prints the ratio of each pair and
their median: on a machine whose speed drifts, code is compared through a ratio measured in turn.
`--experiment lm_head` measures another experiment the same way (its stage split is not printed).
`--beside bce_sweep` runs that experiment of this code in turn with the main command, and prints the
ratio of its wall time to the main command's (a budget stated as "at most the main command's time").
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from process_tree import run_measured

REPO = Path(__file__).resolve().parents[1]


# Each stage ends when the last of its files is written (the figures are drawn beside the
# bisection, after the timing stage, which needs a quiet machine).
STAGES = (
    ("imports and environment", ("environment.json",)),
    ("accuracy", ("errors.parquet",)),
    ("timing", ("timings.parquet",)),
    ("bisection and figures", ("breaks.parquet", "plots/*.png")),
    ("report", ("report.html",)),
)


def stage_split(run_dir: Path, start: float) -> list[tuple[str, float]]:
    """(stage, seconds) from the modification times of each stage's files (wall clock, like `start`)."""
    split, last = [], start
    for name, patterns in STAGES:
        times = [p.stat().st_mtime for pattern in patterns for p in run_dir.glob(pattern)]
        if times:
            split.append((name, max(times) - last))
            last = max(times)
    return split


def one_run(
    overrides: list[str], repo: Path = REPO, experiment: str = "precision_sweep"
) -> tuple[float, float, list[tuple[str, float]]]:
    """(wall seconds, peak resident MiB summed over its processes, stage split) of one run of the
    main command of the code in `repo` (`python -m harness` imports the package from its cwd)."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "harness", f"experiment={experiment}", "progress=false"]
        command += [f"hydra.run.dir={out}", *overrides]
        started = time.time()
        wall, peak, code = run_measured(command, cwd=repo, stdout=subprocess.DEVNULL, env=dict(os.environ))
        if code != 0:
            raise SystemExit(f"experiment {experiment} of {repo} failed (exit {code})")
        split = stage_split(Path(out), started) if experiment == "precision_sweep" else []
    return wall, peak / 2**20, split


def worktree(rev: str) -> tuple[Path, tempfile.TemporaryDirectory]:
    """A temporary git worktree of `rev` (removed with `git worktree remove` by the caller)."""
    holder = tempfile.TemporaryDirectory()
    path = Path(holder.name) / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(path), rev], cwd=REPO, check=True)
    return path, holder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--against", metavar="REV", help="a commit run in turn with this code, for a ratio")
    parser.add_argument("--experiment", default="precision_sweep", help="another experiment, e.g. lm_head")
    parser.add_argument("--beside", metavar="NAME", help="an experiment run in turn with this one, for a ratio")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. timing.enabled=false")
    args = parser.parse_args()
    other = worktree(args.against) if args.against else None
    walls, ratios = [], []
    try:
        for i in range(args.runs):
            wall, peak, split = one_run(args.overrides, experiment=args.experiment)
            walls.append(wall)
            print(f"run {i + 1}: {wall:.1f} s wall, peak RSS {peak:.0f} MiB (summed over its processes)")
            if split:
                print("  " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in split))
            if other:
                base, _, _ = one_run(args.overrides, other[0], args.experiment)
                ratios.append(wall / base)
                print(f"  {args.against}: {base:.1f} s wall; ratio {ratios[-1]:.3f}")
            if args.beside:
                beside, beside_peak, _ = one_run([], experiment=args.beside)
                ratios.append(beside / wall)
                print(f"  {args.beside}: {beside:.1f} s wall, peak RSS {beside_peak:.0f} MiB; ratio {ratios[-1]:.3f}")
    finally:
        if other:
            subprocess.run(["git", "worktree", "remove", "--force", str(other[0])], cwd=REPO, check=False)
            other[1].cleanup()
    print(f"median of {args.runs}: {statistics.median(walls):.1f} s (min {min(walls):.1f}, max {max(walls):.1f})")
    if ratios:
        spread = f"min {min(ratios):.3f}, max {max(ratios):.3f}"
        which = f"of {args.beside} to {args.experiment}" if args.beside else f"to {args.against}"
        print(f"median ratio {which}: {statistics.median(ratios):.3f} ({spread})")


if __name__ == "__main__":
    main()
