"""The accuracy grid over several processes (`workers`): the same tables, bit for bit, as one process."""

from dataclasses import replace

import pandas as pd
import pytest

from harness import api, pipeline
from harness.errors import ConfigError
from harness.sweep import journal, workers

GRID = [
    "experiment=precision_sweep",
    "frameworks=[numpy,torch]",
    "dtypes=[float16,float32,float64]",
    "scales=${logspace:-1,3,7}",
    "n_rows=32",
    "n_classes=300",
    "progress=false",
    "timing.enabled=false",
]
TABLES = ("errors", "breaks", "breakdown")


def sweep_of(*overrides):
    cfg = api.compose_config(list(overrides))
    job, name = api.settings_of(cfg)
    return api.prepare(job, name)[0]


def tables(run_dir) -> dict:
    return {name: pd.read_parquet(run_dir / f"{name}.parquet") for name in TABLES}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("one")
    api.run(overrides=[*GRID, "workers=1"], run_dir=run_dir)
    return run_dir


@pytest.mark.slow
def test_two_and_three_processes_write_the_tables_of_one(one_process, tmp_path):
    expected = tables(one_process)
    for n in (2, 3):
        run_dir = tmp_path / f"w{n}"
        api.run(overrides=[*GRID, f"workers={n}"], run_dir=run_dir)
        got = tables(run_dir)
        for name in TABLES:
            pd.testing.assert_frame_equal(got[name], expected[name], check_exact=True, obj=f"{name} with {n} workers")
        assert len(journal.read(run_dir / journal.JOURNAL)) == len(expected["errors"]) == 2 * 4 * 3 * 2 * 7


@pytest.mark.slow
def test_a_resumed_run_gives_the_workers_only_the_missing_cells(one_process, tmp_path):
    run_dir = tmp_path / "resumed"
    run_dir.mkdir()
    for name in ("sweep.json", "environment.json"):
        (run_dir / name).write_text((one_process / name).read_text())
    lines = (one_process / journal.JOURNAL).read_text().splitlines(keepends=True)
    kept = lines[::3]  # a third of the cells, scattered over the grid
    (run_dir / journal.JOURNAL).write_text("".join(kept))
    api.run(overrides=[*GRID, "workers=2", "resume=true"], run_dir=run_dir)
    records = journal.read(run_dir / journal.JOURNAL)
    assert len(records) == len(lines)  # every missing cell measured once, none twice
    assert len({journal.cell_key(r["cell"]) for r in records}) == len(lines)
    for name in TABLES:
        pd.testing.assert_frame_equal(tables(run_dir)[name], tables(one_process)[name], check_exact=True)


def test_auto_uses_two_processes_only_where_they_pay():
    main = sweep_of("experiment=precision_sweep")  # 3200 cells of 256 x 1000
    assert main.workers == "auto"
    assert workers.worker_count(main, available=2) == 2
    assert workers.worker_count(main, available=1) == 1  # one core: a second process only competes
    assert workers.worker_count(replace(main, scales=(1.0,)), available=16) == 1  # 128 cells: not worth a start
    huge = replace(main, n_rows=(10**6,), n_classes=(32,))  # each process would hold its own 3.2e7 logits
    assert workers.worker_count(huge, available=16) == 1
    assert workers.worker_count(replace(main, workers=3), available=1) == 3  # asked for: given
    assert workers.worker_count(replace(main, edge_cases=True), available=16) == 1
    assert workers.second_process_pays(main) and not workers.second_process_pays(replace(main, scales=(1.0,)))


def test_figures_are_drawn_beside_the_bisection_of_a_large_grid_only():
    main = sweep_of("experiment=precision_sweep")  # 3200 cells
    assert pipeline.figures_beside(main)
    assert pipeline.figures_beside(sweep_of("experiment=distillation_kl"))  # 960 cells of 2 x 32000
    assert not pipeline.figures_beside(replace(main, scales=(1.0,)))  # 128 cells
    assert not pipeline.figures_beside(sweep_of("experiment=seed_article"))


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "true"])
def test_a_bad_workers_setting_fails_in_one_line(value):
    with pytest.raises(ConfigError, match=r"workers must be auto or an integer >= 1, got"):
        sweep_of("experiment=precision_sweep", f"workers={value}")


EXITING = """
import atexit, sys, threading, time
from pathlib import Path
from harness.processes import exit_now
out = Path(sys.argv[1])
atexit.register(lambda: (out / "atexit").write_text("ran"))
print("no newline yet", end="")
if sys.argv[2] == "thread":  # a non-daemon thread still running: the interpreter waits for it
    threading.Thread(target=lambda: (time.sleep(0.5), (out / "thread").write_text("done"))).start()
exit_now(3)
"""


@pytest.mark.slow
@pytest.mark.parametrize("other", ["none", "thread"])
def test_exit_now_runs_atexit_flushes_and_keeps_its_status(tmp_path, other):
    """exit_now ends the process without the interpreter's teardown, yet what a normal exit writes
    is written: atexit callbacks, buffered stdout, the status; a running thread is waited for."""
    import subprocess
    import sys

    from harness.processes import python_environment

    done = subprocess.run(
        [sys.executable, "-c", EXITING, str(tmp_path), other], capture_output=True, text=True, env=python_environment()
    )
    assert (done.returncode, done.stdout) == (3, "no newline yet"), done.stderr
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "thread").exists() == (other == "thread")


@pytest.mark.slow
def test_exit_now_leaves_a_profiler_its_file(tmp_path):
    """Under `python -m cProfile` the program returns to the profiler, which then writes its stats."""
    import subprocess
    import sys

    from harness.processes import python_environment

    script = tmp_path / "ends.py"
    script.write_text("from harness.processes import exit_now\nexit_now(0)\n")
    profile = tmp_path / "out.prof"
    done = subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(profile), str(script)],
        capture_output=True,
        text=True,
        env=python_environment(),
    )
    assert done.returncode == 0, done.stderr
    assert profile.stat().st_size > 0
