"""harness.tools.matrix: version sets, bad input before any environment, the matrix tables, and a real
two-version matrix (optax 0.2.5 and 0.2.8, whose JAX `fused` path changed from log(sum(exp(x - max))) -
(x[y] - max) to logsumexp(x) - x[y], which loses the bits of max(x) on offset logits)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.tools import matrix, matrix_envs, matrix_sets, matrix_tables
from harness.tools.matrix_sets import BadInput, VersionSet

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "pages" / "how-to" / "version-matrix.md"


def page_commands() -> list[list[str]]:
    """The arguments of every `harness-matrix` line of the how-to page, in order."""
    lines = [line.strip() for line in PAGE.read_text().splitlines() if line.strip().startswith("harness-matrix ")]
    return [shlex.split(line)[1:] for line in lines]


PAGE_MATRIX = page_commands()[0]  # the page's real matrix (optax 0.2.5 against 0.2.8)
PAGE_GRID = PAGE_MATRIX[: PAGE_MATRIX.index("--versions")]
GRID = [
    "frameworks=[jax]",
    "paths=[fused,log_softmax_nll]",
    "dtypes=[float32]",
    "families=[offset,spread]",
    "scales=[1,100,10000]",
    "n_rows=16",
    "n_classes=100",
    "progress=false",
]


# --- version sets -----------------------------------------------------------------------------------


def test_one_set_per_version_and_single_versions_in_every_set():
    sets = matrix_sets.parse_versions(["scipy==1.14.1,1.15.3", "numpy==2.2.6"])
    assert [s.pins for s in sets] == [
        (("scipy", "1.14.1"), ("numpy", "2.2.6")),
        (("scipy", "1.15.3"), ("numpy", "2.2.6")),
    ]
    assert [s.label for s in sets] == ["scipy-1.14.1", "scipy-1.15.3"]  # the label names what changes


def test_specs_with_several_versions_are_zipped_and_companions_follow():
    sets = matrix_sets.parse_versions(["jax==0.6.2,0.10.2", "optax==0.2.5,0.2.8"])
    assert sets[0].requirement_lines() == ["jax==0.6.2", "optax==0.2.5", "jaxlib==0.6.2"]  # jaxlib with jax
    assert sets[1].label == "jax-0.10.2_optax-0.2.8"
    named = matrix_sets.parse_versions(["jax==0.6.2,0.10.2", "jaxlib==0.6.2,0.10.2"])
    assert named[0].requirement_lines() == ["jax==0.6.2", "jaxlib==0.6.2"]  # named: not added twice


@pytest.mark.parametrize(
    "specs, words",
    [
        (["optax=0.2.5,0.2.8"], "malformed --versions 'optax=0.2.5,0.2.8'"),
        (["optax==0.2.5,x.y"], "malformed version 'x.y'"),
        (["optax==0.2.5"], "at least two version sets"),
        (["optax==0.2.5,0.2.8", "jax==0.6.2,0.7.0,0.10.2"], "different numbers of versions (optax 2, jax 3)"),
        (["optax==0.2.5,0.2.5"], "the same set twice"),
        (["optax==0.2.5,0.2.8", "Optax==0.2.6"], "named twice"),
    ],
)
def test_malformed_version_sets(specs, words):
    with pytest.raises(BadInput, match=None) as caught:
        matrix_sets.parse_versions(specs)
    assert words in str(caught.value)


def test_used_packages_follow_the_frameworks_requirements():
    used = matrix_sets.used_packages(["jax"])
    assert {"jax", "jaxlib", "optax", "numpy", "ml-dtypes", "mpmath", "scipy"} <= set(used)
    assert "torch" not in used and "pandas" not in used
    assert "torch" in matrix_sets.used_packages(["torch"])


def test_overlay_holds_only_what_differs_from_the_base():
    base = matrix_sets.base_distributions()
    numpy_version = base["numpy"][1]
    vset = VersionSet((("optax", "0.2.5"),), "optax-0.2.5")
    resolved = {"optax": ("optax", "0.2.5"), "numpy": ("numpy", numpy_version), "chex": ("chex", "0.1.92")}
    expected = ["optax==0.2.5"] + (["chex==0.1.92"] if base.get("chex", (0, 0))[1] != "0.1.92" else [])
    assert sorted(matrix_envs.overlay_pins(resolved, vset)) == sorted(expected)


def test_resolver_holds_every_other_package_to_the_base():
    base = matrix_sets.base_distributions()
    roots, constraints = matrix_envs.resolver_inputs(VersionSet((("optax", "0.2.5"),), "x"), base)
    assert roots[0] == "optax==0.2.5" and not any(r.startswith("optax==0.2.8") for r in roots)
    assert f"numpy=={base['numpy'][1]}" in constraints
    assert not any(c.lower().startswith(("optax==", "harness==")) for c in constraints)


# --- bad input: one line, exit 2, nothing built ----------------------------------------------------


def run_main(capsys, tmp_path, *argv):
    cache, out = tmp_path / "envs", tmp_path / "out"
    code = matrix.main([*argv, "--env-cache", str(cache), "--out", str(out)])
    err = capsys.readouterr().err
    return code, err, cache, out


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv, words",
    [
        ([*GRID, "--versions", "optax=0.2.5"], "malformed --versions"),
        ([*GRID, "dtypes=[float8]", "--versions", "optax==0.2.5,0.2.8"], "float8"),
        ([*GRID, "--versions", "torch==2.12.0,2.13.0"], "package 'torch' is not used by experiment default"),
        (
            [*GRID, "--versions", "harness-no-such-package-x7q==1.0,2.0"],
            "unknown package 'harness-no-such-package-x7q'",
        ),
        ([*GRID, "--versions", "optax==0.2.5,9.9.9"], "optax==9.9.9 is not on the package index; versions it has:"),
        (GRID, "no --versions given"),
        ([*GRID, "hydra.run.dir=x", "--versions", "optax==0.2.5,0.2.8"], "'hydra.run.dir=x': the matrix runs each"),
    ],
)
def test_bad_input_fails_before_any_environment(capsys, tmp_path, argv, words):
    code, err, cache, out = run_main(capsys, tmp_path, *argv)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert words in err
    assert not out.exists()
    assert not [p for p in cache.glob("*") if p.name != "resolved"]  # no environment (a set resolved is kept)


@pytest.mark.slow
def test_a_set_that_does_not_resolve_names_the_conflict(capsys, tmp_path):
    """SciPy 1.14.1 requires numpy<2.3; the base holds numpy at its pinned version. Bad input as above: one
    line, exit 2, no environment."""
    code, err, cache, out = run_main(capsys, tmp_path, "frameworks=[numpy]", "--versions", "scipy==1.14.1,1.17.1")
    assert code == 2 and "scipy==1.14.1" in err and "numpy" in err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "does not resolve" in err
    assert not out.exists()
    assert not [p for p in cache.glob("*") if p.name != "resolved"]


def test_resume_needs_a_matrix_folder_and_the_same_request(capsys, tmp_path):
    assert matrix.main(["--resume", str(tmp_path)]) == 2
    assert "no matrix.json there" in capsys.readouterr().err
    request = matrix.request_of(matrix.parser().parse_args([*GRID, "--versions", "optax==0.2.5,0.2.8"]))
    (tmp_path / "matrix.json").write_text(json.dumps(request))
    assert matrix.main(["--resume", str(tmp_path), "--versions", "optax==0.2.4,0.2.8"]) == 2
    assert "changes the stored matrix's versions" in capsys.readouterr().err
    assert matrix.main(["--out", str(tmp_path), *GRID, "--versions", "optax==0.2.5,0.2.8"]) == 2
    assert f"{tmp_path} already holds a matrix" in capsys.readouterr().err


# --- tables from run folders -----------------------------------------------------------------------


def errors_table(rows) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["framework", "path", "dtype", "family", "scale", "status", "max_ulp_err"])
    return frame.assign(n_rows=16, n_classes=100, median_ulp_err=frame["max_ulp_err"] / 2, n_nonfinite=0, message="")


def write_run(folder: Path, rows) -> None:
    folder.mkdir(parents=True)
    errors_table(rows).to_parquet(folder / "errors.parquet")


def test_tables_rank_changes_in_compares_words(tmp_path):
    """A -> B: numpy's cell at 1e4 ok -> nan and JAX's at 1e4 (0.76 -> 1492 ulp) and 100 (0.79 -> 16)
    regress; B -> C: JAX's at 1e4 improves (1492 -> 0.8). 16 > 0.79 * 1.5 + 1 = 2.185; 1.2 < 0.8 * 1.5 + 1."""
    cells = [("jax", "fused", "float32", "offset", s) for s in (1.0, 100.0, 1e4)]
    numpy_cell = ("numpy", "fused", "float32", "offset", 1e4)
    write_run(
        tmp_path / "A",
        [(*cells[0], "ok", 0.8), (*cells[1], "ok", 0.79), (*cells[2], "ok", 0.76)] + [(*numpy_cell, "ok", 0.5)],
    )
    write_run(
        tmp_path / "B",
        [(*cells[0], "ok", 1.2), (*cells[1], "ok", 16.0), (*cells[2], "ok", 1492.0)] + [(*numpy_cell, "nan", np.nan)],
    )
    write_run(tmp_path / "C", [(*cells[0], "ok", 1.2), (*cells[1], "ok", 16.0), (*cells[2], "ok", 0.8)])
    reasons = {"C": {"numpy": "does not import with numpy==1.0: ImportError: gone"}}
    sets = pd.DataFrame({"version_set": ["A", "B", "C"]})
    regressed = matrix_tables.write_outputs(tmp_path, ["A", "B", "C"], reasons, sets, (0.5, 1.0), "cmd")
    assert regressed == 3
    table = pd.read_parquet(tmp_path / "matrix.parquet")
    assert len(table) == 12 and list(table["version_set"].unique()) == ["A", "B", "C"]
    gone = table[(table["version_set"] == "C") & (table["framework"] == "numpy")].iloc[0]
    assert gone["status"] == "unsupported" and "ImportError: gone" in gone["message"]
    changes = pd.read_csv(tmp_path / "changes.csv")
    got = list(zip(changes["change"], changes["set_a"], changes["framework"], changes["scale"], strict=True))
    assert got == [
        ("regressed", "A", "numpy", 1e4),  # a status change first
        ("regressed", "A", "jax", 1e4),  # then the largest move: x1963
        ("regressed", "A", "jax", 100.0),  # x20.3
        ("status changed", "B", "numpy", 1e4),  # nan -> unsupported
        ("improved", "B", "jax", 1e4),
    ]
    assert changes["ulp_err_ratio"].iloc[1] == pytest.approx(1492 / 0.76)
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("# Changes across A -> B -> C") and "3 regressed, 1 status changed, 1 improved" in report
    assert (tmp_path / "plots" / "error_vs_scale_jax_fused_float32.png").stat().st_size > 0


