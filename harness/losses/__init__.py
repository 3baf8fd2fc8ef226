"""Losses: everything the harness knows about one loss over logits, one entry per loss.

A loss lives in its own folder, `harness/losses/<name>/`, whose `__init__.py` declares `ENTRY`, a
`LossEntry`: its name and title in words, its formula, the arrays its paths take (by name), and
where the rest is found, by module path, so that reading an entry imports no framework and no
reference: the exact loss and gradient, theory's failure mechanisms, the path entries and their
per-framework implementations, the options, the edge inputs, the head. Adding a loss adds a folder
(see docs/pages/explanation/losses.md); `entry(name)` finds it, `names()` lists them.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import ConfigError

DEFAULT = "cross_entropy"  # the loss a setting, a table without a `loss` column, and a custom path mean


@dataclass(frozen=True)
class LossEntry:
    """One loss. The `*_at` fields name "module:attribute" of what the harness calls, imported when used."""

    name: str  # the `loss` setting and column
    title: str  # in words, for reports and plots ("cross-entropy")
    formula: str  # per row, in the notation of the docs
    arrays: tuple[str, ...]  # the arrays a path takes, in order (cross-entropy: logits, labels)
    gradient_formula: str = ""  # d loss / d logits, in words
    exact_at: str = ""  # per-row exact loss (arrays..., precision) -> ExactValue
    exact_gradient_at: str = ""  # exact d(sum of losses)/d(logits)
    error_bound_at: str = ""  # (arrays..., exact loss, fmt) -> per-row absolute error bound; empty: none
    quantities_at: str = ""  # (held arrays..., exact loss) -> theory's input quantities; empty: max_exact_loss only
    paths_at: str = ""  # the module of its path entries (ENTRIES, PATH_NAMES)
    options_at: str = ""  # the module of its options (CellOptions), empty where it has none
    edge_cases_at: str = ""  # the module of its edge inputs (EDGE_CASES)
    head_at: str = ""  # the module of its head paths (h, W, b), empty where it has none
    mechanisms: tuple[str, ...] = ()  # theory's failure mechanisms (harness.mechanisms)
    families: tuple[str, ...] = field(default_factory=tuple)  # input families it is measured on
    default_paths: tuple[str, ...] = ()  # what `paths: null` measures; empty: every path
    default_families: tuple[str, ...] = ()  # what `families: null` measures; empty: every family
    # A loss measured on named arrays (harness.sweep.named_inputs) also declares these; cross-entropy,
    # whose inputs, options and theory the stages keep, leaves them empty.
    inputs_at: str = ""  # the module of its families: FAMILIES, base, arrays, check_settings, quantities
    theory_at: str = ""  # the module of its thresholds: limits(framework, path, dtype, facts, settings)
    settings: tuple[tuple[str, tuple], ...] = ()  # (name, default values): its own settings, swept, a column each
    options: tuple[str, ...] = ()  # the settings its paths and references take as keywords
    differentiated: str = ""  # the array its gradient is taken with respect to
    per: str = "row"  # one loss per row, or per element (binary cross-entropy)
    quantities: tuple[str, ...] = ()  # theory's input quantities, columns of its tables (harness.sweep.named_inputs)
    loss_options: tuple[str, ...] = ()  # cross-entropy's options it takes beside reduction (sweep.named_options)

    @property
    def named(self) -> bool:
        """Whether the loss is measured on named arrays by harness.sweep.named_inputs."""
        return bool(self.inputs_at)

    @property
    def setting_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.settings)

    def load(self, field_name: str):
        """The object a `*_at` field names, imported now."""
        where = getattr(self, f"{field_name}_at")
        module, _, attribute = where.partition(":")
        found = importlib.import_module(module)
        return getattr(found, attribute) if attribute else found


@functools.cache
def names() -> tuple[str, ...]:
    """Every loss whose folder beside this file declares its ENTRY (read, not imported), the default first."""
    found = sorted(
        p.name
        for p in Path(__file__).parent.iterdir()
        if (p / "__init__.py").is_file() and "\nENTRY = " in (p / "__init__.py").read_text()
    )
    return tuple(sorted(found, key=lambda name: name != DEFAULT))


def entry(name: str = DEFAULT) -> LossEntry:
    """The entry of a loss; an unknown name fails in one line naming the valid choices."""
    check(name)
    return importlib.import_module(f"harness.losses.{name}").ENTRY


def path_names(name: str = DEFAULT) -> tuple[str, ...]:
    """The names of a loss's built-in paths (its paths module's PATH_NAMES): what `paths` may list
    for it, and what a custom path of that loss may not be called."""
    return tuple(entry(name).load("paths").PATH_NAMES)


def check(name) -> str:
    if name not in names():
        raise ConfigError(f"unknown loss {name!r}; valid choices: {', '.join(names())}")
    return name


def implementations_of(package: str, framework: str):
    """A loss's implementations in one framework: the module `<framework>_paths` of its folder
    (`package`, e.g. "harness.losses.kl_divergence"); importing it imports the framework."""
    return importlib.import_module(f"{package}.{framework}_paths")


def check_path_names(loss: str, names, valid) -> None:
    """One line naming a path `loss` does not have, and the valid choices."""
    for name in names:
        if name not in valid:
            raise ConfigError(f"unknown path {name!r} for loss {loss}; valid choices: {', '.join(valid)}")
