"""What this machine has, read without importing any framework, backend or path: package versions,
CPU model, thread pools and variables, the harness's git revision.

harness.sweep.environment records it with the backends' facts (environment.json); the report
(harness.outputs.provenance) reads it where a run recorded no environment.json.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import subprocess
from pathlib import Path

# What the harness itself needs, besides the frameworks' packages (each backend declares its own)
HARNESS_PACKAGES = ("numpy", "scipy", "ml_dtypes", "pandas", "pyarrow", "hydra-core", "mpmath")
REPO = Path(__file__).resolve().parents[2]


def package_versions(packages=HARNESS_PACKAGES) -> dict[str, str | None]:
    """Installed version per package (None: not installed). A name is a distribution or an import
    name; an import name installed under another distribution (tensorflow from tensorflow-cpu) is
    looked up through it."""
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = _version_by_import_name(name)
    return versions


def _version_by_import_name(name: str) -> str | None:
    """Not installed where nothing imports as `name`; else the distribution whose top_level.txt names it
    (cheap), or, for one without that file, the one whose files hold it (a scan of every distribution)."""
    if importlib.util.find_spec(name) is None:
        return None
    for distribution in importlib.metadata.distributions():
        if name in (distribution.read_text("top_level.txt") or "").split():
            return distribution.version
    for distribution in importlib.metadata.packages_distributions().get(name, []):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def thread_settings() -> dict:
    """BLAS/OpenMP pools (threadpoolctl) and the thread variables."""
    from threadpoolctl import threadpool_info

    pools = [
        {k: info.get(k) for k in ("user_api", "internal_api", "num_threads", "version", "filepath")}
        for info in threadpool_info()
    ]
    settings = {"threadpools": pools}
    names = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "XLA_FLAGS")
    settings["env"] = {name: os.environ.get(name) for name in names if name in os.environ}
    return settings


def git_revision(repo: Path = REPO) -> dict:
    """The harness's commit and whether its tracked files differ from it (None outside a checkout)."""

    def git(*args):
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        status = git("status", "--porcelain", "--untracked-files=no")
        return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