def test_cells_of_several_loss_options_are_compared_option_by_option(tmp_path):
    """label_smoothing 0 and 0.1 share compare's key; each is compared with its own: only 0.1's moved."""
    cell = ("jax", "fused", "float32", "offset", 100.0)
    for label, moved in (("A", 0.7), ("B", 9.0)):
        frame = errors_table([(*cell, "ok", 0.7), (*cell, "ok", moved)]).assign(label_smoothing=[0.0, 0.1])
        (tmp_path / label).mkdir()
        frame.assign(softcap=None).to_parquet(tmp_path / label / "errors.parquet")
    sets = pd.DataFrame({"version_set": ["A", "B"]})
    assert matrix_tables.write_outputs(tmp_path, ["A", "B"], {}, sets, (0.5, 1.0), "cmd") == 1
    changes = pd.read_csv(tmp_path / "changes.csv")
    assert changes[["change", "label_smoothing", "max_ulp_err_b"]].values.tolist() == [["regressed", 0.1, 9.0]]
    assert len(pd.read_parquet(tmp_path / "matrix.parquet")) == 4


def test_a_failed_run_is_rows_with_status_error_and_why(tmp_path):
    """A set whose run failed leaves no errors table: its cells are the other sets', status error, with the
    run's error line; ok -> error regresses."""
    write_run(tmp_path / "A", [("jax", "fused", "float64", "offset", 1.0, "ok", 0.5)])
    (tmp_path / "B").mkdir()
    reasons = {"B": {matrix_tables.RUN_FAILED: "AttributeError: module 'jax' has no attribute 'enable_x64'"}}
    sets = pd.DataFrame({"version_set": ["A", "B"]})
    assert matrix_tables.write_outputs(tmp_path, ["A", "B"], reasons, sets, (0.5, 1.0), "cmd") == 1
    row = pd.read_parquet(tmp_path / "matrix.parquet").iloc[1]
    assert (row["version_set"], row["status"], np.isnan(row["max_ulp_err"])) == ("B", "error", True)
    assert row["message"] == (
        "the run of this version set failed: AttributeError: module 'jax' has no attribute 'enable_x64'"
    )


