"""Backends: everything the harness knows about one framework, one module per framework.

A backend module (`harness.backends.<name>`) holds: the packages it needs and the pip line that
installs them; bit-exact transfer to and from NumPy (`to_native`, `to_numpy`, bfloat16 included);
device placement (`check_device`, `to_native(..., device=)`) and `sync`; how a loss is compiled
(`compile`, `compile_gradient`, `clear_compile_cache`, `COMPILES`); autodiff (`autodiff_gradient`);
the scope a dtype runs in (`dtype_scope`: JAX's x64 only for float64); thread control for timing
(`threads`); whether results flush subnormals to zero, measured on the running device
(`flushes_subnormals`); and its versions (`versions`).

This package's own module imports no framework: it only names them, so a missing framework is a
clear one-line error before any work, never an ImportError mid-sweep. Outside the backends and the
per-framework path implementations (`harness/paths/<name>_paths.py`) no module imports a framework.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType

from harness.errors import ConfigError


@dataclass(frozen=True)
class Framework:
    """A framework the harness can sweep: its backend module, the packages it needs, how to install them."""

    name: str
    packages: tuple[str, ...]  # import names that must be present
    install: str  # the pip line that installs what is missing
    default: bool  # in the default `frameworks` list

    @property
    def module(self) -> str:
        return f"harness.backends.{self.name}"


FRAMEWORKS: dict[str, Framework] = {
    spec.name: spec
    for spec in (
        Framework("numpy", ("numpy", "scipy", "ml_dtypes"), "pip install numpy scipy ml_dtypes", True),
        Framework("torch", ("torch",), "pip install torch==2.13.0", True),
        Framework("jax", ("jax", "optax"), "pip install jax==0.10.2 optax==0.2.8", True),
    )
}
DEVICES = ("cpu", "cuda")


def missing_packages(framework: str) -> list[str]:
    return [p for p in FRAMEWORKS[framework].packages if importlib.util.find_spec(p) is None]


def check_available(frameworks) -> None:
    """One line naming an unknown framework or the packages a known one lacks, and how to install them."""
    for name in frameworks:
        if name not in FRAMEWORKS:
            raise ConfigError(f"unknown framework {name!r}; valid choices: {', '.join(FRAMEWORKS)}")
        missing = missing_packages(name)
        if missing:
            raise ConfigError(
                f"framework {name!r} needs {', '.join(missing)}, which is not installed; "
                f"install it with: {FRAMEWORKS[name].install}"
            )


def load(framework: str) -> ModuleType:
    """The framework's backend module (imports the framework)."""
    return importlib.import_module(FRAMEWORKS[framework].module)


def check_device(device: str, frameworks) -> None:
    """Fail before any work when the device is unknown or absent for a framework that would use it."""
    if device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; valid choices: {', '.join(DEVICES)}")
    if device == "cpu":
        return
    for name in frameworks:
        load(name).check_device(device)


def row_device(framework: str, device: str) -> str:
    """The device a framework's rows run on: NumPy (and any CPU-only framework) always the CPU."""
    return device if device in load(framework).DEVICES else "cpu"


def facts(frameworks, device: str, dtypes) -> dict:
    """What environment.json records of each framework: versions, how it compiles, and whether it
    flushes subnormal results to zero per dtype (measured now, on the device it runs on)."""
    record = {}
    for name in frameworks:
        backend = load(name)
        on = row_device(name, device)
        record[name] = {
            "versions": backend.versions(),
            "device": on,
            "compiled": backend.COMPILE_NOTE,
            "flushes_subnormals": {dtype: backend.flushes_subnormals(dtype, on) for dtype in dtypes},
        }
    return record
