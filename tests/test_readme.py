"""Every command in the README and the documentation runs as written, on small grids, and their Python examples
run: neither can drift.

Each command is a process of its own (tests/commands.py: forked from a server that has imported the harness,
or a new interpreter where its imports could differ). All commands run in one scratch folder, in reading
order (the README, then the pages in the order of the site's navigation: the comparison needs the runs
before it).
To each `python -m harness` command the settings of SMALL that it does not set itself are appended;
nothing else is changed, so default folders (results/<experiment>/<timestamp>/, multirun_<timestamp>/)
are exercised as written. Not run: `pip install` and `python3 -m venv` (no network in a test) and
`python -m pytest` (the suite itself); a line for hardware this machine lacks (a Slurm cluster, a GPU) is composed
and validated only. A Python block whose first line is `# some/file.py` is written
to that file (e.g. *Your own path*'s module, which the next command imports); the others are executed, except an
excerpt, a block with a line of `...` standing for what is left out (shown, not run).

The steps run in PARTS runs of consecutive steps, each in its own scratch folder (so that workers can share
them out), cut only where no later step reads a folder an earlier one wrote; each part first writes the
files of the blocks before it.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import commands
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
    if "families" in small and (families := loss_families(words)) and "spread" not in families:
        small["families"] = f"[{families[0]}]"  # a loss without spread logits (KL: independent, near)
    return [f"{k}={v}" for k, v in small.items()]


def loss_families(words: list[str]) -> list[str]:
    """The families a command of a loss other than cross-entropy runs, composed as its command line composes
    them; none for cross-entropy (SMALL's spread replaces its studies' own), none where they cannot be
    composed here (a multirun's list of values) or the loss chooses its own."""
    from harness import api

    try:
        config = api.compose_config([w for w in words if "=" in w and "," not in w])
    except Exception:
        return []
    return [] if config.get("loss") in (None, "cross_entropy") else list(config.families or [])


def run(words: list[str], cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(cwd)]), HYDRA_FULL_ERROR="0")
    return commands.run([sys.executable, *words[1:]], cwd, env, timeout=600)


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


def written_file(kind: str, text: str) -> str | None:
    """The file a Python block is written to (its first line `# some/file.py`), or None."""
    first_line = text.splitlines()[0]
    return first_line[2:] if kind == "python" and re.fullmatch(r"# [\w/]+\.py", first_line) else None


def folders(kind: str, text: str) -> tuple[set[str], set[str]]:
    """The folders a step writes (hydra.run.dir) and reads (a tool's folder arguments; any results/... a
    Python block names)."""
    if kind == "python":
        return set(), set(re.findall(r"results/[\w./-]+", text))
    words = shlex.split(text)
    writes = {w.split("=", 1)[1] for w in words if w.startswith("hydra.run.dir=")}
    tool = words[2] if len(words) > 2 and words[:2] == ["python", "-m"] else ""
    reads = {w for w in words[3:] if tool != "harness" and not w.startswith("-") and "=" not in w}
    return writes, reads


def parts(steps: list[tuple[str, str]], count: int) -> list[list[int]]:
    """The indices of `steps` in at most `count` runs of consecutive steps with about as many commands
    each, cut only where no later step reads a folder that an earlier one writes."""
    later_reads = [set() for _ in range(len(steps) + 1)]
    for i in reversed(range(len(steps))):
        later_reads[i] = later_reads[i + 1] | folders(*steps[i])[1]
    commands = sum(kind == "command" for kind, _ in steps)
    cut, done, written = [[]], 0, set()
    for i, (kind, text) in enumerate(steps):
        cut[-1].append(i)
        done += kind == "command"
        written |= folders(kind, text)[0]
        if done >= commands * len(cut) / count and len(cut) < count and not written & later_reads[i + 1]:
            cut.append([])
    return [part for part in cut if part]


PARTS = 8
STEPS = readme_steps()
PART_STEPS = parts(STEPS, PARTS)


def test_the_readme_and_the_docs_show_the_commands_checked_here():
    """What the parts below must find: the commands and examples, the folder of the fine scan, and the
    multiruns of the two local launchers."""
    commands = [text for kind, text in STEPS if kind == "command"]
    assert len(commands) >= 20 and sum(kind == "python" for kind, _ in STEPS) >= 3
    assert any("hydra.run.dir=results/fine" in shlex.split(text) for text in commands)
    assert [c for c in commands if runs_a_multirun(shlex.split(c))] == [
        c for c in commands if "hydra/launcher=joblib" in c or "hydra/launcher=submitit_local" in c
    ]
    assert len([c for c in commands if runs_a_multirun(shlex.split(c))]) == 2
    assert sorted(i for part in PART_STEPS for i in part) == list(range(len(STEPS)))


def runs_a_multirun(words: list[str]) -> bool:
    return "-m" in words[3:] and not any(hardware in w for w in words for hardware in NO_HARDWARE)


@pytest.mark.slow
@pytest.mark.parametrize("part", range(len(PART_STEPS)), ids=lambda i: f"part{i + 1}of{len(PART_STEPS)}")
def test_every_command_and_example_of_the_readme_and_the_docs_runs(part, tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "my_logits.npz", logits=rng.standard_normal((3, 5)), labels=np.array([0, 4, 2]))
    np.savez(tmp_path / "distill.npz", teacher=rng.standard_normal((3, 5)), student=rng.standard_normal((3, 5)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for kind, text in STEPS[: PART_STEPS[part][0]]:  # the files that the blocks before this part write
        if name := written_file(kind, text):
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text(text)
    multiruns = 0
    for kind, text in (STEPS[i] for i in PART_STEPS[part]):
        if name := written_file(kind, text):
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text(text)
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
            if "hydra.run.dir=results/fine" in words:
                assert (tmp_path / "results" / "fine" / "errors.parquet").is_file()  # hydra.run.dir as written
            multiruns += runs_a_multirun(words)
    found = [d for d in (tmp_path / "results" / "precision_sweep").glob("multirun_*") if (d / "0").is_dir()]
    assert len(found) == multiruns  # joblib and submitit_local, in the default sweep folders, shards merged
    assert all((d / "errors.parquet").is_file() for d in found)