def test_a_failed_runs_reason_is_its_error_line():
    stderr = "[2026-12-07][harness][INFO] - sweep\nTraceback (most recent call last):\n  File x\n"
    stderr += "AttributeError: module 'jax' has no attribute 'enable_x64'\n\n"
    stderr += "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.\n"
    assert matrix.failure_line(stderr) == "AttributeError: module 'jax' has no attribute 'enable_x64'"
    assert matrix.failure_line("error: unknown framework 'jx'; valid choices: numpy\n").startswith("error: unknown")


def test_a_runs_stderr_passes_through_and_its_tail_is_kept(capfd):
    code = "import sys; sys.stderr.write('bar \\u2588' * 3 + '\\nValueError: boom\\n'); sys.exit(3)"
    returncode, tail = matrix.run_showing_stderr([sys.executable, "-c", code], kept=19)
    assert returncode == 3 and tail == "\u2588\nValueError: boom\n"
    assert "bar \u2588bar" in capfd.readouterr().err


# --- a real matrix (downloads optax 0.2.5 and chex once) --------------------------------------------


def separate_run(python: list[str], folder: Path, env: dict | None = None) -> pd.DataFrame:
    command = [*python, "-m", "harness", *PAGE_GRID, "progress=false", f"hydra.run.dir={folder}"]
    subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True)
    return pd.read_parquet(folder / "errors.parquet")


