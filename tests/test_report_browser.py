"""report.html as a browser lays it out: the title, the verdict table and the headline findings lie
within the first 1400 x 900 pixels, for the main studies on small grids.

Headless Chromium loads a copy of the page with a short script appended that writes the boxes of
those elements into the DOM, which `--dump-dom` prints. Skipped where no Chromium is installed.
"""

import html
import json
import re
import shutil
import subprocess

import pytest

from harness import api

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
SMALL = ["progress=false", "timing.enabled=false"]
STUDIES = {
    "precision_sweep": ["scales=[0.1,10,1000]", "n_rows=4", "n_classes=20"],
    "training_losses": ["n_rows=8", "n_classes=50", "frameworks=[numpy,torch,jax]"],
    "lm_head": [
        "n_rows=8",
        "n_classes=50",
        "head.d=16",
        "frameworks=[numpy,torch]",
        "head.paths=[linear_fused,linear_chunked]",
        "head.compiled_paths=[linear_fused]",
        "mode=[eager]",
        "head.large_n_classes=null",
    ],
    "edge_cases": [],
}


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
@pytest.mark.parametrize("experiment", list(STUDIES))
def test_verdict_and_headlines_fit_the_first_screen(experiment, tmp_path):
    run = tmp_path / experiment
    api.run(experiment, SMALL + STUDIES[experiment], run_dir=run)
    boxes = layout(run / "report.html", tmp_path)
    assert boxes["width"] == WIDTH  # the layout's width; its height does not depend on the window's
    for name in ("title", "verdict", "heading", "headlines"):
        assert boxes[name] is not None, f"{name} missing from the page"
        assert within_first_screen(boxes[name]), f"{name} at {boxes[name]} leaves the first {WIDTH} x {HEIGHT}"
    assert boxes["title"]["bottom"] <= boxes["verdict"]["top"] < boxes["headlines"]["top"]
    assert 1 <= boxes["n_headlines"] <= 8 and boxes["verdict_rows"] >= 2
