"""How a run was produced, as its results folder records it: the report's closing section.

The command and resolved configuration from Hydra's .hydra/ (shown once: sweep.json, the validated
settings, is only named, and environment.json's copies of the config and command are left out),
the folder's other JSON records, the environment (environment.json, or what this machine has now)
and the list of files.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import platform
import shlex
from pathlib import Path

from harness.outputs import tables
from harness.sweep import resolvers  # noqa: F401  registers the resolvers the configs use (logspace, ...)
from harness.sweep.machine import HARNESS_PACKAGES, cpu_model, package_versions

ENVIRONMENT, SETTINGS = "environment.json", "sweep.json"
MAX_RECORD_CHARS = 20_000  # a JSON record longer than this is cut in the report
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "XLA_FLAGS")


def _yaml(path: Path):
    """The YAML file as an OmegaConf node; None where absent or unreadable (the report goes on). Read once
    while the file is unchanged: the report reads .hydra/hydra.yaml (about 200 lines) for several sections."""
    try:
        found = path.stat()
    except OSError:
        return None
    return _read_yaml(str(path), found.st_mtime_ns, found.st_size)


@functools.lru_cache(maxsize=16)
def _read_yaml(path: str, mtime_ns: int, size: int):
    from omegaconf import OmegaConf

    try:
        return OmegaConf.load(path)
    except Exception:
        return None


def run_config(run_dir: Path) -> tuple[dict | None, str]:
    """The resolved config of the run (.hydra/config.yaml) and a note on how it was read."""
    from omegaconf import OmegaConf

    cfg = _yaml(run_dir / ".hydra" / "config.yaml")
    if cfg is None:
        return None, "not recorded (no .hydra/config.yaml in the folder)"
    try:
        return OmegaConf.to_container(cfg, resolve=True), "resolved from .hydra/config.yaml"
    except Exception as exc:
        return OmegaConf.to_container(cfg, resolve=False), f"as written in .hydra/config.yaml (not resolved: {exc})"


def run_command(run_dir: Path) -> tuple[str | None, str | None]:
    """The command line that made the run, and the folder it ran in, from .hydra/."""
    from omegaconf import OmegaConf

    hydra_cfg = _yaml(run_dir / ".hydra" / "hydra.yaml")
    overrides = _yaml(run_dir / ".hydra" / "overrides.yaml")
    task, extra, cwd = [], [], None
    if hydra_cfg is not None:
        raw = OmegaConf.to_container(hydra_cfg, resolve=False).get("hydra", {})
        task = list(raw.get("overrides", {}).get("task") or [])
        extra = [o for o in raw.get("overrides", {}).get("hydra") or [] if not o.startswith("hydra.mode=")]
        cwd = raw.get("runtime", {}).get("cwd")
    if overrides is not None:
        task = list(OmegaConf.to_container(overrides))
    if hydra_cfg is None and overrides is None:
        return None, None
    return "python -m harness " + " ".join(shlex.quote(str(o)) for o in task + extra), cwd


def experiment_name(run_dir: Path) -> str:
    """From .hydra/hydra.yaml, else sweep.json, else the folder's name."""
    from omegaconf import OmegaConf

    hydra_cfg = _yaml(run_dir / ".hydra" / "hydra.yaml")
    if hydra_cfg is not None:
        choices = OmegaConf.to_container(hydra_cfg, resolve=False).get("hydra", {}).get("runtime", {})
        name = (choices.get("choices") or {}).get("experiment")
        if name:
            return str(name)
    try:
        return str(json.loads((run_dir / "sweep.json").read_text())["experiment"])
    except (OSError, ValueError, KeyError, TypeError):
        return run_dir.resolve().name


