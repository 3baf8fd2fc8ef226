"""A version matrix's version sets and the checks made of them before anything is built: the packages
the experiment uses, and the package index's names and versions.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

# packages whose release goes with another's of the same number: named with it unless named themselves
COMPANIONS = {"jax": ("jaxlib",), "mlx": ("mlx-cpu",)}
CORE_PACKAGES = ("numpy", "ml_dtypes", "mpmath")  # what every experiment's numbers pass through


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
            raise BadInput(
                f"malformed --versions {spec!r}: write NAME==V1,V2,... (e.g. optax==0.2.5,0.2.8); "
                "the experiment's settings go before --versions"
            )
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


def requirements(dist_name: str) -> list[Requirement]:
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


def applies(req: Requirement, base: dict, extras: bool = False) -> bool:
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
        todo += [r.name for r in requirements(name) if applies(r, base) and normalize(r.name) in base]
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
        out = run_quiet([sys.executable, "-m", "pip", "config", "list"], check=False).stdout
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
    result = run_quiet(
        [sys.executable, "-m", "pip", "index", "versions", name, "--pre", *sources.options()], check=False
    )
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


# --- helpers ---


def run_quiet(command: list[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    result = subprocess.run(command, capture_output=True, text=True, env=env, **kwargs)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... failed: {one_line(result.stderr or result.stdout)}")
    return result


def is_version(text: str) -> bool:
    try:
        Version(text)
    except InvalidVersion:
        return False
    return True


def one_line(text: str) -> str:
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
