"""The tables of cross-entropy's studies stay the same, column by column: small grids of
precision_sweep, gradient_sweep, training_losses, edge_cases and lm_head, run again and compared
with the tables kept in tests/fixtures/baseline/ (measured by the harness as it stood before the
loss became an entry of its own). Timing values and columns that depend on the machine are left out.

The same runs' report.html, as a browser lays it out: the title, the verdict table and the headline findings
lie within the first 1400 x 900 pixels, for the main studies. Headless Chromium loads a copy of the page with
a short script appended that writes the boxes of those elements into the DOM, which `--dump-dom` prints.
Skipped where no Chromium is installed.

`python tests/test_baseline_tables.py` writes the fixtures again (with the code on sys.path).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "baseline"
FRAMEWORKS = "frameworks=[numpy,torch,jax,mlx]"
COMMON = [FRAMEWORKS, "timing.enabled=false", "progress=false", "workers=1"]
GRIDS = {
    "precision_sweep": [
        "families=[spread,offset]",
        "scales=[0.01,1.0,30.0,100.0,1000.0,100000.0]",
        "n_rows=8",
        "n_classes=50",
        "seed=3",
    ],
    "gradient_sweep": ["families=[spread]", "scales=[0.1,10.0,1000.0]", "n_rows=6", "n_classes=40", "seed=5"],
    "training_losses": ["n_rows=16", "n_classes=100", "seed=1"],
    "edge_cases": [],
    "lm_head": [
        "n_rows=12",
        "n_classes=48",
        "head.d=8",
        "head.chunk_size=16",
        "head.large_n_classes=null",
        "mode=[eager]",
        "reduction=[mean,none]",
        "head.paths=[linear_fused,linear_chunked,linear_ce_reference]",
    ],
}
TABLES = ("errors", "grad_errors", "breakdown", "breaks", "edge_cases")
# columns that depend on the machine or the run, not on the numbers measured
UNCOMPARED: set[str] = set()
# head rows once recorded only flushes_subnormals of their backend's measured facts; now every one
FILLED = {"lm_head": ("exp_dtype", "exp_overflow", "exp_underflow", "quotient_flushes")}


def run_grid(experiment: str, folder: Path) -> dict[str, pd.DataFrame]:
    import harness

    harness.run(experiment, COMMON + GRIDS[experiment], run_dir=folder)
    found = {name: folder / f"{name}.parquet" for name in TABLES}
    return {name: pd.read_parquet(path) for name, path in found.items() if path.exists()}


def write_fixtures() -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for experiment in GRIDS:
        with tempfile.TemporaryDirectory() as folder:
            for name, frame in run_grid(experiment, Path(folder)).items():
                frame.to_parquet(FIXTURES / f"{experiment}.{name}.parquet", index=False)


def kept_tables(experiment: str) -> dict[str, pd.DataFrame]:
    return {path.name.split(".")[1]: pd.read_parquet(path) for path in sorted(FIXTURES.glob(f"{experiment}.*.parquet"))}


def assert_same_column(name: str, now: pd.Series, before: pd.Series) -> None:
    if pd.api.types.is_float_dtype(before) and pd.api.types.is_float_dtype(now):
        a, b = now.to_numpy(np.float64), before.to_numpy(np.float64)
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        assert same.all(), f"{name}: {np.flatnonzero(~same)[:5]} now {a[~same][:3]}, before {b[~same][:3]}"
    else:
        differ = [i for i, (x, y) in enumerate(zip(now, before, strict=True)) if not _same(x, y)]
        assert not differ, f"{name}: rows {differ[:5]} now {[now.iloc[i] for i in differ[:3]]}, before " + str(
            [before.iloc[i] for i in differ[:3]]
        )


def _same(x, y) -> bool:
    if isinstance(x, np.ndarray | list) or isinstance(y, np.ndarray | list):
        return list(x) == list(y)
    if pd.isna(x) or pd.isna(y):
        return bool(pd.isna(x) and pd.isna(y))
    return bool(x == y)


def compare(now: pd.DataFrame, before: pd.DataFrame, table: str, skip=lambda column: False) -> None:
    """Every column the old table has is in the new one with the same values, row by row."""
    missing = [c for c in before.columns if c not in now.columns]
    assert not missing, f"{table}: columns gone: {missing}"
    assert len(now) == len(before), f"{table}: {len(now)} rows, {len(before)} before"
    for column in before.columns:
        if column in UNCOMPARED or skip(column):
            continue
        assert_same_column(f"{table}.{column}", now[column].reset_index(drop=True), before[column])


# NumPy's backward of SciPy's logsumexp formed its argmax entry as 1 - sum(others) (harness.paths.numpy_paths):
# the cells of the paths that run it have their gradient errors compared as "no larger, or within a few roundings"
CORRECTED_PATHS = ("fused", "upcast_fused", "linear_fused")
# per table: the columns a corrected cell may change, and its relative error among them
CORRECTED_COLUMNS = {
    "grad_errors": (("max_abs_err", "max_row_rel_err", "max_ulp_err", "median_ulp_err"), "max_row_rel_err"),
    "edge_cases": (("grad_returned", "grad_max_row_rel_err"), "grad_max_row_rel_err"),
}


def corrected_apart(now: pd.DataFrame, before: pd.DataFrame, table: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two tables with the corrected cells' gradient errors checked here (no larger than before, or
    within 8 roundings of the dtype the path computes in), then blanked for the column-by-column check."""
    from harness.dtypes import DTYPES

    columns, relative = CORRECTED_COLUMNS[table]
    assert len(now) == len(before)
    now, before = now.reset_index(drop=True).copy(), before.reset_index(drop=True).copy()
    corrected = ((before["framework"] == "numpy") & before["path"].isin(CORRECTED_PATHS)).to_numpy()
    assert (now["framework"].to_numpy() == before["framework"].to_numpy()).all()
    computes_in = np.where(before["path"] == "upcast_fused", "float32", before["dtype"])  # float64 too
    pairs = zip(before["dtype"], computes_in, strict=True)
    roundings = np.array([8 * max(DTYPES[d].unit_roundoff, DTYPES[c].unit_roundoff) for d, c in pairs])
    was, is_now = before[relative].to_numpy(np.float64), now[relative].to_numpy(np.float64)
    worse = corrected & ~(is_now <= np.maximum(was, roundings)) & ~(np.isnan(is_now) & np.isnan(was))
    assert not worse.any(), before[worse]
    for frame in (now, before):
        frame.loc[corrected, list(columns)] = None
    return now, before


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """experiment -> (its run folder, its tables): each study's grid runs once for the tests of this file
    (tests/conftest.py sends a study's tests to one worker together)."""
    done = {}

    def run(experiment: str) -> tuple[Path, dict[str, pd.DataFrame]]:
        if experiment not in done:
            folder = tmp_path_factory.mktemp(experiment)
            done[experiment] = folder, run_grid(experiment, folder)
        folder, tables = done[experiment]
        return folder, dict(tables)

    return run


