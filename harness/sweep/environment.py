"""What produced a result: versions, machine, threads, code revision, seed, command and config."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

from harness import backends

PACKAGES = (
    "numpy",
    "scipy",
    "torch",
    "jax",
    "jaxlib",
    "optax",
    "pandas",
    "pyarrow",
    "hydra-core",
    "ml_dtypes",
    "mpmath",
)
REPO = Path(__file__).resolve().parents[2]


def package_versions(packages=PACKAGES) -> dict[str, str | None]:
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def thread_settings() -> dict:
    """BLAS/OpenMP pools (threadpoolctl), PyTorch's intra-op threads and the thread variables."""
    from threadpoolctl import threadpool_info

    pools = [
        {k: info.get(k) for k in ("user_api", "internal_api", "num_threads", "version", "filepath")}
        for info in threadpool_info()
    ]
    settings = {"threadpools": pools}
    if "torch" in sys.modules:
        settings["torch_num_threads"] = sys.modules["torch"].get_num_threads()
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


def devices(frameworks) -> dict:
    found = {}
    if "torch" in frameworks and "torch" in sys.modules:
        torch = sys.modules["torch"]
        found["torch_cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    if "jax" in frameworks and "jax" in sys.modules:
        found["jax"] = [str(d) for d in sys.modules["jax"].devices()]
    return found


def collect(sweep, resolved_config: dict) -> dict:
    """The environment.json record of a run."""
    return {
        "python": sys.version,
        "platform": platform.platform(),
        "packages": package_versions(),
        "cpu": {"model": cpu_model(), "cores": os.cpu_count()},
        "threads": thread_settings(),
        "device": sweep.device,
        "devices": devices(sweep.frameworks),
        "frameworks": backends.facts(sweep.frameworks, sweep.device, sweep.dtypes),
        "harness": git_revision(),
        "seed": sweep.seed,
        "command": [Path(sys.executable).name, "-m", "harness", *sys.argv[1:]],
        "config": resolved_config,
    }
