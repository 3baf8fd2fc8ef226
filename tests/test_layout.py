"""The package's shape: folders by stage, layers that only import downward, no framework outside
its backend and path implementations, no module too long to read."""

import ast
import re
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[1] / "harness"
FRAMEWORK_PACKAGES = {"torch", "jax", "jaxlib", "optax", "mlx", "tensorflow", "keras"}
# A framework may be imported only by its backend and by its own path implementations, the modules
# paths/<framework>_<what>.py (paths, options, head).
FRAMEWORK_HOME = re.compile(r"^(backends/|paths/(numpy|torch|jax|mlx|tensorflow)_\w+\.py$)")
# What each folder may import from the package (besides the top-level foundation modules).
ALLOWED = {
    "exact": {"exact"},
    "backends": {"backends"},
    "paths": {"paths", "backends"},
    "sweep": {"sweep", "exact", "backends", "paths"},
    "timing": {"timing", "backends", "paths", "sweep"},
    "outputs": {"outputs", "sweep"},
    "tools": {"tools", "sweep", "outputs", "pipeline"},  # merge writes merged shards as a run does
}
# harness/<name>.py modules any layer may use
FOUNDATION = {"dtypes", "errors", "mechanisms", "files", "cli", "processes"}
MAX_LINES = 420  # "about 300 lines unless it is one job"; the longest single-job modules sit below this


def modules():
    return sorted(p for p in HARNESS.rglob("*.py"))


def imported_names(path: Path) -> set[str]:
    """Every module named by an import statement in the file (at any depth: lazy imports count)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "harness":
                names |= {f"harness.{alias.name}" for alias in node.names}
    return names


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(HARNESS)))
def test_no_framework_outside_its_backend_and_path_implementations(path):
    relative = str(path.relative_to(HARNESS))
    frameworks = {name.split(".")[0] for name in imported_names(path)} & FRAMEWORK_PACKAGES
    if FRAMEWORK_HOME.match(relative):
        return
    assert not frameworks, f"{relative} imports {sorted(frameworks)}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(HARNESS)))
def test_layers_import_only_downward(path):
    relative = path.relative_to(HARNESS)
    if len(relative.parts) < 2:
        return  # top-level modules (api, __main__, testing, dtypes, errors) may use every layer
    folder = relative.parts[0]
    for name in imported_names(path):
        parts = name.split(".")
        if parts[0] != "harness" or len(parts) < 2 or parts[1] in FOUNDATION:
            continue
        assert parts[1] in ALLOWED[folder], f"{relative} (layer {folder}) imports {name}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(HARNESS)))
def test_modules_stay_readable(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES, f"{path.relative_to(HARNESS)} is too long: split it"