@pytest.mark.slow
@pytest.mark.parametrize("experiment", list(GRIDS))
def test_tables_as_before(experiment, runs):
    before = kept_tables(experiment)
    assert before, f"no fixtures for {experiment}"
    _, now = runs(experiment)
    assert set(now) >= set(before)
    filled = FILLED.get(experiment, ())
    for table, frame in before.items():
        if table in CORRECTED_COLUMNS:
            now[table], frame = corrected_apart(now[table], frame, table)
        compare(now[table], frame, table, skip=lambda column: column in filled)
        for column in filled:
            if column in frame:
                assert (frame[column].isna() | (frame[column] == "")).all()
                assert now[table][column].notna().all() and (now[table][column] != "").all(), column


# --- the report's first screen in a browser -----------------------------------------------------------

WIDTH, HEIGHT = 1400, 900
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PROBE = """<script>
const box = e => { if (!e) return null; const r = e.getBoundingClientRect();
  return {left: r.left, top: r.top, right: r.right, bottom: r.bottom}; };
const heading = document.getElementById("headline-findings");
document.body.setAttribute("data-layout", JSON.stringify({
  width: window.innerWidth,
  title: box(document.querySelector("h1")), verdict: box(document.querySelector("table.verdict")),
  heading: box(heading), headlines: box(heading && heading.nextElementSibling),
  n_headlines: heading ? heading.nextElementSibling.querySelectorAll("li").length : 0,
  verdict_rows: document.querySelectorAll("table.verdict tbody tr").length}));
</script>"""
LAID_OUT = ("precision_sweep", "training_losses", "lm_head", "edge_cases")  # the main studies


def browser() -> str | None:
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


def layout(page, tmp_path) -> dict:
    """The boxes (CSS pixels, from the top left of the first screen) of the page's first elements."""
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    command = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    command += [f"--window-size={WIDTH},{HEIGHT}", "--dump-dom", probe.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    found = re.search(r'data-layout="([^"]*)"', done.stdout)
    assert found, f"no layout in the browser's DOM (exit {done.returncode}): {done.stderr[-500:]}"
    return json.loads(html.unescape(found.group(1)))


def within_first_screen(box: dict) -> bool:
    """Inside the page's first WIDTH x HEIGHT pixels (boxes are measured before any scrolling)."""
    return box["left"] >= 0 and box["top"] >= 0 and box["right"] <= WIDTH and box["bottom"] <= HEIGHT


@pytest.mark.slow
@pytest.mark.skipif(browser() is None, reason="no Chromium installed (apt-get install chromium)")
@pytest.mark.parametrize("experiment", LAID_OUT)
def test_verdict_and_headlines_fit_the_first_screen(experiment, runs, tmp_path):
    folder, _ = runs(experiment)
    boxes = layout(folder / "report.html", tmp_path)
    assert boxes["width"] == WIDTH  # the layout's width; its height does not depend on the window's
    for name in ("title", "verdict", "heading", "headlines"):
        assert boxes[name] is not None, f"{name} missing from the page"
        assert within_first_screen(boxes[name]), f"{name} at {boxes[name]} leaves the first {WIDTH} x {HEIGHT}"
    assert boxes["title"]["bottom"] <= boxes["verdict"]["top"] < boxes["headlines"]["top"]
    assert 1 <= boxes["n_headlines"] <= 8 and boxes["verdict_rows"] >= 2


if __name__ == "__main__":
    sys.exit(write_fixtures())
