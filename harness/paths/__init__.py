"""The registry of loss paths: one table keyed by (framework, path).

Each framework module (`numpy_paths`, `torch_paths`, `jax_paths`) holds a `PATHS` dict of small
pure functions ``(logits, labels) -> per-row loss`` in its own array type, plus the conversions
to and from NumPy. Frameworks are imported only when a sweep asks for them.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType

PATH_FORMULAS = {
    "naive": "-log(exp(x[y]) / sum(exp(x))): unshifted softmax, then log",
    "softmax_log": "-log(softmax(x)[y]) with the framework's own softmax",
    "log_softmax_nll": "-log_softmax(x)[y]: the framework's log-softmax, then NLL",
    "fused": "the framework's single cross-entropy call",
}
PATH_NAMES = tuple(PATH_FORMULAS)


@dataclass(frozen=True)
class FrameworkSpec:
    name: str
    module: str
    packages: tuple[str, ...]  # import names that must be present
    install: str  # what to pip install


FRAMEWORKS = {
    spec.name: spec
    for spec in (
        FrameworkSpec("numpy", "harness.paths.numpy_paths", ("numpy", "scipy", "ml_dtypes"), "numpy scipy ml_dtypes"),
        FrameworkSpec("torch", "harness.paths.torch_paths", ("torch",), "torch"),
        FrameworkSpec("jax", "harness.paths.jax_paths", ("jax", "optax"), "jax optax"),
    )
}


def missing_packages(framework: str) -> list[str]:
    return [p for p in FRAMEWORKS[framework].packages if importlib.util.find_spec(p) is None]


def load(framework: str) -> ModuleType:
    """The framework's module: PATHS, to_native, to_numpy, compile, version."""
    return importlib.import_module(FRAMEWORKS[framework].module)


def is_unsupported(exc: BaseException) -> bool:
    """Whether an exception says the framework cannot run this combination (vs. a failure)."""
    if isinstance(exc, NotImplementedError):
        return True
    text = str(exc).lower()
    return any(s in text for s in ("not implemented for", "not supported", "unsupported"))
