"""`python -m harness experiment=NAME [key=value ...]`: run a sweep configured by Hydra."""

from __future__ import annotations

import json
import shutil
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from harness.outputs.tables import write_text
from harness.sweep.config import ConfigError, resume_flag, sweep_config
from harness.sweep.run_dir import check_resume, holds_run, record_sweep


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


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    experiment = hydra_cfg.runtime.choices.get("experiment") or "default"
    try:
        resume = resume_flag(cfg)
        sweep = sweep_config(cfg, experiment)
        check_resume(sweep, run_dir, resume)
    except ConfigError as exc:
        if not holds_run(run_dir):
            _discard(run_dir)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)

    from harness.sweep import environment, runner  # frameworks load only once the config is known to be good
    from harness.timing import timer as timing  # frameworks load only once the config is known to be good

    if sweep.timing.enabled:  # before any JAX computation: XLA reads its thread flags once
        timing.set_threads(sweep.timing.threads, sweep.frameworks)
    if not resume:  # a resumed run keeps the record of the run it finishes (its software was checked)
        record_sweep(sweep, run_dir)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        record = environment.collect(sweep, resolved)
        write_text(json.dumps(record, indent=2, default=str) + "\n", run_dir / "environment.json")
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        runner.run(sweep, run_dir)
    except KeyboardInterrupt:
        print(
            f"interrupted: finished cells are kept in {run_dir / 'cells.jsonl'}; "
            f"resume with the same command plus hydra.run.dir={run_dir} resume=true",
            file=sys.stderr,
        )
        sys.exit(130)


if __name__ == "__main__":
    main()
