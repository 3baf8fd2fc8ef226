"""The program behind `python -m harness`: compose settings with Hydra, validate them, run, read back.

    run = harness.run("precision_sweep", ["frameworks=[numpy]", "timing.enabled=false"])
    run.errors            # the errors table as a DataFrame; run.dir is the run folder
    harness.load(run.dir)  # the same tables from a finished run folder
    harness.measure(my_loss, "torch", dtypes=["float32"], scales=[1, 1e4])  # one callable's errors table

Settings are composed from conf/ by Hydra's compose API, so a key means the same here and on the
command line; `python -m harness` parses with Hydra and calls `prepare` and `execute` below.
Bad settings raise harness.errors.ConfigError with the one line the command line prints.
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf

from harness import losses
from harness.errors import ConfigError
from harness.package import study
from harness.sweep.config import CONF_DIR, SweepConfig, known_settings, resume_flag, sweep_config
from harness.sweep.run_dir import check_resume, record_environment, record_sweep

GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/basic/"
MEASURED = types.SimpleNamespace()  # callables given to measure(), importable as harness.api:MEASURED.<name>


@dataclass(frozen=True, eq=False)
class Run:
    """A finished run: its folder and its tables (None where the run did not make one)."""

    dir: Path
    errors: pd.DataFrame | None  # None only for an edge-case run, whose table is edge_cases
    timings: pd.DataFrame | None = None
    breakdown: pd.DataFrame | None = None
    grad_errors: pd.DataFrame | None = None
    edge_cases: pd.DataFrame | None = None


def hydra_error_line(exc: Exception) -> str:
    """Hydra's multi-line composition errors as one line naming the bad value and the valid choices."""
    text = str(exc).strip()
    if isinstance(exc, MissingConfigException) and exc.options:
        group, _, name = str(exc.missing_cfg_file).rpartition("/")
        return f"unknown {group} {name!r}; valid choices: {', '.join(exc.options)}"
    if text.startswith("Could not override '"):
        key = text.split("'")[1]
        if key.startswith("hydra."):
            return f"unknown setting {key!r}; Hydra's own settings: python -m harness --cfg hydra"
        *parents, _ = key.split(".")
        known = known_settings()
        for parent in parents:
            known = known.get(parent) if isinstance(known, dict) else None
        valid = f"; valid settings: {', '.join(known)}" if isinstance(known, dict) else ""
        return f"unknown setting {key!r}{valid}"
    if text.startswith("Ambiguous value for argument '"):
        return several_values(text.splitlines()[0][len("Ambiguous value for argument '") : -1])
    return (text.splitlines() or [type(exc).__name__])[0]


def several_values(override: str) -> str:
    return f"{override!r} gives several values: add -m to run one job per value, or write a list as key=[a,b]"


def parse_overrides(overrides: Sequence[str]) -> list:
    """Hydra's parse of the overrides; a malformed one raises ConfigError naming it and the grammar."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed += parser.parse_overrides([text])
        except OverrideParseException as exc:
            reason = (str(exc).strip().splitlines() or ["cannot parse"])[0]
            raise ConfigError(f"malformed override {text!r}: {reason}; the grammar: {GRAMMAR}") from None
    return parsed


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """conf/config.yaml with the overrides, Hydra's own node included, as `python -m harness` composes it."""
    parse_overrides(overrides)
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3", job_name="harness"):
            return compose("config", overrides=list(overrides), return_hydra_config=True)
    except HydraException as exc:
        raise ConfigError(hydra_error_line(exc)) from None


def settings_of(cfg: DictConfig) -> tuple[DictConfig, str]:
    """The job's settings without Hydra's node, and the experiment's name ('default' for none)."""
    experiment = cfg.hydra.runtime.choices.get("experiment") or "default"
    job = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    del job["hydra"]
    return job, experiment


def check_study(sweep: SweepConfig) -> None:
    """A study's prerequisites (`REQUIRES` in experiments/<experiment>.py), checked before any work."""
    for key, value in getattr(study(sweep.experiment), "REQUIRES", {}).items():
        if getattr(sweep, key) != value:
            shown = json.dumps(getattr(sweep, key))
            raise ConfigError(
                f"experiment {sweep.experiment} needs {key}={json.dumps(value)} (its summary is built from it), "
                f"got {key}={shown}"
            )


def prepare(
    cfg: DictConfig, experiment: str, run_dir: Path | None = None, setting: str = "hydra.run.dir"
) -> tuple[SweepConfig, bool]:
    """Every check before any work: the settings, the study's prerequisites and, given run_dir, resuming
    (`setting`: how the user names the run folder, in the messages)."""
    resume = resume_flag(cfg)
    sweep = sweep_config(cfg, experiment)
    check_study(sweep)
    if run_dir is not None:
        check_resume(sweep, run_dir, resume, setting)
    return sweep, resume


