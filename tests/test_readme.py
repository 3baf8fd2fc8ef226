"""Every command in the README and the documentation runs as written, on small grids, and their Python examples
run: neither can drift.

All commands run in one scratch folder, in reading order (the README, then the pages in the order of the site's
navigation: the comparison needs the runs before it).
To each `python -m harness` command the settings of SMALL that it does not set itself are appended;
nothing else is changed, so default folders (results/<experiment>/<timestamp>/, multirun_<timestamp>/)
are exercised as written. Not run: `pip install` and `python3 -m venv` (no network in a test) and
`python -m pytest` (the suite itself); a line for hardware this machine lacks (a Slurm cluster, a GPU) is composed
and validated only. A Python block whose first line is `# some/file.py` is written
to that file (e.g. *Your own path*'s module, which the next command imports); the others are executed, except an
excerpt, a block with a line of `...` standing for what is left out (shown, not run).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import REPO

pytestmark = [pytest.mark.cli, pytest.mark.slow]

NOT_RUN = ("pip ", "python3 -m venv", ". .venv/bin/activate", "python -m pytest")
SMALL = {
    "frameworks": "[numpy]",
    "dtypes": "[float32]",
    "families": "[spread]",
    "scales": "[1,100]",
    "n_rows": "4",
    "n_classes": "8",
    "timing.enabled": "false",
    "progress": "false",
}
NO_HARDWARE = ("submitit_slurm", "device=cuda")  # only composed and validated (see no_cluster)
TOOLS = ("harness", "harness.tools.compare", "harness.tools.merge", "harness.outputs.report")
DOCS = REPO / "docs"


def reading_order() -> list:
    """The README, then every page of the site's navigation that exists, in its order."""

    def pages(items):
        for item in items:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            yield from pages(value) if isinstance(value, list) else [DOCS / "pages" / value]

    nav = yaml.safe_load((DOCS / "mkdocs.yml").read_text())["nav"]
    return [REPO / "README.md", *(page for page in pages(nav) if page.is_file())]


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)


def readme_steps() -> list[tuple[str, str]]:
    """("command", line) and ("python", source) in reading order; shell lines split at `&&`."""
    steps, seen = [], set()
    for language, body in (block for page in reading_order() for block in code_blocks(page.read_text())):
        if language == "python":
            if not re.search(r"^\s*\.\.\.\s*$", body, flags=re.M):  # an excerpt is shown, not run
                steps.append(("python", body))
            continue
        lines = [line.strip() for line in body.splitlines() if line.strip()]
        if not any(line.startswith(("python", ". ")) for line in lines):
            continue  # a formula or a file layout, not commands
        for line in lines:
            for part in (p.strip() for p in line.split("&&")):
                if not part.startswith(NOT_RUN) and part not in seen:  # a command shown twice runs once
                    seen.add(part)
                    steps.append(("command", part))
    return steps


def small_overrides(words: list[str]) -> list[str]:
    """SMALL's settings that the command does not set; a custom path runs with its own framework."""
    given = {w.split("=", 1)[0].lstrip("+~") for w in words if "=" in w}
    small = {k: v for k, v in SMALL.items() if k not in given}
    custom = re.search(r"custom_paths=\[\{framework: (\w+)", " ".join(words))
    if custom and "frameworks" in small:
        small["frameworks"] = f"[{custom.group(1)}]"
    return [f"{k}={v}" for k, v in small.items()]


def run(words: list[str], cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(cwd)]), HYDRA_FULL_ERROR="0")
    return subprocess.run([sys.executable, *words[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def as_run(command: str) -> list[str]:
    words = shlex.split(command)
    assert words[:2] == ["python", "-m"] and words[2] in TOOLS, command
    if words[2] != "harness":
        return words
    return words + small_overrides(words[3:])


def no_cluster(words: list[str]) -> None:
    """A line for a cluster this machine lacks: every job composed and validated, as the command does before
    launching, and the sweep folder resolved as the launcher resolves it."""
    from harness import api
    from harness.__main__ import check_command_line

    check_command_line(words[3:])
    overrides = [w for w in words[3:] if not w.startswith("-") and "," not in w]
    sweep_dir = str(api.compose_config(overrides).hydra.sweep.dir)
    assert re.fullmatch(r"results/precision_sweep/multirun_[\d_-]+", sweep_dir), sweep_dir


def interrupted_run(words: list[str], cwd) -> None:
    """What a resume line needs: the run it names, cut to its first cell as if killed."""
    first = [w for w in words if w != "resume=true"]
    assert run(first, cwd).returncode == 0
    (run_dir,) = [w.split("=", 1)[1] for w in words if w.startswith("hydra.run.dir=")]
    journal = cwd / run_dir / "cells.jsonl"
    journal.write_text(journal.read_text().splitlines(keepends=True)[0])


@pytest.mark.slow
def test_every_command_and_example_of_the_readme_and_the_docs_runs(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "my_logits.npz", logits=rng.standard_normal((3, 5)), labels=np.array([0, 4, 2]))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    steps = readme_steps()
    assert sum(kind == "command" for kind, _ in steps) >= 20 and sum(kind == "python" for kind, _ in steps) >= 3
    for kind, text in steps:
        first_line = text.splitlines()[0]
        if kind == "python" and re.fullmatch(r"# [\w/]+\.py", first_line):
            (tmp_path / first_line[2:]).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / first_line[2:]).write_text(text)
        elif kind == "python":
            exec(compile(text, "<python block>", "exec"), {})
        else:
            words = as_run(text)
            if any(hardware in w for w in words for hardware in NO_HARDWARE):
                no_cluster(words)
                continue
            if "resume=true" in words:
                interrupted_run(words, tmp_path)
            result = run(words, tmp_path)
            assert result.returncode == 0, f"{text}\n{result.stderr[-2000:]}"
            assert "Traceback" not in result.stderr, text
    assert (tmp_path / "results" / "fine" / "errors.parquet").is_file()  # hydra.run.dir as written
    multiruns = [d for d in (tmp_path / "results" / "precision_sweep").glob("multirun_*") if (d / "0").is_dir()]
    assert len(multiruns) == 2  # joblib and submitit_local, in the default sweep folders, shards merged
    assert all((d / "errors.parquet").is_file() for d in multiruns)
