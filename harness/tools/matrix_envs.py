"""The environments of a version matrix: what each holds (resolved), built and cached virtual environments.

An environment is an overlay on the environment that runs the matrix (the base): a virtual environment of
the same interpreter that holds only the packages whose versions differ from the base's, installed without
their dependencies, and a .pth file that appends the base's site-packages after its own. So the named
versions shadow the pinned ones, everything else (the harness from the working tree included) is the
base's, and an environment costs the download of what differs, not of PyTorch or TensorFlow again. What
an environment holds is decided by a resolver run over the harness's own requirements with the named
versions in place and every other package held to the base's version, so a set whose versions need other
versions of unnamed packages fails before anything is built, naming the conflict.

uv installs where it is on PATH (its cache turns a second install into hard links); plain venv + pip
otherwise. Environments live in a cache folder, one per hash of what they hold.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

from harness.files import atomic_write
from harness.tools import matrix_sets
from harness.tools.matrix_sets import (
    BadInput,
    Sources,
    VersionSet,
    base_distributions,
    is_version,
    normalize,
    run_quiet,
)

OVERLAY_PTH = "_harness_base.pth"
READY = "ready.json"  # written last: an environment folder without it is not used
ENV_CACHE_VARIABLE = "HARNESS_ENV_CACHE"


# --- resolving and installing -----------------------------------------------------------------------


def uv_binary() -> str | None:
    """uv on PATH, beside this interpreter (an environment not activated), or from the uv package."""
    found = shutil.which("uv") or shutil.which("uv", path=str(Path(sys.executable).parent))
    if found:
        return found
    try:
        import uv

        return uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        return None


def _uv() -> str:
    found = uv_binary()
    if found is None:
        raise BadInput("--installer uv, but uv is not installed (pip install uv)")
    return found


def installer() -> str:
    """uv where it is found, else pip."""
    return "uv" if uv_binary() else "pip"


def resolver_inputs(vset: VersionSet, base: dict) -> tuple[list[str], list[str]]:
    """(roots, constraints): the harness's requirements with the named versions in place, and every other
    installed distribution held to its base version (public part: a +cpu build is found by its index)."""
    named = {normalize(n) for n, _ in vset.pins}
    roots = vset.requirement_lines()
    for req in matrix_sets.requirements("harness"):
        if normalize(req.name) not in named and matrix_sets.applies(req, base, extras=True):
            req.marker = None
            roots.append(str(req))
    constraints = [
        f"{name}=={Version(version).public}"
        for key, (name, version) in sorted(base.items())
        if key not in named and key != "harness" and is_version(version)
    ]
    return roots, constraints


def resolve(vset: VersionSet, sources: Sources, tool: str, cache: Path | None = None) -> dict[str, tuple[str, str]]:
    """normalized name -> (name, version) the set resolves to (uv: every package; pip, which resolves against
    the installed base: what it would install, the rest staying at the base's versions), or BadInput naming
    the conflict; kept in cache/resolved/ under a hash of what decides it, so a second matrix over the same
    sets resolves nothing."""
    base = base_distributions()
    roots, constraints = resolver_inputs(vset, base)
    record = json.dumps([sys.version, tool, roots, constraints, sources.options()], sort_keys=True).encode()
    stored = cache / "resolved" / f"{hashlib.sha256(record).hexdigest()[:16]}.json" if cache else None
    if stored is not None and stored.is_file():
        return {k: tuple(v) for k, v in json.loads(stored.read_text()).items()}
    resolved = _resolve(vset, roots, constraints, sources, tool)
    if stored is not None:
        stored.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(stored, lambda tmp: Path(tmp).write_text(json.dumps(resolved, indent=1) + "\n"))
    return resolved


def _resolve(vset: VersionSet, roots: list[str], constraints: list[str], sources: Sources, tool: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="harness-resolve-") as tmp:
        roots_file, constraints_file, report = Path(tmp, "roots.txt"), Path(tmp, "constraints.txt"), Path(tmp, "r")
        roots_file.write_text("\n".join(roots) + "\n")
        constraints_file.write_text("\n".join(constraints) + "\n")
        if tool == "uv":
            command = [_uv(), "pip", "compile", str(roots_file), "-c", str(constraints_file), "--python"]
            command += [sys.executable, "--no-header", "--no-annotate", "--quiet", *sources.options(tool)]
        else:
            # against what is installed: only what differs is fetched (every other package is held to it)
            command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet"]
            command += ["--report", str(report), "-r", str(roots_file), "-c", str(constraints_file)]
            command += sources.options()
        result = run_quiet(command, check=False)
        if result.returncode != 0:
            raise BadInput(
                f"the set {' '.join(vset.requirement_lines())} does not resolve: {matrix_sets.one_line(result.stderr)} "
                "(name the versions it needs in --versions too)"
            )
        if tool == "uv":
            pins = [Requirement(line) for line in result.stdout.splitlines() if "==" in line and line[0].isalnum()]
            return {normalize(r.name): (r.name, next(iter(r.specifier)).version) for r in pins}
        installs = json.loads(report.read_text())["install"]
        return {normalize(i["metadata"]["name"]): (i["metadata"]["name"], i["metadata"]["version"]) for i in installs}


def overlay_pins(resolved: dict[str, tuple[str, str]], vset: VersionSet) -> list[str]:
    """name==version of what the environment must hold itself: the named packages, and every resolved
    package the base lacks or holds at another (public) version."""
    base = base_distributions()
    named = {normalize(n) for n, _ in vset.pins}
    pins = []
    for key, (name, version) in sorted(resolved.items()):
        if key == "harness":
            continue
        have = base.get(key)
        if key in named or have is None or Version(have[1]).public != Version(version).public:
            pins.append(f"{name}=={version}")
    return pins


def env_key(pins: list[str], sources: Sources) -> str:
    """What an environment holds, hashed: the interpreter, the base it lays over (every version in it),
    its own packages and where they came from."""
    record = {
        "python": sys.version,
        "base": sysconfig.get_paths()["purelib"],
        "base_packages": sorted(f"{n}=={v}" for n, v in base_distributions().values()),
        "pins": sorted(pins),
        "sources": sources.options(),
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def default_cache() -> Path:
    if os.environ.get(ENV_CACHE_VARIABLE):
        return Path(os.environ[ENV_CACHE_VARIABLE])
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "harness" / "envs"


@dataclass
class Environment:
    """A built (or found) environment of one version set."""

    path: Path
    pins: list[str]
    created: bool
    seconds: float  # spent building it; 0 where it was found in the cache
    tool: str
    record: dict = field(default_factory=dict)

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


def base_site_dirs() -> list[str]:
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))


def build(vset: VersionSet, pins: list[str], sources: Sources, cache: Path, tool: str) -> Environment:
    """The set's environment from the cache, or built into it (atomically: a half-built one is never used)."""
    key = env_key(pins, sources)
    path = cache / key
    if (path / READY).is_file():
        return Environment(path, pins, False, 0.0, tool, json.loads((path / READY).read_text()))
    cache.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f"{key}.", suffix=".partial", dir=cache))
    try:
        if tool == "uv":
            run_quiet([_uv(), "venv", str(tmp), "--python", sys.executable, "--quiet", "--allow-existing"])
            install = [_uv(), "pip", "install", "--python", str(tmp / "bin" / "python"), "--quiet"]
        else:
            run_quiet([sys.executable, "-m", "venv", "--clear", "--without-pip", str(tmp)])
            install = [sys.executable, "-m", "pip", "--python", str(tmp / "bin" / "python"), "install", "--quiet"]
        if pins:
            run_quiet([*install, "--no-deps", *pins, *sources.options(tool)])
        site = run_quiet(
            [str(tmp / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
        )
        lines = [f"import site; site.addsitedir({d!r})" for d in base_site_dirs()]
        Path(site.stdout.strip(), OVERLAY_PTH).write_text("\n".join(lines) + "\n")
        record = {"label": vset.label, "named": vset.requirement_lines(), "pins": pins, "tool": tool}
        record["base"] = sys.prefix
        seconds = time.perf_counter() - start
        (tmp / READY).write_text(json.dumps(record | {"seconds": round(seconds, 2)}, indent=1) + "\n")
        try:
            tmp.rename(path)
        except OSError:  # built meanwhile by another matrix: use that one
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Environment(path, pins, True, seconds, tool, json.loads((path / READY).read_text()))


PROBE = """
import importlib, importlib.metadata as m, json, sys
names, frameworks = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = {"python": sys.version, "packages": {}, "frameworks": {}}
for name in names:
    try:
        dist = m.distribution(name)
        out["packages"][name] = {"version": dist.version, "location": str(dist.locate_file(""))}
    except m.PackageNotFoundError:
        out["packages"][name] = None
for framework, modules in frameworks.items():
    try:
        for module in modules + ["harness.backends." + framework]:
            importlib.import_module(module)
        out["frameworks"][framework] = None
    except Exception as exc:
        out["frameworks"][framework] = (type(exc).__name__ + ": " + str(exc)).splitlines()[0][:300]
print(json.dumps(out))
"""


def probe(env: Environment, vset: VersionSet, frameworks, cwd: Path) -> dict:
    """What imports in the environment: each named package's version and where it lies, and each
    framework's import (None, or the error that stops it). BadInput if a named version is not the one
    that imports (something shadows the environment)."""
    from harness.backends import FRAMEWORKS

    modules = {f: list(FRAMEWORKS[f].packages) for f in frameworks}
    names = [n for n, _ in vset.pins]
    result = run_quiet([str(env.python), "-c", PROBE, json.dumps(names), json.dumps(modules)], cwd=cwd)
    found = json.loads(result.stdout.strip().splitlines()[-1])
    for name, version in vset.pins:
        got = found["packages"].get(name)
        inside = got is not None and Path(got["location"]).resolve().is_relative_to(env.path.resolve())
        if got is None or Version(got["version"]).public != Version(version).public or not inside:
            where = "nothing" if got is None else f"{got['version']} from {got['location']}"
            raise BadInput(f"environment {env.path} should import {name}=={version}, but finds {where}")
    return found
