"""The settings of a loss measured on named arrays (harness.sweep.named_inputs): its families, its own
settings read from its group (`binary_cross_entropy: {targets: [...]}`) and checked by the loss, and what
cross-entropy's settings it refuses, each in one line before any work."""

from __future__ import annotations

from harness import losses
from harness.errors import ConfigError
from harness.paths.options import OPTION_NAMES, CellOptions
from harness.sweep.families import FAMILIES
from harness.sweep.head_inputs import HEAD_FAMILIES


def families(entry) -> tuple[str, ...]:
    """The families a loss is measured on: cross-entropy's grid and head families, another loss's own."""
    return entry.families if entry.named else tuple(FAMILIES) + HEAD_FAMILIES


def read(node: dict, entry) -> dict:
    """A named-array loss's own settings from its group (`binary_cross_entropy: {targets: [...]}`), each a
    list swept like dtypes, checked by the loss; cross-entropy has none."""
    if not entry.named:
        return {}
    settings = {}
    for name, default in entry.settings:
        value = node.get(name, list(default))
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if not items:
            raise ConfigError(f"{entry.name}.{name} is empty; give one value or a list of them")
        settings[name] = tuple(dict.fromkeys(items))
    entry.load("inputs").check_settings(settings)
    return settings


CROSS_ENTROPY_ONLY = ("edge_cases", "row_errors")


def check(sweep) -> None:
    """A named-array loss takes its own settings and the loss options its entry names (reduction, ignored
    rows, class weights), not cross-entropy's others, edge cases or row errors."""
    if not sweep.named:
        return
    entry = losses.entry(sweep.loss)
    takes = ", ".join(("reduction", *entry.loss_options, *(f"{sweep.loss}.{name}" for name in entry.setting_names)))
    default = CellOptions()
    for options in sweep.option_grid:
        changed = [name for name in OPTION_NAMES if getattr(options, name) != getattr(default, name)]
        foreign = [name for name in changed if name != "reduction" and name not in entry.loss_options]
        if foreign:
            raise ConfigError(
                f"{foreign[0]}={getattr(options, foreign[0])} is a cross-entropy option that loss={sweep.loss} "
                f"does not take; it takes {takes}"
            )
    on = [name for name in CROSS_ENTROPY_ONLY if getattr(sweep, name)]
    if on:
        raise ConfigError(f"{on[0]}=true is measured for cross-entropy only; use {on[0]}=false with loss={sweep.loss}")
