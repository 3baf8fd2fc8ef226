"""Sweeps sharded by Hydra multirun (joblib, submitit_local) merge to the tables of one job."""

import json
import os
import shutil
import sys

import commands
import pandas as pd
import pytest
from conftest import REPO, run_cli

GRID = ["experiment=precision_sweep", "frameworks=[numpy]", "scales=[0.1,30,1000]", "n_rows=6", "n_classes=40"]
GRID += ["progress=false", "timing.enabled=false"]


@pytest.fixture(scope="module")
def single_job(tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    result = run_cli(*GRID, "dtypes=[float16,bfloat16,float32]", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr
    return pd.read_parquet(out / "errors.parquet")


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_sharded_sweep_merges_to_the_single_job_tables(tmp_path, single_job, launcher):
    sweep_dir = tmp_path / "sweep"
    result = run_cli(
        "-m",
        *GRID,
        "dtypes=[float16],[bfloat16,float32]",
        f"hydra/launcher={launcher}",
        f"hydra.sweep.dir={sweep_dir}",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    shards = [pd.read_parquet(sweep_dir / job / "errors.parquet") for job in ("0", "1")]
    assert [set(s["dtype"]) for s in shards] == [{"float16"}, {"bfloat16", "float32"}]
    merged = pd.read_parquet(sweep_dir / "errors.parquet")
    pd.testing.assert_frame_equal(merged, single_job)
    for name in ("errors.csv", "summary.md", "plots/error_vs_scale_spread.png", "environment.json"):
        assert (sweep_dir / name).is_file(), name
    assert len(json.loads((sweep_dir / "environment.json").read_text())["shards"]) == 2


def merge_cli(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "harness.tools.merge", *map(str, args)]
    return commands.run(command, REPO, env, timeout=120)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Two shards of one sweep, run by hand: job 0 float16, job 1 float32 (seed 0, the default)."""
    sweep_dir = tmp_path_factory.mktemp("shards") / "sweep"
    for job, dtype in (("0", "float16"), ("1", "float32")):
        result = run_cli(*GRID, f"dtypes=[{dtype}]", f"hydra.run.dir={sweep_dir / job}")
        assert result.returncode == 0, result.stderr
    return sweep_dir


def copy_shard(shards, job: str, to) -> None:
    """A copy of a shard: the same folder as a second run of the same command gives (its tables do not
    depend on the run: tests/test_cli.py)."""
    shutil.copytree(shards / job, to)


@pytest.mark.slow
def test_merge_by_hand_and_its_errors(tmp_path, shards):
    sweep_dir = tmp_path / "sweep"
    for job in ("0", "1"):
        copy_shard(shards, job, sweep_dir / job)
    assert merge_cli(sweep_dir).returncode == 0
    assert set(pd.read_parquet(sweep_dir / "errors.parquet")["dtype"]) == {"float16", "float32"}

    missing = merge_cli(tmp_path / "nowhere")
    assert missing.returncode == 2 and missing.stderr.strip() == f"error: no such sweep folder: {tmp_path / 'nowhere'}"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert merge_cli(empty).returncode == 2

    clash = tmp_path / "clash"
    copy_shard(shards, "0", clash / "0")  # float16, seed 0
    assert run_cli(*GRID, "dtypes=[float16]", "seed=1", f"hydra.run.dir={clash / '1'}").returncode == 0
    result = merge_cli(clash)
    assert result.returncode == 2 and "shards differ in seed" in result.stderr

    twice = tmp_path / "twice"
    for job in ("0", "1"):
        copy_shard(shards, "0", twice / job)  # the float16 run twice
    result = merge_cli(twice)
    assert result.returncode == 2 and "is in two shards" in result.stderr


@pytest.mark.slow
def test_merge_refuses_an_unfinished_shard(tmp_path, shards):
    sweep_dir = tmp_path / "sweep"
    for job in ("0", "1"):
        copy_shard(shards, job, sweep_dir / job)
    journal_file = sweep_dir / "1" / "cells.jsonl"
    journal_file.write_text("".join(journal_file.read_text().splitlines(keepends=True)[:3]))  # killed early
    result = merge_cli(sweep_dir)
    assert result.returncode == 2
    assert "shard 1 holds 3 of its 24 cells; finish it first" in result.stderr
    assert not (sweep_dir / "errors.parquet").exists()


def test_merged_timings_keep_one_row_per_timed_combination(tmp_path):
    from harness.tools.merge import merged_timings

    row = {"framework": "numpy", "path": "fused", "dtype": "float32", "n_rows": 4, "n_classes": 40}
    for job, median in (("0", 1.0), ("1", 2.0)):  # shards split by scale both time the same size
        (tmp_path / job).mkdir()
        pd.DataFrame([row | {"median_s": median}]).to_parquet(tmp_path / job / "timings.parquet")
    merged = merged_timings([tmp_path / "0", tmp_path / "1"])
    assert merged["median_s"].tolist() == [1.0]


@pytest.mark.slow
def test_a_multirun_into_the_default_folder_whose_shards_do_not_merge_exits_2(tmp_path):
    """No hydra.sweep.dir: the default results/<experiment>/multirun_<timestamp>/ must resolve at sweep time."""
    result = run_cli("-m", *GRID, "dtypes=[float32]", "seed=0,1", cwd=tmp_path, timeout=600)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: shards not merged: shards differ in seed: they are not parts of one sweep"
    )
    (sweep_dir,) = (tmp_path / "results" / "precision_sweep").iterdir()
    assert sweep_dir.name.startswith("multirun_")
    assert all((sweep_dir / job / "errors.parquet").is_file() for job in ("0", "1"))  # kept for a later merge
    assert not (sweep_dir / "errors.parquet").exists()