@pytest.fixture(scope="module")
def real_matrix(tmp_path_factory):
    if matrix_sets.index_versions("optax", matrix_sets.Sources()) is None:
        pytest.skip("the package index is out of reach")
    root = tmp_path_factory.mktemp("matrix")
    cache = Path(os.environ.get(matrix_envs.ENV_CACHE_VARIABLE) or root / "envs")
    out = root / "m"
    code = matrix.main(["progress=false", *PAGE_MATRIX, "--out", str(out), "--env-cache", str(cache)])
    return code, out, cache


@pytest.mark.slow
def test_real_matrix_matches_two_separate_runs_and_ranks_the_change_first(real_matrix, tmp_path):
    code, out, _ = real_matrix
    assert code == 1  # something regressed
    table = pd.read_parquet(out / "matrix.parquet")
    sets = pd.read_csv(out / "sets.csv")
    assert list(sets["imports"]) == ["optax 0.2.5", "optax 0.2.8"]
    # optax 0.2.5 on its own, put in front of the harness's environment by PYTHONPATH (not the matrix's overlay)
    target = tmp_path / "optax_0_2_5"
    pins = [p for p in sets["env_pins"].iloc[0].split() if not p.startswith("harness")]
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), *pins], check=True
    )
    old = separate_run([sys.executable], tmp_path / "old", dict(os.environ, PYTHONPATH=str(target)))
    new = separate_run([sys.executable], tmp_path / "new")  # the pinned optax 0.2.8
    key = ["framework", "path", "dtype", "family", "scale"]
    for label, run in (("optax-0.2.5", old), ("optax-0.2.8", new)):
        rows = table[table["version_set"] == label].merge(run, on=key, suffixes=("", "_run"))
        assert len(rows) == len(run) == 60
        for column in ("status", "max_ulp_err", "median_ulp_err", "n_nonfinite"):
            assert rows[column].tolist() == rows[f"{column}_run"].tolist(), column  # bit for bit
    changes = pd.read_csv(out / "changes.csv")
    first = changes.iloc[0]
    assert (first["change"], first["path"], first["family"], first["scale"]) == ("regressed", "fused", "offset", 1e4)
    assert first["max_ulp_err_b"] > 100 * first["max_ulp_err_a"]  # logsumexp(x) - x[y] loses max's bits
    assert set(changes["path"]) == {"fused"}  # jax's own log_softmax is the same in both sets
    assert (out / "plots" / "error_vs_scale_jax_fused_float32.png").is_file()


