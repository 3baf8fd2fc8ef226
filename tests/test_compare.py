"""Comparing two runs: the rule on hand-built tables, then `python -m harness.tools.compare` on real runs."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import commands
import numpy as np
import pandas as pd
import pytest
from conftest import small_sweep

from harness import pipeline
from harness.outputs import tables
from harness.sweep.run_dir import record_sweep
from harness.tools import compare

REPO = Path(__file__).resolve().parents[1]


def cell(path="naive", dtype="float32", scale=1.0, status="ok", max_ulp_err=0.5, **extra) -> dict:
    key = dict(framework="numpy", path=path, dtype=dtype, family="spread", scale=scale, n_rows=4, n_classes=8)
    return key | {"status": status, "max_ulp_err": max_ulp_err} | extra


def table(*cells: dict) -> pd.DataFrame:
    return pd.DataFrame(list(cells))


def change_of(status_a, err_a, status_b, err_b, **tolerances) -> str:
    a, b = table(cell(status=status_a, max_ulp_err=err_a)), table(cell(status=status_b, max_ulp_err=err_b))
    return compare.compare_errors(a, b, **tolerances)["change"].item()


BASELINE = table(
    cell("naive", scale=1.0, max_ulp_err=0.7),
    cell("naive", scale=1000.0, status="inf", max_ulp_err=np.nan),
    cell("fused", scale=1.0, max_ulp_err=0.4),
    cell("fused", scale=1000.0, max_ulp_err=12.0),
)


def test_identical_tables_have_nothing_changed():
    comparison = compare.compare_errors(BASELINE, BASELINE.copy())
    assert len(comparison) == len(BASELINE)
    assert (comparison["change"] == compare.UNCHANGED).all()
    assert compare.changed_cells(comparison).empty


def test_the_columns_are_the_key_then_both_runs_side_by_side():
    key = [c for c in tables.KEY_COLUMNS if c in BASELINE.columns]
    columns = list(compare.compare_errors(BASELINE, BASELINE).columns)
    assert columns == key + ["change", "status_a", "status_b", "max_ulp_err_a", "max_ulp_err_b", "ulp_err_ratio"]


@pytest.mark.parametrize("failure", ["inf", "nan", "error", "unsupported"])
def test_ok_to_a_failure_or_unsupported_regressed(failure):
    assert change_of("ok", 0.5, failure, np.nan) == compare.REGRESSED


def test_a_failure_to_ok_improved():
    assert change_of("inf", np.nan, "ok", 0.5) == compare.IMPROVED


@pytest.mark.parametrize(("status_a", "status_b"), [("inf", "nan"), ("error", "unsupported"), ("ok", "input_inf")])
def test_other_status_changes_are_reported_but_not_regressions(status_a, status_b):
    assert change_of(status_a, 0.5, status_b, 0.5) == compare.STATUS_CHANGED


def test_an_error_beyond_the_tolerance_regressed_and_within_it_did_not():
    # defaults rel 0.5, ulp 1: from 2 ulp the bound is 2 * 1.5 + 1 = 4 ulp
    assert change_of("ok", 2.0, "ok", 4.01) == compare.REGRESSED
    assert change_of("ok", 2.0, "ok", 4.0) == compare.UNCHANGED
    assert change_of("ok", 0.4, "ok", 1.3) == compare.UNCHANGED  # a rounding flip near 0.5 ulp is noise
    assert change_of("ok", 1000.0, "ok", 1400.0) == compare.UNCHANGED
    assert change_of("ok", 1000.0, "ok", 2000.0) == compare.REGRESSED  # one bit lost


def test_the_tolerances_are_the_callers():
    assert change_of("ok", 2.0, "ok", 2.5, rel_tolerance=0.0, ulp_tolerance=0.0) == compare.REGRESSED
    assert change_of("ok", 2.0, "ok", 2.5, rel_tolerance=0.0, ulp_tolerance=0.5) == compare.UNCHANGED
    assert change_of("ok", 2.0, "ok", 8.0, rel_tolerance=3.0, ulp_tolerance=0.0) == compare.UNCHANGED


def test_an_error_that_shrank_beyond_the_tolerance_improved():
    assert change_of("ok", 12.0, "ok", 0.5) == compare.IMPROVED
    assert change_of("ok", 1.4, "ok", 0.5) == compare.UNCHANGED


def test_missing_errors_count_as_infinite():
    assert change_of("ok", np.nan, "ok", np.nan) == compare.UNCHANGED
    assert change_of("ok", 0.5, "ok", np.nan) == compare.REGRESSED
    assert change_of("ok", np.nan, "ok", 0.5) == compare.IMPROVED
    assert change_of("inf", np.nan, "inf", 3.0) == compare.UNCHANGED  # errors of failed cells are not compared


def test_regressions_come_first_worst_first_with_the_ratio():
    run_b = BASELINE.copy()
    run_b["max_ulp_err"] = [7.0, np.nan, 40.0, 1.2]  # naive x10, fused x100, fused improved
    run_b.loc[1, "status"] = "nan"
    comparison = compare.compare_errors(BASELINE, run_b)
    assert list(comparison["change"]) == ["regressed", "regressed", "status changed", "improved"]
    assert list(comparison["path"]) == ["fused", "naive", "naive", "fused"]
    assert comparison["ulp_err_ratio"].iloc[:2].tolist() == pytest.approx([100.0, 10.0])
    assert np.isnan(comparison["ulp_err_ratio"].iloc[2])  # not ok in either run: no ratio


def test_key_columns_are_those_both_tables_carry(monkeypatch):
    monkeypatch.setattr(tables, "KEY_COLUMNS", tuple(dict.fromkeys((*tables.KEY_COLUMNS, "device"))))
    on_gpu = BASELINE.assign(device="cuda")
    assert "device" not in compare.compare_errors(BASELINE, on_gpu).columns  # only B has it: not a key
    comparison = compare.compare_errors(on_gpu, on_gpu)
    assert "device" in comparison.columns and (comparison["change"] == compare.UNCHANGED).all()
    with pytest.raises(compare.BadInput, match="mismatched grids: 4 cells only in RUN_A, 4 only in RUN_B"):
        compare.compare_errors(on_gpu, BASELINE.assign(device="cpu"))


def test_mismatched_grids_duplicates_and_missing_columns_are_bad_input():
    with pytest.raises(
        compare.BadInput, match=r"1 cells only in RUN_A, 0 only in RUN_B \(e.g. only in A: .*scale=1000"
    ):
        compare.compare_errors(BASELINE, BASELINE.iloc[:3])
    with pytest.raises(compare.BadInput, match="RUN_B's errors table has 2 rows sharing a key"):
        compare.compare_errors(BASELINE, pd.concat([BASELINE, BASELINE.iloc[:1]]))
    with pytest.raises(compare.BadInput, match="RUN_A's errors table lacks the column.* max_ulp_err"):
        compare.compare_errors(BASELINE.drop(columns="max_ulp_err"), BASELINE)
    with pytest.raises(compare.BadInput, match="share none of the key columns"):
        compare.compare_errors(BASELINE[["status", "max_ulp_err"]], BASELINE)


def test_the_summary_counts_changes_and_tabulates_the_worst_regressions():
    run_b = BASELINE.assign(status=["ok", "inf", "unsupported", "ok"])
    comparison = compare.compare_errors(BASELINE, run_b)
    summary = compare.summary_markdown(comparison, Path("a"), Path("b"), 0.5, 1.0)
    assert "4 cells: 1 regressed, 0 status changed, 0 improved, 3 unchanged." in summary
    assert "| ok | unsupported | regressed | 1 |" in summary
    assert "| numpy | fused | float32 | spread | 1 | 4 | 8 | ok | unsupported | 0.4 | 0.4 | - |" in summary


def test_the_status_change_table_counts_each_cell_once_under_its_change():
    run_b = BASELINE.assign(status=["inf", "nan", "ok", "ok"])  # ok -> inf regressed, inf -> nan status changed
    comparison = compare.compare_errors(BASELINE, run_b)
    summary = compare.summary_markdown(comparison, Path("a"), Path("b"), 0.5, 1.0)
    assert "4 cells: 1 regressed, 1 status changed, 0 improved, 2 unchanged." in summary
    assert "## Status changes: 2 cells, each counted above under its change" in summary
    assert "| ok | inf | regressed | 1 |" in summary and "| inf | nan | status changed | 1 |" in summary


def test_settings_beyond_the_grid_must_agree():
    a = {"experiment": "x", "label": "random", "seed": 0, "scales": [1.0], "timing": {"enabled": True}}
    b = a | {"experiment": "y", "label": "adversarial", "seed": 1, "timing": {"enabled": False}}
    assert compare.different_settings(a, b) == ["label", "seed"]
    assert compare.different_settings(a, a | {"device": "cuda", "row_errors": True}) == []


# The real command line, on real runs made by the runner.


def compare_sweep(scales=(1.0, 1000.0), **changes):
    return small_sweep(
        frameworks=("numpy",),
        dtypes=("float16", "float64"),
        families=("spread",),
        scales=scales,
        n_rows=4,
        n_classes=8,
        **changes,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("compare")
    pipeline.run(compare_sweep(), root / "run_a")
    pipeline.run(compare_sweep(), root / "run_b")
    pipeline.run(compare_sweep(scales=(1.0,)), root / "fewer_scales")
    for name, sweep in (("run_a", compare_sweep()), ("run_b", compare_sweep())):
        record_sweep(sweep, root / name)
    shutil.copytree(root / "run_b", root / "adversarial")
    record_sweep(compare_sweep(label="adversarial", seed=4), root / "adversarial")  # settings only: same tables
    return root


def compare_cli(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "harness.tools.compare", *map(str, args)]
    return commands.run(command, REPO, env, timeout=120)


@pytest.mark.slow
@pytest.mark.cli
def test_identical_runs_exit_0_and_write_the_comparison_into_run_b(runs):
    result = compare_cli(runs / "run_a", runs / "run_b")
    assert result.returncode == 0, result.stderr
    assert "16 cells: 0 regressed, 0 status changed, 0 improved, 16 unchanged." in result.stdout
    out = runs / "run_b" / "compare_run_a"
    assert pd.read_parquet(out / "comparison.parquet").empty
    assert (out / "comparison.csv").is_file() and (out / "comparison.png").stat().st_size > 10_000
    assert not list(out.glob(".*.tmp"))


@pytest.mark.slow
@pytest.mark.cli
def test_a_doctored_error_exits_1_and_is_listed(runs, tmp_path):
    doctored = tmp_path / "doctored"
    shutil.copytree(runs / "run_b", doctored)
    errors = pd.read_parquet(doctored / "errors.parquet")
    worse = errors.index[(errors["status"] == "ok") & (errors["max_ulp_err"] > 0.1)][0]
    errors.loc[worse, "max_ulp_err"] *= 100
    errors.to_parquet(doctored / "errors.parquet", index=False)

    result = compare_cli(runs / "run_a", doctored, "--out", tmp_path / "out")
    assert result.returncode == 1, result.stderr
    assert "1 regressed" in result.stdout and "## Worst regressions" in result.stdout
    listed = pd.read_csv(tmp_path / "out" / "comparison.csv")
    assert len(listed) == 1 and listed["change"].item() == "regressed"
    expected = errors.loc[worse]
    assert listed[["path", "dtype", "scale"]].iloc[0].tolist() == [
        expected["path"],
        expected["dtype"],
        expected["scale"],
    ]
    assert listed["ulp_err_ratio"].item() == pytest.approx(100)


@pytest.mark.slow
@pytest.mark.cli
@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("missing", "error: RUN_A folder not found: "),
        ("no_table", "error: RUN_B folder "),
        ("fewer_scales", "error: mismatched grids: 8 cells only in RUN_A, 0 only in RUN_B (e.g. only in A: "),
    ],
)
def test_bad_input_exits_2_with_one_line(runs, tmp_path, which, message):
    run_a, run_b = runs / "run_a", runs / "run_b"
    if which == "missing":
        run_a = tmp_path / "no_such_run"
    elif which == "no_table":
        run_b = tmp_path
    else:
        run_b = runs / "fewer_scales"
    result = compare_cli(run_a, run_b, "--out", tmp_path / "out")
    assert result.returncode == 2
    assert result.stderr.startswith(message) and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stdout == "" and not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.cli
def test_runs_with_other_settings_are_refused_unless_allowed(runs, tmp_path):
    result = compare_cli(runs / "run_a", runs / "adversarial", "--out", tmp_path / "out")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: the runs differ in settings other than the grid: label, seed (label: A ")
    assert "--allow-different-settings" in result.stderr and not (tmp_path / "out").exists()
    allowed = compare_cli(runs / "run_a", runs / "adversarial", "--out", tmp_path / "out", "--allow-different-settings")
    assert allowed.returncode == 0, allowed.stderr
    assert "16 cells: 0 regressed, 0 status changed, 0 improved, 16 unchanged." in allowed.stdout
