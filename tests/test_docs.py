"""The documentation site builds in strict mode, its reference pages cover the code, and every finding the README and
the docs state is the one the run's tables give (docs/findings.py renders them; docs/data/ holds the run's columns)."""

from __future__ import annotations

import functools
import math
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO
from omegaconf import OmegaConf

DOCS = REPO / "docs"
PAGES = DOCS / "pages"
sys.path.insert(0, str(DOCS))

import findings  # noqa: E402  (docs/findings.py)

README = (REPO / "README.md").read_text()
# a commit named to calibrate or date something: hex with a letter and a digit, not inside a number
COMMIT = r"(?<![.\w])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}(?![\w-])"
PROCESS_TALK = re.compile(rf"\bbudgets?\b|\btoday\b|this VM|virtual machine|development VM|{COMMIT}", re.I)


def user_pages():
    return [REPO / "README.md", REPO / "results" / "README.md", *sorted(PAGES.rglob("*.md"))]


@pytest.mark.slow
def test_the_site_builds_in_strict_mode(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs comes with the test extra")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings comes with the test extra")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(DOCS / "mkdocs.yml"), "-d", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    paths_page = (tmp_path / "reference" / "paths" / "index.html").read_text()
    assert "<code>keras_probs</code>" in paths_page and "generated:" not in paths_page  # the entries' table
    assert 'id="harness.testing.assert_accurate"' in (tmp_path / "reference" / "api" / "index.html").read_text()


def test_every_page_of_the_site_is_in_its_navigation():
    nav = (DOCS / "mkdocs.yml").read_text()
    assert [
        p.relative_to(PAGES).as_posix() for p in PAGES.rglob("*.md") if p.relative_to(PAGES).as_posix() not in nav
    ] == []


def test_the_readme_is_short_and_its_links_resolve():
    assert len(README.splitlines()) <= 200
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    assert [t for t in targets if not t.startswith("http") and not (REPO / t).exists()] == []


@pytest.mark.parametrize("page", user_pages(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_process_talk_where_a_user_reads(page):
    assert PROCESS_TALK.findall(page.read_text()) == []


def test_every_setting_is_documented():
    from harness.sweep.config import CONF_DIR

    def keys(node, prefix=""):
        for key, value in node.items():
            if key in ("defaults", "hydra"):
                continue
            if isinstance(value, dict) and value:
                yield from keys(value, f"{prefix}{key}.")
            else:
                yield prefix + key

    base = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "config.yaml"), resolve=False)
    page = (PAGES / "reference" / "settings.md").read_text()
    assert [key for key in keys(base) if f"`{key}`" not in page] == []


def test_every_experiment_is_documented():
    from harness.sweep.config import CONF_DIR

    page = (PAGES / "reference" / "experiments.md").read_text()
    names = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
    assert names and [name for name in names if f"| `{name}` |" not in page] == []


def test_the_generated_tables_are_placed_where_the_entries_are_described():
    markers = {p.name: set(re.findall(r"<!-- generated: (\w+) -->", p.read_text())) for p in PAGES.rglob("*.md")}
    assert markers["paths.md"] == {"path_table"}
    assert markers["loss-options.md"] == {"option_table"} and markers["lm-head.md"] == {"head_path_table"}


# The findings: every block as written is the one the run's tables give.


@functools.cache
def tables():
    return findings.load()


@pytest.mark.parametrize("page", findings.TARGETS, ids=lambda p: p.name)
def test_every_findings_block_is_the_one_the_tables_give(page):
    written = findings.blocks(page.read_text())
    assert written, f"{page} has no findings block"
    for name, text in written.items():
        assert text == findings.render(tables())[name], f"{page.name}: {name} differs; run python docs/findings.py"


def test_the_readme_states_five_to_eight_headline_findings_with_numbers():
    lines = findings.blocks(README)["headline"].splitlines()
    assert 5 <= len(lines) <= 8
    assert all(re.search(r"\d", line) for line in lines)


def test_the_tables_behind_the_findings_hold_the_thresholds_round_to_nearest_gives():
    """The thresholds the sentences quote, by hand: ln(65504 + 16) for float16's sum, -ln(2^-150) and
    -ln(2^-126) for float32's target probability, subnormals kept and flushed."""
    b = tables()["precision_sweep"]
    threshold = {(r.framework, r.path, r.dtype): r.theory_threshold for r in b[b.family == "spread"].itertuples()}
    assert threshold["torch", "naive", "float16"] == pytest.approx(math.log(65520), rel=1e-12)
    assert threshold["torch", "softmax_log", "float32"] == pytest.approx(150 * math.log(2), rel=1e-12)
    assert threshold["jax", "softmax_log", "float32"] == pytest.approx(126 * math.log(2), rel=1e-12)


def test_the_run_that_made_the_findings_is_named():
    environment = (DOCS / "data" / "environment.json").read_text()
    for package in ("torch", "jax", "mlx"):
        assert f'"{package}"' in environment