@pytest.mark.slow
def test_the_pages_excerpt_is_what_its_command_finds(real_matrix):
    """The how-to page's counts and table rows are the first lines of the changes.md its command writes."""
    _, out, _ = real_matrix
    found = (out / "changes.md").read_text().splitlines()
    page = PAGE.read_text().splitlines()
    rows = [line for line in page if line.startswith("| regressed |")]
    counts = [line for line in page if re.match(r"\d+ cells per version set", line)]
    assert rows and rows == [line for line in found if line.startswith("|")][2 : 2 + len(rows)]
    assert counts == [line for line in found if re.match(r"\d+ cells per version set", line)]


def test_every_command_of_the_page_parses():
    for argv in page_commands():
        args = matrix.parser().parse_intermixed_args(argv)
        assert args.versions or args.resume
    assert PAGE_MATRIX[-2:] == ["--versions", "optax==0.2.5,0.2.8"]


@pytest.mark.slow
def test_a_second_matrix_creates_nothing_and_an_interrupted_one_resumes(real_matrix):
    code, out, cache = real_matrix
    envs = sorted(p.name for p in cache.iterdir())
    before = pd.read_parquet(out / "matrix.parquet")
    # the second set stopped after two cells: its journal cut short, its tables gone
    unfinished = out / "optax-0.2.8"
    journal = unfinished / "cells.jsonl"
    journal.write_text("".join(journal.read_text().splitlines(keepends=True)[:2]))
    for name in os.listdir(unfinished):
        if name.endswith((".parquet", ".csv")):
            (unfinished / name).unlink()
    for name in ("matrix.parquet", "matrix.csv", "changes.csv"):
        (out / name).unlink()
    assert matrix.main(["--resume", str(out), "--env-cache", str(cache)]) == code
    sets = pd.read_csv(out / "sets.csv")
    assert list(sets["outcome"]) == ["kept", "resumed"]
    assert list(sets["env_created"]) == [False, False]
    assert sorted(p.name for p in cache.iterdir()) == envs  # no environment built
    after = pd.read_parquet(out / "matrix.parquet")
    pd.testing.assert_frame_equal(after, before)


@pytest.mark.slow
def test_pip_builds_the_same_overlay(tmp_path):
    """Without uv: venv + pip resolve and install the same packages, and the named version imports."""
    if matrix_sets.index_versions("optax", matrix_sets.Sources()) is None:
        pytest.skip("the package index is out of reach")
    vset = matrix_sets.parse_versions(["optax==0.2.5,0.2.8"])[0]
    sources = matrix_sets.Sources(find_links=matrix_sets.pip_find_links())  # as the matrix passes them
    pins = matrix_envs.overlay_pins(matrix_envs.resolve(vset, sources, "pip"), vset)
    assert pins == matrix_envs.overlay_pins(matrix_envs.resolve(vset, sources, "uv"), vset)
    assert "optax==0.2.5" in pins and any(p.startswith("chex==") for p in pins)
    env = matrix_envs.build(vset, pins, sources, tmp_path, "pip")
    found = matrix_envs.probe(env, vset, ["jax"], REPO)
    assert found["packages"]["optax"]["version"] == "0.2.5" and found["frameworks"] == {"jax": None}
    assert shutil.which("python", path=str(env.python.parent))
