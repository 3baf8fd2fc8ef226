"""The environments of a version matrix: version sets, index and resolver checks, cached virtual environments.

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
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from harness.files import atomic_write

# packages whose release goes with another's of the same number: named with it unless named themselves
COMPANIONS = {"jax": ("jaxlib",), "mlx": ("mlx-cpu",)}
CORE_PACKAGES = ("numpy", "ml_dtypes", "mpmath")  # what every experiment's numbers pass through
OVERLAY_PTH = "_harness_base.pth"
READY = "ready.json"  # written last: an environment folder without it is not used
ENV_CACHE_VARIABLE = "HARNESS_ENV_CACHE"


class BadInput(Exception):
    """A request the matrix refuses before building anything; the message is one line."""


def normalize(name: str) -> str:
    """A distribution name as the index compares it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class VersionSet:
    """One environment's named versions, (name, version) in the order given, companions after."""

    pins: tuple[tuple[str, str], ...]
    label: str  # its folder name: the packages whose version changes across the matrix

    def requirement_lines(self) -> list[str]:
        return [f"{name}=={version}" for name, version in self.pins]


SPEC = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^=\s]+)$")


def parse_versions(specs: list[str]) -> list[VersionSet]:
    """`NAME==V1,V2,...` per spec; specs with several versions are zipped, a spec with one applies to every set."""
    packages: list[tuple[str, list[str]]] = []
    for spec in specs:
        match = SPEC.match(spec.strip())
        if not match:
            raise BadInput(f"malformed --versions {spec!r}: write NAME==V1,V2,... (e.g. optax==0.2.5,0.2.8)")
        name, versions = match.group(1), [v.strip() for v in match.group(2).split(",")]
        for version in versions:
            try:
                Version(version)
            except InvalidVersion:
                raise BadInput(f"malformed version {version!r} of {name} in --versions {spec!r}") from None
        if any(normalize(name) == normalize(n) for n, _ in packages):
            raise BadInput(f"package {name} is named twice in --versions; give its versions in one spec")
        packages.append((name, versions))
    counts = sorted({len(v) for _, v in packages if len(v) > 1})
    if len(counts) > 1:
        shown = ", ".join(f"{n} {len(v)}" for n, v in packages if len(v) > 1)
        raise BadInput(f"--versions give different numbers of versions ({shown}): sets are zipped, so give as many")
    n_sets = counts[0] if counts else 1
    if n_sets < 2:
        raise BadInput("a matrix needs at least two version sets: give one package with several versions")
    varying = [name for name, versions in packages if len(versions) > 1]
    sets = []
    for i in range(n_sets):
        pins = [(name, versions[i] if len(versions) > 1 else versions[0]) for name, versions in packages]
        named = {normalize(n) for n, _ in pins}
        for name, version in list(pins):
            pins += [(c, version) for c in COMPANIONS.get(normalize(name), ()) if c not in named and installed(c)]
        label = "_".join(f"{n}-{v}" for n, v in pins if n in varying)
        sets.append(VersionSet(tuple(pins), re.sub(r"[^A-Za-z0-9._+-]", "-", label)))
    labels = [s.label for s in sets]
    if len(set(labels)) < len(labels):
        raise BadInput(f"--versions name the same set twice ({', '.join(labels)})")
    return sets


# --- the base environment ---------------------------------------------------------------------------


def base_distributions() -> dict[str, tuple[str, str]]:
    """normalized name -> (name, version) of every distribution the running interpreter sees, first wins."""
    found: dict[str, tuple[str, str]] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(normalize(name), (name, dist.version))
    return found


def installed(name: str) -> bool:
    return normalize(name) in base_distributions()


def _requirements(dist_name: str) -> list[Requirement]:
    try:
        texts = importlib.metadata.requires(dist_name) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    found = []
    for text in texts:
        try:
            found.append(Requirement(text))
        except InvalidRequirement:
            continue
    return found


