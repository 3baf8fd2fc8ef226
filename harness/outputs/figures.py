"""The error plots of a run (loss, and gradient where measured) and its timing plots, drawn from its
tables alone.

`python -m harness.outputs.figures RUN_DIR` draws them from errors.parquet (grad_errors.parquet,
timings.parquet). The pipeline runs that command as a second process once the timing stage, which
needs a quiet machine, is over, while the bisection runs and the heatmaps are drawn
(`drawn_beside`): those leave the second core idle. On one core, or for a small grid (whose
bisection takes less than the second process's start: harness.pipeline.figures_beside), they are
drawn in this process. Not during the timing stage: drawing on the other core slows the timings
(JAX's most).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from harness import processes
from harness.outputs import plots, timing_plots


def draw(run_dir: Path) -> list[Path]:
    """Draw plots/error_vs_*.png, plots/grad_error_vs_*.png given grad_errors.parquet, and the
    timing plots (timing_<dtype>.png, accuracy_vs_time.png) given timings.parquet."""
    run_dir = Path(run_dir)
    errors = pd.read_parquet(run_dir / "errors.parquet")
    written = plots.write_error_plots(errors, run_dir / "plots")
    if (run_dir / "grad_errors.parquet").is_file():
        grad_errors = pd.read_parquet(run_dir / "grad_errors.parquet")
        written += plots.write_error_plots(grad_errors, run_dir / "plots", gradient=True)
    if (run_dir / "timings.parquet").is_file():
        written += timing_plots.write_timing_plots(
            errors, pd.read_parquet(run_dir / "timings.parquet"), run_dir / "plots"
        )
    return written


@contextlib.contextmanager
def drawn_beside(run_dir: Path, cores: int | None = None, pays: bool = True):
    """Draw the error plots of run_dir in a second process while the `with` block runs; at its end
    wait for them, and raise with the process's error output if drawing failed. With one core, or
    where a second process does not pay, draw them here first."""
    if not pays or (cores or processes.cores()) < 2:
        draw(run_dir)
        yield
        return
    command = [sys.executable, "-m", "harness.outputs.figures", str(Path(run_dir).resolve())]
    with tempfile.TemporaryFile("w+") as errors:  # a file, not a pipe: warnings never stall the process
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors, env=processes.python_environment())
        try:
            yield
        except BaseException:
            child.kill()
            child.wait()
            raise
        if child.wait() != 0:
            errors.seek(0)
            raise RuntimeError(f"drawing the figures of {run_dir} failed (exit {child.returncode}):\n{errors.read()}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m harness.outputs.figures RUN_DIR", file=sys.stderr)
        return 2
    draw(Path(args[0]))
    return 0


if __name__ == "__main__":
    processes.exit_now(main())