def execute(sweep: SweepConfig, cfg: DictConfig, run_dir: Path, resume: bool) -> pd.DataFrame:
    """Record the run (sweep.json, environment.json) unless resuming, then measure and write everything."""
    from harness.sweep import environment, journal, workers
    from harness.timing import stage

    stage.quiet_idle_threads(sweep.timing.threads if sweep.timing.enabled else None)  # before PyTorch loads
    if sweep.timing.enabled:  # before any computation: XLA's flags and TensorFlow's pools are read once
        stage.request_threads(sweep.frameworks, sweep.timing.threads)
    done = journal.done_cells(run_dir) if resume else frozenset()
    with workers.started(sweep, done) as running:  # they start while this process imports and records
        from harness import pipeline  # the outputs (matplotlib): half a second the workers need not wait

        if not resume:  # a resumed run keeps the record of the run it finishes (its software was checked)
            record_sweep(sweep, run_dir)
            record = environment.collect(sweep, OmegaConf.to_container(cfg, resolve=True))
            record_environment(record, run_dir)
        return pipeline.run(sweep, run_dir, running)


def _with_experiment(experiment: str | None, overrides: Sequence[str]) -> list[str]:
    return ([f"experiment={experiment}"] if experiment else []) + list(overrides)


def run(experiment: str | None = None, overrides: Sequence[str] = (), run_dir: str | Path | None = None) -> Run:
    """Run a sweep as `python -m harness experiment=EXPERIMENT *overrides` does, into run_dir
    (default: hydra.run.dir, results/<experiment>/<timestamp>/ under the working directory)."""
    cfg = compose_config(_with_experiment(experiment, overrides))
    folder = Path(run_dir if run_dir is not None else cfg.hydra.run.dir)
    job, name = settings_of(cfg)
    sweep, resume = prepare(job, name, folder, "run_dir")
    folder.mkdir(parents=True, exist_ok=True)
    execute(sweep, job, folder, resume)
    return load(folder)


def _table(run_dir: Path, name: str) -> pd.DataFrame | None:
    path = run_dir / f"{name}.parquet"
    return pd.read_parquet(path) if path.is_file() else None


def load(run_dir: str | Path) -> Run:
    """The tables of a finished run folder."""
    folder = Path(run_dir)
    errors, edge_cases = _table(folder, "errors"), _table(folder, "edge_cases")
    if errors is None and edge_cases is None:
        raise ConfigError(f"{folder} holds no errors.parquet (not a run folder, or the run did not finish)")
    tables = (_table(folder, name) for name in ("timings", "breakdown", "grad_errors"))
    return Run(folder, errors, *tables, edge_cases=edge_cases)


def _list(values) -> str:
    return "[" + ",".join(str(v) for v in values) + "]"


def measure(
    fn: Callable,
    framework: str,
    *,
    dtypes: Sequence[str] | None = None,
    scales: Sequence[float] | None = None,
    families: Sequence[str] | None = None,
    n_rows: int | None = None,
    n_classes: int | Sequence[int] | None = None,
    name: str | None = None,
    loss: str = losses.DEFAULT,
    paths: Sequence[str] = (),
    loss_settings: dict | None = None,
    reduction: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The errors table of one callable in the framework's own arrays: fn(logits, labels) -> per-row
    losses for cross-entropy, fn(*arrays) for another loss (its entry's arrays: binary cross-entropy's
    logits and targets -> per-element losses, KL's teacher and student -> per-row losses).

    It is swept like a `custom_paths` entry over conf/config.yaml's grid (None: that setting's default)
    and measured in memory: nothing is written. `name` (default fn.__name__) is its `path` column;
    `loss` names the loss it implements (harness.losses), the `loss` column; `paths`, built-in paths of
    that loss measured beside it (a baseline); `reduction`, e.g. ["none", "mean"]; `loss_settings`, the
    loss's own settings, e.g. {"targets": ["hard", "soft"]} for binary cross-entropy.
    """
    name = name or (fn.__name__ if fn.__name__.isidentifier() else "custom")
    setattr(MEASURED, name, fn)
    settings = {"dtypes": dtypes, "scales": scales, "families": families, "n_rows": n_rows, "n_classes": n_classes}
    settings["reduction"] = reduction
    overrides = [
        f"{key}={_list(value) if isinstance(value, list | tuple) else value}"
        for key, value in settings.items()
        if value is not None
    ]
    custom = f"{{framework: {framework}, name: {name}, fn: 'harness.api:MEASURED.{name}', loss: {loss}}}"
    overrides += [f"loss={loss}", f"frameworks=[{framework}]", f"custom_paths=[{custom}]", "progress=false"]
    overrides += [f"{loss}.{key}={_list(value)}" for key, value in (loss_settings or {}).items()]
    job, experiment = settings_of(compose_config(overrides))
    sweep, _ = prepare(job, experiment)
    losses.check_path_names(loss, paths, losses.path_names(loss))
    from harness import pipeline

    return pipeline.sweep_errors(replace(sweep, paths=tuple(paths)))  # the callable, and the paths asked for