def _applies(req: Requirement, base: dict, extras: bool = False) -> bool:
    """A requirement of the running platform; one behind an extra only where extras count (the harness's
    own, whose packages are installed), never another package's."""
    if req.marker is None:
        return True
    if "extra" in str(req.marker):
        return extras and normalize(req.name) in base and req.marker.evaluate({"extra": _extra_of(req)})
    return req.marker.evaluate()


def _extra_of(req: Requirement) -> str:
    match = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", str(req.marker))
    return match.group(1) if match else ""


def used_packages(frameworks) -> dict[str, str]:
    """normalized name -> name of every distribution the experiment's numbers pass through: the frameworks'
    packages, the core numerics, and what they require, as installed in the base."""
    from harness.backends import FRAMEWORKS

    base = base_distributions()
    by_import = importlib.metadata.packages_distributions()
    roots = list(CORE_PACKAGES)
    for framework in frameworks:
        for module in FRAMEWORKS[framework].packages:
            roots += by_import.get(module, [module])
    used: dict[str, str] = {}
    todo = [r for r in roots if normalize(r) in base]
    while todo:
        name = todo.pop()
        if normalize(name) in used:
            continue
        used[normalize(name)] = base[normalize(name)][0]
        todo += [r.name for r in _requirements(name) if _applies(r, base) and normalize(r.name) in base]
    return used


# --- the package index ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sources:
    """Where packages come from: the index options given to the matrix, passed to pip and uv alike."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()

    def options(self, tool: str = "pip") -> list[str]:
        """The options; for uv with several indexes also pip's choice of the best version over all of them
        (uv takes a package from the first index that has it, so PyPI's numpy could hide behind another's)."""
        options = ["--index-url", self.index_url] if self.index_url else []
        if tool == "uv" and self.extra_index_urls:
            options += ["--index-strategy", "unsafe-best-match"]
        for url in self.extra_index_urls:
            options += ["--extra-index-url", url]
        for link in self.find_links:
            options += ["--find-links", link]
        return options


def pip_find_links() -> tuple[str, ...]:
    """pip's configured find-links (pip.conf, PIP_FIND_LINKS): uv reads no pip configuration, so the
    wheels pip would find there are shown to uv too."""
    try:
        out = _run([sys.executable, "-m", "pip", "config", "list"], check=False).stdout
    except OSError:
        return ()
    links: list[str] = []
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key.endswith(".find-links"):
            links += [v for v in value.strip().strip("'\"").split() if v not in links]
    return tuple(links)


def index_versions(name: str, sources: Sources) -> list[str] | None:
    """The versions the index offers, newest first (pre-releases included); None for a package it lacks."""
    result = _run([sys.executable, "-m", "pip", "index", "versions", name, "--pre", *sources.options()], check=False)
    for line in result.stdout.splitlines():
        if line.startswith("Available versions:"):
            return [v.strip() for v in line.split(":", 1)[1].split(",") if v.strip()]
    if "No matching distribution" in result.stderr or result.returncode != 0:
        return None
    return []


def check_on_index(sets: list[VersionSet], sources: Sources) -> None:
    """Every named package is on the index with every named version, or BadInput naming the first that is not."""
    wanted: dict[str, set[str]] = {}
    for vset in sets:
        for name, version in vset.pins:
            wanted.setdefault(name, set()).add(version)
    for name, versions in wanted.items():
        offered = index_versions(name, sources)
        if offered is None:
            raise BadInput(f"unknown package {name!r}: the package index has no such package")
        public = {Version(v).public for v in offered}
        for version in sorted(versions, key=Version):
            if version not in offered and Version(version).public not in public:
                shown = ", ".join(offered[:12]) + (", ..." if len(offered) > 12 else "")
                raise BadInput(f"{name}=={version} is not on the package index; versions it has: {shown}")


def check_used(sets: list[VersionSet], used: dict[str, str], sources: Sources, experiment: str) -> None:
    """Every named package is one the experiment's numbers pass through (unknown ones are told as unknown)."""
    for name, _ in sets[0].pins:
        if normalize(name) in used:
            continue
        if not installed(name) and index_versions(name, sources) is None:
            raise BadInput(f"unknown package {name!r}: the package index has no such package")
        raise BadInput(
            f"package {name!r} is not used by experiment {experiment} with its frameworks; "
            f"valid choices: {', '.join(sorted(used.values(), key=str.lower))}"
        )


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


