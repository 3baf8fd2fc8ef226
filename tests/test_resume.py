"""Nothing lost: the journal, killed and interrupted runs, resuming, and what produced a result."""

import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import REPO, run_cli

from harness.sweep import journal

GRID = [
    "experiment=precision_sweep",
    "frameworks=[numpy]",
    "dtypes=[float16,bfloat16]",
    "scales=${logspace:-1,3,12}",
    "n_rows=128",
    "n_classes=1000",
    "progress=false",
    "timing.enabled=false",
]
N_CELLS = 1 * 4 * 2 * 2 * 12


def start(run_dir, *extra):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "harness", *GRID, f"hydra.run.dir={run_dir}", *extra]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_cells(run_dir, count, process, timeout=120):
    path = run_dir / journal.JOURNAL
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") >= count:
            return
        if process.poll() is not None:
            raise AssertionError(f"the run ended before {count} cells: {process.stderr.read()}")
        time.sleep(0.02)
    raise AssertionError("the run did not reach the cells in time")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    result = run_cli(*GRID, f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr
    return pd.read_parquet(out / "errors.parquet")


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_tables(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    process = start(run_dir)
    wait_for_cells(run_dir, 30, process)
    process.kill()  # SIGKILL: no clean-up at all
    process.wait()
    kept = len(journal.read(run_dir / journal.JOURNAL))
    assert 30 <= kept < N_CELLS
    assert not (run_dir / "errors.parquet").exists()
    result = run_cli(*GRID, f"hydra.run.dir={run_dir}", "resume=true")
    assert result.returncode == 0, result.stderr
    assert len(journal.read(run_dir / journal.JOURNAL)) == N_CELLS  # only the missing cells were added
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "errors.parquet"), uninterrupted)


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_says_how_to_resume(tmp_path):
    run_dir = tmp_path / "run"
    process = start(run_dir)
    wait_for_cells(run_dir, 10, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "resume=true" in stderr and "Traceback" not in stderr
    assert len(journal.read(run_dir / journal.JOURNAL)) >= 10


@pytest.fixture(scope="module")
def one_scale(tmp_path_factory):
    """A finished run of one scale; tests that change it take a copy."""
    run_dir = tmp_path_factory.mktemp("one_scale") / "run"
    assert run_cli(*GRID, "scales=[1]", f"hydra.run.dir={run_dir}").returncode == 0
    return run_dir


@pytest.mark.slow
def test_resume_with_another_config_is_refused_naming_the_keys(tmp_path, one_scale):
    run_dir = tmp_path / "run"
    shutil.copytree(one_scale, run_dir)  # as if run with hydra.run.dir=run_dir
    before = (run_dir / "errors.csv").read_text()
    result = run_cli(*GRID, "scales=[1]", "seed=7", "n_rows=64", f"hydra.run.dir={run_dir}", "resume=true")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: resume refused: the config differs from the stored run in n_rows, seed "
        "(n_rows: stored 128, now 64; seed: stored 0, now 7)"
    ]
    assert (run_dir / "errors.csv").read_text() == before  # the stored run is untouched
    again = run_cli(*GRID, "scales=[1]", f"hydra.run.dir={run_dir}")
    assert again.returncode == 2 and "already holds a run" in again.stderr


@pytest.mark.slow
def test_resume_needs_an_existing_run(tmp_path):
    result = run_cli(*GRID, f"hydra.run.dir={tmp_path / 'none'}", "resume=true")
    assert result.returncode == 2 and "holds no run" in result.stderr
    assert not (tmp_path / "none").exists()


def test_journal_drops_a_torn_last_line(tmp_path):
    cells = journal.Journal(tmp_path)
    cells.append({"cell": {"framework": "numpy", "path": "fused", "dtype": "float16", "family": "spread",
                           "scale": 1.0, "n_rows": 2, "n_classes": 3}})  # fmt: skip
    cells.close()
    with (tmp_path / journal.JOURNAL).open("a") as f:
        f.write('{"cell": {"framework": "nu')  # killed mid-write
    reopened = journal.Journal(tmp_path)
    assert len(reopened.records) == 1
    reopened.append({"cell": dict(reopened.records[0]["cell"], scale=2.0)})
    reopened.close()
    assert [r["cell"]["scale"] for r in journal.read(tmp_path / journal.JOURNAL)] == [1.0, 2.0]


@pytest.mark.slow
def test_environment_records_what_produced_the_result(one_scale):
    run_dir = one_scale
    env = json.loads((run_dir / "environment.json").read_text())
    for package in ("numpy", "torch", "jax", "jaxlib", "optax", "pandas", "hydra-core", "ml_dtypes", "mpmath"):
        assert env["packages"][package] == importlib.metadata.version(package)
    assert env["python"].startswith(sys.version.split()[0])
    assert env["cpu"]["cores"] == os.cpu_count() and env["cpu"]["model"]
    assert env["seed"] == 0 and env["device"] == "cpu"
    assert "hydra.run.dir=" + str(run_dir) in env["command"]
    assert env["config"]["n_rows"] == 128 and env["config"]["scales"] == [1]
    assert isinstance(env["threads"]["threadpools"], list)
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert env["harness"]["commit"] == head.stdout.strip()
        assert isinstance(env["harness"]["dirty"], bool)


@pytest.mark.slow
def test_resume_under_other_software_is_refused(tmp_path, one_scale):
    run_dir = tmp_path / "run"
    shutil.copytree(one_scale, run_dir)  # as if run with hydra.run.dir=run_dir
    environment = json.loads((run_dir / "environment.json").read_text())
    environment["packages"]["numpy"] = "1.0.0"  # as if made by another NumPy
    (run_dir / "environment.json").write_text(json.dumps(environment))
    result = run_cli(*GRID, "scales=[1]", f"hydra.run.dir={run_dir}", "resume=true")
    assert result.returncode == 2
    assert "resume refused: the software differs from the stored run (numpy: stored 1.0.0, now" in result.stderr
    assert json.loads((run_dir / "environment.json").read_text())["packages"]["numpy"] == "1.0.0"  # kept


def test_a_run_recorded_before_n_rows_took_lists_still_matches():
    """sweep.json of older runs holds n_rows as one number and lacks settings added since."""
    from harness.sweep.run_dir import differing_keys

    defaults = {"edge_cases": False, "option_sets": None}
    stored = {"n_rows": 64, "seed": 0}
    current = {"n_rows": [64], "seed": 0, "edge_cases": False, "option_sets": None}
    assert differing_keys(stored, current, defaults) == []
    assert differing_keys(stored, current | {"n_rows": [64, 128]}, defaults) == ["n_rows"]
    assert differing_keys(stored, current | {"edge_cases": True}, defaults) == ["edge_cases"]


def test_package_versions_find_an_import_name_installed_under_another_distribution():
    from harness.sweep.machine import package_versions

    versions = package_versions(("tensorflow", "numpy", "no_such_package_here"))
    assert versions["numpy"] == importlib.metadata.version("numpy") and versions["no_such_package_here"] is None
    try:
        expected = importlib.metadata.version("tensorflow-cpu")  # the extra installs TensorFlow under this name
    except importlib.metadata.PackageNotFoundError:
        expected = None
    if expected is not None:
        assert versions["tensorflow"] == expected
