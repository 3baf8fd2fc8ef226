"""Implementations ready to run: a path entry's function in one framework, compiled by its backend.

The accuracy stage and the timing stage both take their callables from here, so a custom path is
run, differentiated and timed exactly like a built-in one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from harness import backends, paths


@dataclass(frozen=True)
class Implementation:
    """One (framework, path) ready to run: its compiled loss and gradient, or why there is none."""

    loss: Callable | None
    gradient: Callable | None
    unsupported: str = ""  # why the framework cannot run the path at all ('' where it can)
    no_gradient: str = ""  # why there is no gradient ('' where there is one)


def builtin(framework: str, path: str, chunk_size: int | None = None, block_size: int | None = None) -> Implementation:
    """A path entry's implementation in `framework`, with the sizes bound, compiled by the backend."""
    entry = paths.ENTRIES_BY_NAME[path]
    if framework in entry.unsupported:
        return Implementation(None, None, unsupported=entry.unsupported[framework])
    backend = backends.load(framework)
    module = paths.implementations_module(framework)
    if path not in module.PATHS:
        return Implementation(None, None, unsupported=f"{framework} has no implementation of {path}")
    lacking = missing_api(getattr(module, "NEEDS", {}).get(path, ()))
    if lacking:
        return Implementation(None, None, unsupported=lacking)
    loss = backend.compile(paths.bind_sizes(module.PATHS[path], chunk_size, block_size))
    gradients = getattr(module, "GRADIENTS", {})
    if not entry.gradient or path not in gradients:
        return Implementation(loss, None, no_gradient=f"{path} has no gradient in {framework}")
    return Implementation(loss, backend.compile_gradient(paths.bind_sizes(gradients[path], chunk_size, block_size)))


def _release(package: str) -> str:
    try:
        return f"{package} {importlib.import_module(package).__version__}"
    except (ImportError, AttributeError):
        return package


def missing_api(needs: tuple[str, ...]) -> str:
    """Why the installed releases cannot run a path ('' where they can): the first library function it
    calls (dotted names, declared beside the implementation as NEEDS[path]) that a release lacks, as
    'optax 0.1.4 has no optax.softmax_cross_entropy_with_integer_labels'. An older release is then a
    row with status unsupported, never a call that fails."""
    for name in needs:
        parts = name.split(".")
        found = None
        for split in range(len(parts), 0, -1):
            try:
                found = importlib.import_module(".".join(parts[:split]))
            except ImportError:
                continue
            for attribute in parts[split:]:
                found = getattr(found, attribute, None)
            break
        if found is None:
            return f"{_release(parts[0])} has no {name}"
    return ""


def custom(framework: str, fn: Callable) -> Implementation:
    """A user's callable, compiled like a built-in path; its gradient by the backend's autodiff."""
    backend = backends.load(framework)
    loss = backend.compile(fn)
    if backend.autodiff_gradient is None:
        return Implementation(loss, None, no_gradient=f"no gradient: a custom {framework} path has no backward pass")
    return Implementation(loss, backend.compile_gradient(backend.autodiff_gradient(fn)))


def implementations(
    frameworks, path_names, custom_callables: dict | None = None, chunk_size=None, block_size=None
) -> dict[tuple[str, str], Implementation]:
    """(framework, path) -> Implementation for every framework x path, then the user's callables."""
    built = {
        (framework, path): builtin(framework, path, chunk_size, block_size)
        for framework in frameworks
        for path in path_names
    }
    for (framework, name), fn in (custom_callables or {}).items():
        built[(framework, name)] = custom(framework, fn)
    return built


def evaluate(framework: str, fn: Callable, rounded, labels, device: str = "cpu"):
    """Run a compiled loss or gradient once on dtype-rounded NumPy logits: (float64 values, dtype returned).

    Transfers the same bits to the framework inside its dtype scope (JAX's x64 for float64 only)."""
    backend = backends.load(framework)
    with backend.dtype_scope(rounded.dtype.name):
        return backend.to_numpy(fn(*backend.to_native(rounded, labels, device)))