def _run(command: list[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    result = subprocess.run(command, capture_output=True, text=True, env=env, **kwargs)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... failed: {_one_line(result.stderr or result.stdout)}")
    return result


def _one_line(text: str) -> str:
    """A resolver's or installer's error as one line: its lines stripped of tree drawing, joined."""
    lines = [re.sub(r"^[\s×╰─▶│├└:]+", "", line).strip() for line in text.splitlines()]
    lines = [re.sub(r"^(error|cause|ERROR):\s*", "", line) for line in lines]
    lines = [line for line in lines if line and not line.startswith(("hint:", "WARNING", "[notice]"))]
    for start in ("The conflict is caused by", "Because", "No solution found"):
        at = next((i for i, line in enumerate(lines) if line.startswith(start)), None)
        if at is not None:
            lines = lines[at:]
            break
    return " ".join(lines)[:600] or "no message"


def resolver_inputs(vset: VersionSet, base: dict) -> tuple[list[str], list[str]]:
    """(roots, constraints): the harness's requirements with the named versions in place, and every other
    installed distribution held to its base version (public part: a +cpu build is found by its index)."""
    named = {normalize(n) for n, _ in vset.pins}
    roots = vset.requirement_lines()
    for req in _requirements("harness"):
        if normalize(req.name) not in named and _applies(req, base, extras=True):
            req.marker = None
            roots.append(str(req))
    constraints = [
        f"{name}=={Version(version).public}"
        for key, (name, version) in sorted(base.items())
        if key not in named and key != "harness" and _is_version(version)
    ]
    return roots, constraints


def _is_version(text: str) -> bool:
    try:
        Version(text)
    except InvalidVersion:
        return False
    return True


def resolve(vset: VersionSet, sources: Sources, tool: str, cache: Path | None = None) -> dict[str, tuple[str, str]]:
    """normalized name -> (name, version) the set resolves to, or BadInput naming the conflict; kept in
    cache/resolved/ under a hash of what decides it, so a second matrix over the same sets resolves nothing."""
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
            command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
            command += ["--report", str(report), "-r", str(roots_file), "-c", str(constraints_file)]
            command += sources.options()
        result = _run(command, check=False)
        if result.returncode != 0:
            raise BadInput(
                f"the set {' '.join(vset.requirement_lines())} does not resolve: {_one_line(result.stderr)} "
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
            _run([_uv(), "venv", str(tmp), "--python", sys.executable, "--quiet", "--allow-existing"])
            install = [_uv(), "pip", "install", "--python", str(tmp / "bin" / "python"), "--quiet"]
        else:
            _run([sys.executable, "-m", "venv", "--clear", "--without-pip", str(tmp)])
            install = [sys.executable, "-m", "pip", "--python", str(tmp / "bin" / "python"), "install", "--quiet"]
        if pins:
            _run([*install, "--no-deps", *pins, *sources.options(tool)])
        site = _run([str(tmp / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
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
    result = _run([str(env.python), "-c", PROBE, json.dumps(names), json.dumps(modules)], cwd=cwd)
    found = json.loads(result.stdout.strip().splitlines()[-1])
    for name, version in vset.pins:
        got = found["packages"].get(name)
        inside = got is not None and Path(got["location"]).resolve().is_relative_to(env.path.resolve())
        if got is None or Version(got["version"]).public != Version(version).public or not inside:
            where = "nothing" if got is None else f"{got['version']} from {got['location']}"
            raise BadInput(f"environment {env.path} should import {name}=={version}, but finds {where}")
    return found
