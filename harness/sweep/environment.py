"""What produced a result: versions, machine, threads, code revision, seed, command and config
(environment.json). The frameworks' packages and devices come from their backends."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

from harness import backends
from harness.sweep.machine import HARNESS_PACKAGES, cpu_model, git_revision, package_versions, thread_settings

# the harness's packages, then every framework's declared packages (installed or not: None where not)
PACKAGES = tuple(dict.fromkeys(HARNESS_PACKAGES + tuple(p for f in backends.FRAMEWORKS.values() for p in f.packages)))


def threads() -> dict:
    """The machine's thread pools and variables, and PyTorch's intra-op threads where it is loaded."""
    settings = thread_settings()
    if "torch" in sys.modules:
        settings["torch_num_threads"] = sys.modules["torch"].get_num_threads()
    return settings


def devices(frameworks) -> dict[str, list[str]]:
    """The devices each framework sees, by name, as its backend reports them."""
    return {name: backends.load(name).device_names() for name in frameworks}


def collect(sweep, resolved_config: dict) -> dict:
    """The environment.json record of a run."""
    return {
        "python": sys.version,
        "platform": platform.platform(),
        "packages": package_versions(PACKAGES),
        "cpu": {"model": cpu_model(), "cores": os.cpu_count()},
        "threads": threads(),
        "device": sweep.device,
        "devices": devices(sweep.frameworks),
        "frameworks": backends.facts(sweep.frameworks, sweep.device, sweep.dtypes),
        "harness": git_revision(),
        "seed": sweep.seed,
        "command": [Path(sys.executable).name, "-m", "harness", *sys.argv[1:]],
        "config": resolved_config,
    }
