"""The package's shape: folders by stage, layers that only import downward, no framework outside
its backend and path implementations, outputs that reach no backend or path even transitively, no
import cycle, no module too long to read."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[1] / "harness"
FRAMEWORK_PACKAGES = {"torch", "jax", "jaxlib", "optax", "mlx", "tensorflow", "keras"}
# A framework may be imported only by its backend and by its own path implementations, the modules
# paths/<framework>_<what>.py (paths, options, head).
FRAMEWORK_HOME = re.compile(
    r"^(backends/|(paths|losses/\w+)/(numpy|torch|jax|mlx|tensorflow)_\w+\.py$)"
)  # and a loss's own implementation modules, losses/<loss>/<framework>_<what>.py
# What each folder may import from the package (besides the top-level foundation modules).
ALLOWED = {
    "exact": {"exact"},
    "backends": {"backends"},
    "paths": {"paths", "backends"},
    "losses": {"losses", "exact", "paths", "backends"},  # a loss's own paths, references and theory
    "sweep": {"sweep", "exact", "backends", "paths"},
    "timing": {"timing", "backends", "paths", "sweep"},
    "outputs": {"outputs", "sweep"},
    # merge writes merged shards as a run does; the version matrix validates a run's settings (api) and
    # names the frameworks' packages (backends)
    "tools": {"tools", "sweep", "outputs", "pipeline", "api", "backends"},
}
for _imports in ALLOWED.values():  # the registry of losses (harness/losses/__init__.py) is read by every layer
    _imports.add("losses")
# harness/<name>.py modules any layer may use
FOUNDATION = {"dtypes", "errors", "mechanisms", "files", "cli", "processes", "package"}
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


def module_name(path: Path) -> str:
    parts = path.relative_to(HARNESS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in modules()}


def module_imports(name: str) -> set[str]:
    """The modules one module imports, at any depth (function-level imports count): harness modules by
    full name (`from harness.sweep import journal` names harness.sweep.journal; a package itself only
    where a name imported from it is not a submodule), other packages by their top-level name."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            submodules = {f"{base}.{alias.name}" for alias in node.names} & MODULES.keys()
            found |= submodules
            if len(submodules) < len(node.names):
                found.add(base)
    return {n if n.split(".")[0] == "harness" else n.split(".")[0] for n in found} - {name}


GRAPH = {name: module_imports(name) for name in MODULES}


def reachable(start: str) -> dict[str, str]:
    """Every module `start` reaches through imports, each mapped to the module that imports it."""
    via, todo = {}, [start]
    while todo:
        name = todo.pop()
        for imported in GRAPH.get(name, ()):
            if imported not in via and imported != start:
                via[imported] = name
                todo.append(imported)
    return via


def chain(start: str, end: str, via: dict[str, str]) -> str:
    names = [end]
    while names[-1] != start:
        names.append(via[names[-1]])
    return " -> ".join(reversed(names))


# harness.tools.merge rebuilds a multirun's results exactly as a run writes them: it validates the
# merged settings (SweepConfig, which checks the frameworks and paths) and calls harness.pipeline; the
# version matrix validates its runs' settings the same way and checks the frameworks import.
WHOLE_RUN_TOOLS = {"harness.tools.merge"} | {f"harness.tools.{m}" for m in ("matrix", "matrix_sets", "matrix_envs")}
OUTPUT_MODULES = [
    n for n in MODULES if n.startswith(("harness.outputs.", "harness.tools.")) and n not in WHOLE_RUN_TOOLS
]
BANNED = ("harness.backends", "harness.paths")


@pytest.mark.parametrize("name", OUTPUT_MODULES)
def test_outputs_reach_no_backend_path_or_framework(name):
    """Outputs read tables and records: importing one loads no backend, path or framework, even through
    a function-level import of a module it imports."""
    via = reachable(name)
    banned = sorted(n for n in via if n.startswith(BANNED) or n in FRAMEWORK_PACKAGES)
    assert not banned, "; ".join(chain(name, n, via) for n in banned)


@pytest.mark.slow
def test_importing_the_outputs_loads_no_backend_path_or_framework():
    """The same, at run time, in a fresh interpreter (one for all of them: about a second)."""
    code = "; ".join(f"import {n}" for n in OUTPUT_MODULES) + "; import sys; print(' '.join(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    banned = [n for n in loaded if n.startswith(BANNED) or n.split(".")[0] in FRAMEWORK_PACKAGES]
    assert not banned, banned


def test_the_graph_sees_lazy_imports():
    """A function-level import counts: harness.sweep.run_dir imports the environment only when resuming."""
    assert "harness.sweep.environment" in GRAPH["harness.sweep.run_dir"]
    assert "harness.backends" in reachable("harness.sweep.run_dir")


# Import cycles that stay, each with why. harness/__init__.py's __getattr__ imports harness.api when
# harness.run (or load, measure, Run) is first used (PEP 562): `import harness` stays light, and no
# module imports the bare package, so it closes no cycle; it is listed to be checked, not excused.
ALLOWED_CYCLES: list[set[str]] = []


