"""`harness [-m] experiment=NAME [key=value ...]` (or `python -m harness ...`): Hydra parses, harness.api works.

Before Hydra starts, every job's overrides are composed and validated (harness.api), so a bad
setting, an unknown experiment or key, or a malformed override stops the command in one line,
exit status 2, before any job runs.
"""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from harness import api
from harness.errors import ConfigError
from harness.package import CONF_DIR
from harness.processes import exit_now
from harness.sweep.run_dir import holds_run

NOT_RUN = ("help", "hydra_help", "info", "shell_completion", "version")  # Hydra's flags that run no job


def _discard(run_dir: Path) -> None:
    """Remove the run folder Hydra made, and the parents it left empty below the working directory."""
    shutil.rmtree(run_dir, ignore_errors=True)
    cwd = Path.cwd().resolve()
    for parent in run_dir.resolve().parents:
        if parent == cwd or cwd not in parent.parents:
            break
        try:
            parent.rmdir()
        except OSError:
            break


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt


def job_overrides(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The overrides of every job the command line asks for: one list, or one per multirun combination."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    parsed = api.parse_overrides(overrides)
    swept = [o for o in parsed if o.is_sweep_override()]
    if swept and not multirun:
        raise ConfigError(api.several_values(swept[0].input_line))
    if any(o.get_key_element() == "experiment" for o in swept):
        raise ConfigError(
            "experiment cannot be swept in one multirun (its jobs would not merge into one sweep): "
            "run one multirun per experiment"
        )
    try:
        (jobs,) = BasicSweeper.split_arguments(parsed, None)
    except Exception:  # a sweep the basic sweeper cannot expand (e.g. glob): Hydra checks it itself
        return []
    return jobs


def check_command_line(argv: list[str]) -> None:
    """Compose and validate every job of the command line; raise ConfigError with the first bad value."""
    from hydra._internal.utils import get_args_parser

    try:
        args = get_args_parser().parse_args(argv)
    except SystemExit:
        return  # Hydra reports its own flag errors
    if any(getattr(args, flag, False) for flag in NOT_RUN):
        return
    for overrides in job_overrides(args.overrides, args.multirun):
        job, experiment = api.settings_of(api.compose_config(overrides))
        api.prepare(job, experiment)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    experiment = hydra_cfg.runtime.choices.get("experiment") or "default"
    try:
        sweep, resume = api.prepare(cfg, experiment, run_dir)
    except ConfigError as exc:
        if not holds_run(run_dir):
            _discard(run_dir)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        api.execute(sweep, cfg, run_dir, resume)
    except KeyboardInterrupt:
        print(
            f"interrupted: finished cells are kept in {run_dir / 'cells.jsonl'}; "
            f"resume with the same command plus hydra.run.dir={run_dir} resume=true",
            file=sys.stderr,
        )
        sys.exit(130)


def run() -> None:
    """The `harness` command and `python -m harness`: every job checked, then Hydra runs them."""
    try:
        check_command_line(sys.argv[1:])
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    main()  # Hydra exits by itself on an error
    exit_now(0)  # every file is written and closed: skip tearing PyTorch and JAX down (about a second)


if __name__ == "__main__":
    run()
