"""The package as a user installs it: a wheel built from this tree, installed into a fresh environment,
run from a folder outside the checkout through `python -m harness` and the console commands.

The environment sees this interpreter's packages (numpy, torch, ...) through a .pth file, so the wheel
installs with --no-deps in seconds; the checkout is never on its path: what runs is the installed copy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

from harness import package

SOURCES = ("pyproject.toml", "README.md", "harness", "conf", "experiments")
COMMANDS = ("harness", "harness-report", "harness-compare", "harness-merge", "harness-matrix")


def test_the_package_list_names_every_package_folder_and_nothing_at_the_top_but_harness():
    settings = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {
        ".".join(p.parent.relative_to(REPO).parts)
        for p in (REPO / "harness").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert folders <= set(settings["packages"]), "add the new package folder to [tool.setuptools] packages"
    assert {name.split(".")[0] for name in settings["packages"]} == {"harness"}
    assert settings["package-dir"] == {"harness.conf": "conf", "harness.experiments": "experiments"}


def test_this_checkout_finds_its_configurations_and_studies_through_the_package():
    assert package.CONF_DIR == REPO / "conf" and (package.CONF_DIR / "config.yaml").is_file()
    assert package.study("seed_article").REQUIRES == {"row_errors": True}
    assert package.study("precision_sweep") is None  # configuration only


def test_the_api_names_the_run_folder_as_its_user_gives_it(tmp_path):
    import harness
    from harness.errors import ConfigError
    from harness.sweep.run_dir import SWEEP

    (tmp_path / SWEEP).write_text("{}")
    with pytest.raises(
        ConfigError, match=r"already holds a run; resume it with resume=true, or choose another run_dir$"
    ):
        harness.run("seed_article", ["frameworks=[numpy]"], run_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"holds no run \(no sweep.json\); give run_dir=<the run folder>$"):
        harness.run("seed_article", ["frameworks=[numpy]", "resume=true"], run_dir=tmp_path / "empty")


def test_an_editable_install_is_told_to_install_the_extra_from_its_checkout(monkeypatch):
    monkeypatch.setattr(package, "editable_checkout", lambda dist=None: REPO)
    assert package.install_line("tensorflow", "declared") == f"pip install -e '{REPO}[tensorflow]'"
    assert package.install_line("numpy", "pip install numpy") == "pip install numpy"  # no such extra


def test_a_plain_install_is_told_the_extras_own_requirements(monkeypatch):
    monkeypatch.setattr(package, "editable_checkout", lambda dist=None: None)
    assert package.install_line("tensorflow", "declared") == "pip install 'tensorflow-cpu==2.21.0'"


# --- the built wheel, installed ----------------------------------------------------------------------


def _copy_sources(target: Path) -> None:
    """The files `pip install .` reads, so that building writes nothing into the checkout."""
    import shutil

    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=ignore)
        else:
            shutil.copy2(source, target / name)


def _run(args, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["HYDRA_FULL_ERROR"] = "0"
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """The wheel and a fresh environment holding it; `bin` is that environment's scripts folder."""
    build = tmp_path_factory.mktemp("build")
    source = build / "source"
    source.mkdir()
    _copy_sources(source)
    dist = build / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # --no-build-isolation: setuptools from this environment, nothing downloaded
    built = _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", dist, source], cwd=build)
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("harness-*.whl")
    env = build / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", env], check=True)
    python = env / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], build).stdout.strip())
    (site / "parent_packages.pth").write_text(sysconfig.get_path("purelib") + "\n")  # numpy, torch, ... not harness
    done = _run([*pip, "--python", python, "install", "--no-deps", "--no-index", wheel], cwd=build)
    assert done.returncode == 0, done.stderr
    work = tmp_path_factory.mktemp("work")  # a folder outside the checkout
    return {"wheel": wheel, "python": python, "bin": env / "bin", "site": site, "work": work}


@pytest.mark.slow
def test_the_wheel_ships_the_configurations_and_studies_inside_the_package(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    tops = {name.split("/")[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"harness"}  # no top-level `experiments`
    expected = ["harness/conf/config.yaml", "harness/conf/experiment/seed_article.yaml"]
    expected += ["harness/experiments/seed_article.py"]
    assert set(expected) <= set(names)
    yamls = {p.name for p in (REPO / "conf" / "experiment").glob("*.yaml")}
    assert yamls == {n.rsplit("/", 1)[1] for n in names if n.startswith("harness/conf/experiment/")}
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(installed["wheel"]).read(entry_points).decode()
    assert all(f"{command} = " in text for command in COMMANDS)


@pytest.mark.slow
def test_the_installed_copy_runs_outside_the_checkout(installed):
    work, python = installed["work"], installed["python"]
    where = _run([python, "-c", "import harness, harness.package as p; print(harness.__file__, p.CONF_DIR)"], work)
    module_file, conf_dir = where.stdout.split()
    assert Path(module_file).is_relative_to(installed["site"]), where.stdout  # not the checkout
    assert Path(conf_dir) == installed["site"] / "harness" / "conf"
    line = _run([python, "-c", "from harness import package; print(package.install_line('tensorflow', ''))"], work)
    assert line.stdout.strip() == "pip install 'tensorflow-cpu==2.21.0'"  # no `-e` to a wheel's user

    ran = _run([python, "-m", "harness", "experiment=seed_article"], work)
    assert ran.returncode == 0, ran.stderr[-3000:]
    (run_dir,) = (work / "results" / "seed_article").iterdir()  # results/ in the working folder
    assert (run_dir / "errors.parquet").is_file() and (run_dir / "report.html").is_file()
    assert "5.0696199767698928e-09" in ran.stdout  # the exact third loss of the seed article's table


@pytest.fixture(scope="module")
def through_api(installed) -> subprocess.CompletedProcess:
    """The installed copy's API run into `api` of the working folder: seed_article with NumPy."""
    api = "import harness; print(len(harness.run('seed_article', ['frameworks=[numpy]'], run_dir='api').errors))"
    return _run([installed["python"], "-c", api], installed["work"])


@pytest.mark.slow
def test_the_installed_api_runs_outside_the_checkout(installed, through_api):
    assert through_api.returncode == 0, through_api.stderr[-3000:]
    assert (installed["work"] / "api" / "errors.parquet").is_file() and int(through_api.stdout.split()[-1]) > 0


@pytest.mark.slow
def test_the_console_commands_run_the_harness_and_its_tools(installed, through_api):
    work, bin_dir = installed["work"], installed["bin"]
    first, second = work / "console_a", work / "api"  # the same settings: the console's run and the API's
    ran = _run([bin_dir / "harness", "experiment=seed_article", "frameworks=[numpy]", f"hydra.run.dir={first}"], work)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert through_api.returncode == 0, through_api.stderr[-3000:]
    bad = _run([bin_dir / "harness", "experiment=nope"], work)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown experiment 'nope'; valid choices:")

    (first / "report.html").unlink()
    report = _run([bin_dir / "harness-report", first], work)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (first / "report.html").is_file()
    compared = _run([bin_dir / "harness-compare", first, second, "--out", work / "comparison"], work)
    assert compared.returncode == 0, compared.stderr[-3000:]  # the same numbers: nothing regressed
    assert (work / "comparison" / "comparison.md").is_file()
    for command in ("harness-merge", "harness-matrix"):
        shown = _run([bin_dir / command, "--help"], work)
        assert shown.returncode == 0 and shown.stdout.startswith(f"usage: {command}"), shown.stderr[-3000:]