def cycles() -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    for root in MODULES:
        if root in index:
            continue
        work = [(root, iter(sorted(GRAPH[root] & MODULES.keys())))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            name, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[name])
                if low[name] == index[name]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == name:
                            break
                    if len(component) > 1:
                        found.append(component)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(GRAPH[child] & MODULES.keys()))))
            elif child in on_stack:
                low[name] = min(low[name], index[child])
    return found


def test_no_import_cycles():
    """No module reaches itself through imports, function-level ones included."""
    found = [sorted(c) for c in cycles() if c not in ALLOWED_CYCLES]
    assert not found, found


def test_cycle_finder_finds_a_cycle():
    saved = {n: set(GRAPH[n]) for n in ("harness.sweep.journal", "harness.sweep.metrics")}
    try:
        GRAPH["harness.sweep.journal"].add("harness.sweep.metrics")
        GRAPH["harness.sweep.metrics"].add("harness.sweep.journal")
        assert {"harness.sweep.journal", "harness.sweep.metrics"} in cycles()
    finally:
        GRAPH.update(saved)


WRITERS = ("write_table", "write_text")  # harness.files: every output file goes through these


def written_files(path: Path) -> list[tuple[str, str]]:
    """(file name, writing function) for each write_table / write_text call whose target is a
    literal name (`dir / "errors"`); pipeline.write_tables's `run_dir / name` has none."""
    found = []
    for function in ast.walk(ast.parse(path.read_text())):
        if not isinstance(function, ast.FunctionDef):
            continue
        for call in ast.walk(function):
            if not isinstance(call, ast.Call):
                continue
            name = getattr(call.func, "attr", None) or getattr(call.func, "id", None)
            if name in WRITERS and len(call.args) >= 2:
                target = call.args[1]
                if isinstance(target, ast.BinOp) and isinstance(target.right, ast.Constant):
                    found.append((target.right.value, f"{module_name(path)}.{function.name}"))
    return found


def test_one_writer_per_output_file():
    writers: dict[str, set[str]] = {}
    for path in modules():
        for file, function in written_files(path):
            writers.setdefault(file, set()).add(function)
    assert {"summary.md", "comparison.md"} <= set(writers)  # the check sees the literal writes
    assert {file: sorted(w) for file, w in writers.items() if len(w) > 1} == {}
    tables = ("errors", "grad_errors", "row_errors", "timings", "breaks")
    assert not set(tables) & set(writers)  # written only through pipeline.write_tables


def own_files(entry) -> set[Path]:
    """A loss's own files: its folder under harness/losses/ and every module its entry names (`*_at`:
    its references, paths, options, edge inputs, head), a package with its whole folder."""
    owned = set((HARNESS / "losses" / entry.name).rglob("*.py"))
    for field in (f for f in vars(entry) if f.endswith("_at")):
        module = getattr(entry, field).partition(":")[0]
        if not module:
            continue
        path = HARNESS.parent.joinpath(*module.split("."))
        owned |= set(path.rglob("*.py")) if path.is_dir() else {path.with_suffix(".py")}
    return owned


def string_literals(path: Path) -> list[str]:
    """The string constants of a module's code, docstrings left out (they may say what a module is for)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def names_loss(text: str, word: str) -> bool:
    """`word` in `text` as a word of its own (binary_cross_entropy and F.cross_entropy do not name cross_entropy)."""
    return re.search(rf"(?<![\w.-]){re.escape(word)}(?![\w-])", text) is not None


def test_no_module_outside_a_loss_names_it():
    """Which loss runs is read from its entry, never from its name written elsewhere: the code of every
    module outside a loss's own files holds no string naming it (harness/losses/__init__.py holds the
    default's), and the reports' and plots' text (harness/outputs) takes its title from the entry."""
    from harness import losses

    default_home = HARNESS / "losses" / "__init__.py"
    named = []
    for name in losses.names():
        entry = losses.entry(name)
        owned = own_files(entry) | ({default_home} if name == losses.DEFAULT else set())
        for path in sorted(set(modules()) - owned):
            words = (name, entry.title) if path.relative_to(HARNESS).parts[0] == "outputs" else (name,)
            named += [
                f"{path.relative_to(HARNESS)}: {text!r}"
                for text in string_literals(path)
                if any(names_loss(text, word) for word in words)
            ]
    assert not named, named


def test_the_check_sees_a_loss_named_outside_it(tmp_path):
    assert "cross_entropy" in string_literals(HARNESS / "losses" / "__init__.py")
    stray = tmp_path / "stray.py"
    stray.write_text('"""A docstring may say cross-entropy."""\nTITLE = "cross-entropy error"\n')
    assert string_literals(stray) == ["cross-entropy error"]
    assert names_loss("cross-entropy error", "cross-entropy")
    assert not names_loss("binary_cross_entropy", "cross_entropy")
    assert not names_loss("F.cross_entropy", "cross_entropy")
