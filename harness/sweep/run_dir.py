"""A run folder's own record: sweep.json (the validated settings) and the rules for resuming it."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from harness.errors import ConfigError
from harness.files import write_text
from harness.sweep.journal import JOURNAL

SWEEP = "sweep.json"
ENVIRONMENT = "environment.json"
NOT_COMPARED = ("progress", "workers")  # settings a resumed run may change (they change no number)


def sweep_record(sweep) -> dict:
    """The settings that decide the results, as JSON values."""
    record = dataclasses.asdict(sweep)
    for key in NOT_COMPARED:
        record.pop(key, None)
    return json.loads(json.dumps(record))


def holds_run(run_dir: Path) -> bool:
    return (run_dir / SWEEP).exists() or (run_dir / JOURNAL).exists()


def _normal(value):
    """A one-item list as its item: n_rows was one number before it took lists (sweep.json of older runs)."""
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def differing_keys(stored: dict, current: dict, defaults: dict | None = None) -> list[str]:
    """Keys whose values differ; a key the stored run lacks (a setting added since) matches its default."""
    defaults = defaults or {}
    keys = stored.keys() | current.keys()
    return sorted(k for k in keys if _normal(stored.get(k, defaults.get(k))) != _normal(current.get(k)))


def _defaults(sweep) -> dict:
    return {
        f.name: json.loads(json.dumps(f.default))
        for f in dataclasses.fields(sweep)
        if f.default is not dataclasses.MISSING and isinstance(f.default, (bool, int, float, str, type(None)))
    }


def check_resume(sweep, run_dir: Path, resume: bool, setting: str = "hydra.run.dir") -> None:
    """Refuse to mix runs: a fresh run needs an empty folder; a resumed one the same settings.
    `setting` names the run folder as the user gives it (run_dir= from the API)."""
    if not resume:
        if holds_run(run_dir):
            raise ConfigError(f"{run_dir} already holds a run; resume it with resume=true, or choose another {setting}")
        return
    if not (run_dir / SWEEP).exists():
        raise ConfigError(f"resume=true but {run_dir} holds no run (no {SWEEP}); give {setting}=<the run folder>")
    stored, current = json.loads((run_dir / SWEEP).read_text()), sweep_record(sweep)
    keys = differing_keys(stored, current, _defaults(sweep))
    if keys:
        changes = "; ".join(f"{k}: stored {_normal(stored.get(k))!r}, now {_normal(current.get(k))!r}" for k in keys)
        raise ConfigError(f"resume refused: the config differs from the stored run in {', '.join(keys)} ({changes})")
    check_same_software(run_dir)


def check_same_software(run_dir: Path) -> None:
    """A resumed run must use the Python and package versions that made its first cells."""
    from harness.sweep.environment import PACKAGES, package_versions

    path = run_dir / "environment.json"
    if not path.is_file():
        return
    stored = json.loads(path.read_text())
    now = {"python": sys.version} | package_versions(PACKAGES)
    then = {"python": stored.get("python")} | stored.get("packages", {})
    changed = [f"{k}: stored {then.get(k)}, now {now.get(k)}" for k in now if k in then and then[k] != now[k]]
    if changed:
        raise ConfigError(f"resume refused: the software differs from the stored run ({'; '.join(changed)})")


def record_sweep(sweep, run_dir: Path) -> None:
    write_text(json.dumps(sweep_record(sweep), indent=2) + "\n", run_dir / SWEEP)


def record_environment(record: dict, run_dir: Path) -> None:
    """The one writer of environment.json (a run's, or a merged sweep's with its shards)."""
    write_text(json.dumps(record, indent=2, default=str) + "\n", run_dir / ENVIRONMENT)