def configured_bits_lost_limit(config: dict | None) -> float | None:
    value = (config or {}).get("bits_lost_limit")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def flatten(value, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts as (dotted key, text) pairs, floats to 6 significant digits."""
    if isinstance(value, float):
        return [(prefix.rstrip("."), f"{value:.6g}")]
    if isinstance(value, dict):
        return [pair for k, v in value.items() for pair in flatten(v, f"{prefix}{k}.")]
    if isinstance(value, list):
        if any(isinstance(v, (dict, list)) for v in value):
            return [pair for i, v in enumerate(value) for pair in flatten(v, f"{prefix}{i}.")]
        return [(prefix.rstrip("."), ", ".join(text for v in value for _, text in flatten(v)))]
    return [(prefix.rstrip("."), str(value))]


def run_frameworks(run_dir: Path) -> list[str]:
    """The frameworks sweep.json names (each is also its package's name); none where unreadable."""
    try:
        return [str(name) for name in json.loads((run_dir / SETTINGS).read_text())["frameworks"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def environment(run_dir: Path) -> tuple[list[tuple[str, str]], str]:
    """(key, value) pairs of environment.json; where absent, what this machine has now (the harness's
    packages and those of the frameworks sweep.json names)."""
    path = run_dir / ENVIRONMENT
    if path.is_file():
        try:
            return flatten(json.loads(path.read_text())), "recorded by the run in environment.json"
        except (OSError, ValueError) as exc:
            note = f"environment.json unreadable ({exc}); "
    else:
        note = "the run recorded no environment.json; "
    pairs = [("python", platform.python_version())]
    packages = package_versions(HARNESS_PACKAGES + tuple(run_frameworks(run_dir)))
    pairs += [(name, version or "not installed") for name, version in packages.items()]
    pairs += [("platform", platform.platform()), ("cpu", cpu_model()), ("logical cpus", str(os.cpu_count()))]
    if hasattr(os, "sched_getaffinity"):
        pairs.append(("cpus available to the process", str(len(os.sched_getaffinity(0)))))
    pairs += [(name, os.environ[name]) for name in THREAD_VARIABLES if name in os.environ]
    return pairs, note + "these are the versions found when this report was built, which may differ from the run's"


def _yaml_text(config: dict) -> str:
    from omegaconf import OmegaConf

    def short(value):
        if isinstance(value, float):
            return float(f"{value:.6g}")
        if isinstance(value, list):
            return [short(v) for v in value]
        if isinstance(value, dict):
            return {k: short(v) for k, v in value.items()}
        return value

    return OmegaConf.to_yaml(OmegaConf.create(short(config))).rstrip()


def record_section(path: Path) -> list[str]:
    """A JSON record of the folder (e.g. sweep.json), shown as written."""
    try:
        text = json.dumps(json.loads(path.read_text()), indent=2)
    except (OSError, ValueError) as exc:
        return [f"{path.name}: could not be read ({exc}).", ""]
    if len(text) > MAX_RECORD_CHARS:
        text = text[:MAX_RECORD_CHARS] + "\n... (cut; the file holds the rest)"
    return [f"Recorded in {path.name}:", "", "```json", text, "```", ""]


def run_section(run_dir: Path) -> list[str]:
    """The command and the configuration, once: the resolved .hydra/config.yaml, else sweep.json;
    then the folder's other JSON records."""
    config, config_note = run_config(run_dir)
    command, cwd = run_command(run_dir)
    lines = ["### Command and configuration", ""]
    if command:
        lines += ["Command" + (f" (run in `{cwd}`)" if cwd else "") + ":", "", "```", command, "```", ""]
    else:
        lines += ["The command was not recorded (no .hydra/ in the folder).", ""]
    records = sorted(p for p in run_dir.glob("*.json") if p.name != ENVIRONMENT)
    if config:
        lines += [f"Configuration, {config_note} (floats to 6 significant digits):", "", "```yaml"]
        lines += [_yaml_text(config), "```", ""]
        if (run_dir / SETTINGS).is_file():
            lines += [f"The settings as validated are in `{SETTINGS}`.", ""]
            records.remove(run_dir / SETTINGS)
    else:
        lines += [f"Configuration: {config_note}.", ""]
    for path in records:
        lines += record_section(path)
    return lines


def environment_section(run_dir: Path) -> list[str]:
    """environment.json without the command and configuration, which the section above shows."""
    pairs, note = environment(run_dir)
    pairs = [(key, value) for key, value in pairs if key != "command" and not key.startswith("config.")]
    return [
        "### Environment",
        "",
        f"Source: {note}.",
        "",
        tables.markdown_table(["", "value"], [list(p) for p in pairs]),
        "",
    ]


def provenance_section(run_dir: Path, own_files=(), heading: bool = True) -> list[str]:
    """The report's last section: folder, command and configuration, environment, files (but own_files)."""
    built = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    lines = ["## How it was produced", ""] if heading else []
    lines += [
        f"Results folder `{run_dir.resolve()}`; this report was built {built} from the folder alone "
        "(`python -m harness.outputs.report`).",
        "",
    ]
    lines += run_section(run_dir) + environment_section(run_dir)
    return lines + ["### Files", "", *file_list(run_dir, own_files), ""]


def file_list(run_dir: Path, own_files=()) -> list[str]:
    files = sorted(
        p
        for p in run_dir.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.name not in own_files and not p.name.endswith(".tmp")
    )
    return [f"- `{p.relative_to(run_dir).as_posix()}` ({p.stat().st_size:,} bytes)" for p in files]
