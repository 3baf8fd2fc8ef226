"""Merge the shards of a Hydra multirun into one set of tables, summary and plots.

`python -m harness -m experiment=precision_sweep frameworks=[numpy],[torch],[jax] hydra/launcher=joblib`
runs one job per framework into results/<experiment>/multirun_<timestamp>/<job number>/; at the end of
the multirun the `MergeShards` callback (registered in conf/config.yaml) merges them into the sweep
folder itself. `python -m harness.tools.merge SWEEP_DIR` does the same by hand, e.g. after a cluster run.

Shards may split any list setting (frameworks, paths, dtypes, families, scales, n_classes); every
other setting must agree, and no cell may appear in two shards. Shards' timings tables are stacked:
timing shards must not share cores, so run them one at a time (hydra.launcher.n_jobs=1) or with
timing.enabled=false in parallel accuracy shards.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
from hydra.experimental.callback import Callback

from harness.cli import OneLineParser
from harness.errors import ConfigError
from harness.sweep import journal
from harness.sweep.config import SweepConfig
from harness.sweep.run_dir import SWEEP, differing_keys, record_environment, record_sweep

SHARDED = ("frameworks", "paths", "dtypes", "families", "scales", "n_classes")


def shard_dirs(sweep_dir: Path) -> list[Path]:
    """Job folders of a multirun: those holding a sweep.json, in job-number order."""
    found = [d for d in sweep_dir.iterdir() if d.is_dir() and (d / SWEEP).is_file()]
    return sorted(found, key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name))


def _union(lists) -> list:
    merged = []
    for values in lists:
        merged += [v for v in values if v not in merged]
    return merged


def merged_sweep(records: list[dict]) -> SweepConfig:
    """One SweepConfig covering every shard; the unsharded settings must agree."""
    first = records[0]
    for other in records[1:]:
        keys = [k for k in differing_keys(first, other) if k not in SHARDED]
        if keys:
            raise ConfigError(f"shards differ in {', '.join(keys)}: they are not parts of one sweep")
    settings = dict(first) | {k: tuple(_union(r[k] for r in records)) for k in SHARDED}
    settings["scales"] = tuple(sorted(settings["scales"]))
    settings["n_classes"] = tuple(sorted(settings["n_classes"]))
    return SweepConfig(**settings)


def merge(sweep_dir: Path):
    """Merge the shards under sweep_dir into sweep_dir; returns the merged errors table."""
    from harness import pipeline

    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ConfigError(f"no such sweep folder: {sweep_dir}")
    shards = shard_dirs(sweep_dir)
    if not shards:
        raise ConfigError(f"{sweep_dir} holds no shards (job folders with {SWEEP})")
    settings = [json.loads((d / SWEEP).read_text()) for d in shards]
    sweep = merged_sweep(settings)
    records, seen = [], {}
    for shard, setting in zip(shards, settings, strict=True):
        found = journal.read(shard / journal.JOURNAL)
        expected = SweepConfig(**setting).n_cells
        if len(found) < expected:
            raise ConfigError(
                f"shard {shard.name} holds {len(found)} of its {expected} cells; finish it first "
                f"(python -m harness ... hydra.run.dir={shard} resume=true), then merge"
            )
        for record in found:
            key = journal.cell_key(record["cell"])
            if key in seen:
                raise ConfigError(f"cell {key} is in two shards: {seen[key].name} and {shard.name}")
            seen[key] = shard
            records.append(record)
    record_sweep(sweep, sweep_dir)
    environments = [
        json.loads((d / "environment.json").read_text()) for d in shards if (d / "environment.json").exists()
    ]
    if environments:
        merged_env = environments[0] | {"shards": [{"folder": d.name, **_command(d)} for d in shards]}
        record_environment(merged_env, sweep_dir)
    return pipeline.write_results(sweep, sweep_dir, records, merged_timings(shards))


def merged_timings(shards: list[Path]) -> pd.DataFrame | None:
    """The shards' timings stacked; a combination timed by several shards (say, shards split by
    scale all time the same sizes) keeps the first shard's row."""
    timed = [pd.read_parquet(d / "timings.parquet") for d in shards if (d / "timings.parquet").is_file()]
    if not timed:
        return None
    stacked = pd.concat(timed, ignore_index=True)
    key = [c for c in ("loss", "framework", "path", "dtype", "n_rows", "n_classes") if c in stacked]
    return stacked.drop_duplicates(key, keep="first")


def _command(shard: Path) -> dict:
    env = shard / "environment.json"
    return {"command": json.loads(env.read_text()).get("command")} if env.exists() else {}


class MergeShards(Callback):
    """Hydra callback: after a multirun, merge its job folders into the sweep folder.

    Shards that cannot be merged end the multirun with exit status 2 (SystemExit passes through
    Hydra's callback guard, which catches only Exception); the shards stay for a later merge.
    """

    def on_multirun_end(self, config, **kwargs) -> None:
        try:
            merge(Path(config.hydra.sweep.dir))
        except ConfigError as exc:
            print(f"error: shards not merged: {exc}", file=sys.stderr)
            raise SystemExit(2) from None


def main(argv=None) -> int:
    parser = OneLineParser(prog="python -m harness.tools.merge", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder whose job folders hold shard runs")
    args = parser.parse_args(argv)
    try:
        merge(args.sweep_dir)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
