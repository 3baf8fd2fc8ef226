"""`python -m harness experiment=NAME [key=value ...]`: run a sweep configured by Hydra."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from harness.config import ConfigError, sweep_config


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


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    experiment = hydra_cfg.runtime.choices.get("experiment") or "default"
    try:
        sweep = sweep_config(cfg, experiment)
    except ConfigError as exc:
        _discard(run_dir)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)

    from harness import runner  # frameworks load only once the config is known to be good

    runner.run(sweep, run_dir)


if __name__ == "__main__":
    main()
