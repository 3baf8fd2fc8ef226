"""User-supplied loss paths: a callable named by import path, swept like the built-in ones.

    custom_paths=[{framework: torch, name: mine, fn: 'mypkg.losses:my_cross_entropy'}]

An entry may name the loss it implements (`loss: cross_entropy`, the default); it must be the
sweep's `loss`. The callable takes the framework's own arrays, logits (N, C) in the tested dtype and integer
labels (N,), and returns the per-row loss (N,). It is imported, its signature checked and a tiny
input run through it before any work, so a bad import path or signature fails in one line.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass

import numpy as np

from harness import backends, losses
from harness.errors import ConfigError
from harness.losses import DEFAULT, path_names
from harness.losses import check as check_loss

KEYS = ("framework", "name", "fn")
OPTIONAL_KEYS = ("loss",)


@dataclass(frozen=True)
class CustomPath:
    framework: str
    name: str
    fn: str  # "module:attribute"
    loss: str = DEFAULT  # the loss it implements (harness.losses)


def parse(entries) -> tuple[CustomPath, ...]:
    """The `custom_paths` setting as CustomPaths; every malformed entry fails in one line."""
    found, names = [], set()
    for entry in entries or ():
        if not isinstance(entry, dict) or not set(KEYS) <= set(entry) <= set(KEYS + OPTIONAL_KEYS):
            raise ConfigError(
                f"each custom_paths entry needs exactly the keys {', '.join(KEYS)} (and optionally "
                f"{', '.join(OPTIONAL_KEYS)}); got {entry!r}"
            )
        custom = CustomPath(**{k: str(entry[k]) for k in KEYS + OPTIONAL_KEYS if k in entry})
        check_loss(custom.loss)
        if custom.framework not in backends.FRAMEWORKS:
            raise ConfigError(
                f"unknown framework {custom.framework!r} in custom_paths; "
                f"valid choices: {', '.join(backends.FRAMEWORKS)}"
            )
        built_in = path_names(custom.loss)
        if not custom.name.isidentifier() or custom.name in built_in:
            raise ConfigError(
                f"custom path name {custom.name!r} must be a Python identifier that is not a built-in path "
                f"({', '.join(built_in)})"
            )
        if (custom.framework, custom.name) in names:
            raise ConfigError(f"custom path {custom.framework}/{custom.name} is given twice")
        names.add((custom.framework, custom.name))
        found.append(custom)
    return tuple(found)


def load_callable(custom: CustomPath):
    """Import `module:attribute` and check that it can be called as fn(logits, labels)."""
    module_name, _, attribute = custom.fn.partition(":")
    if not module_name or not attribute:
        raise ConfigError(
            f"custom path {custom.name!r}: fn must look like 'package.module:function', got {custom.fn!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"custom path {custom.name!r}: cannot import {module_name!r} ({exc})") from None
    fn = module
    for part in attribute.split("."):
        if not hasattr(fn, part):
            raise ConfigError(f"custom path {custom.name!r}: {module_name!r} has no attribute {attribute!r}")
        fn = getattr(fn, part)
    if not callable(fn):
        raise ConfigError(f"custom path {custom.name!r}: {custom.fn} is not callable")
    try:
        inspect.signature(fn).bind(None, None)
    except TypeError:
        raise ConfigError(
            f"custom path {custom.name!r}: {custom.fn} must accept (logits, labels), its signature is "
            f"{inspect.signature(fn)}"
        ) from None
    except ValueError:
        pass  # no signature to inspect (a builtin): the trial run below decides
    return fn


def trial_input(loss: str) -> tuple[list[np.ndarray], tuple[int, ...]]:
    """A 2 x 3 float32 input of the loss's arrays, and the shape of the losses a path returns for it."""
    entry = losses.entry(loss)
    if not entry.named:
        return [np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]], dtype=np.float32), np.array([2, 0])], (2,)
    make = entry.load("inputs")
    settings = {name: default[0] for name, default in entry.settings}
    family = (entry.default_families or entry.families)[0]
    made = make.arrays(family, make.base(2, 3, 0), 1.0, settings)
    arrays = [np.asarray(made[name], dtype=np.float32) for name in entry.arrays]
    return arrays, (2, 3) if entry.per == "element" else (2,)


def check_runs(custom: CustomPath, fn) -> None:
    """Run the callable on a 2 x 3 float32 input: it must return one finite loss per row (per element
    for a loss with one per element)."""
    backend = backends.load(custom.framework)
    arrays, shape = trial_input(custom.loss)
    try:
        values, _ = backend.to_numpy(backend.compile(fn)(*[backend.transfer(a) for a in arrays]))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ConfigError(
            f"custom path {custom.name!r}: {custom.fn} failed on a 2x3 float32 trial input: "
            f"{type(exc).__name__}: {first}"
        ) from None
    if values.shape != shape:
        per = "element" if len(shape) == 2 else "row"
        raise ConfigError(
            f"custom path {custom.name!r}: {custom.fn} must return one loss per {per}, shape {shape} for a 2x3 "
            f"trial input; it returned shape {values.shape}"
        )


def check(customs: tuple[CustomPath, ...], frameworks, loss: str = DEFAULT) -> None:
    for custom in customs:
        if custom.loss != loss:
            raise ConfigError(
                f"custom path {custom.name!r} implements loss {custom.loss!r}, but the sweep measures "
                f"loss={loss}; give the entry loss: {loss}, or run it with loss={custom.loss}"
            )
        if custom.framework not in frameworks:
            raise ConfigError(
                f"custom path {custom.name!r} is for framework {custom.framework!r}, which is not in "
                f"frameworks=[{','.join(frameworks)}]"
            )
        check_runs(custom, load_callable(custom))


def callables(customs: tuple[CustomPath, ...]) -> dict:
    """(framework, name) -> the user's callable, as imported."""
    return {(custom.framework, custom.name): load_callable(custom) for custom in customs}


def named_callables(settings) -> dict:
    """(framework, name) -> callable, from the `custom_paths` setting (checked when the sweep was read)."""
    return callables(parse(settings))
