"""The loss options' settings, checked before any work: each a list swept like `dtypes`, or named
combinations (`option_sets`) when the full product would be wasteful.

`option_sets` lists the combinations to run, e.g. each option alone and the usual training
combination; an option a set does not name takes every value of its own list. With
`option_sets: null` (the default) the grid is the product of the lists.
"""

from __future__ import annotations

import itertools
import math

from omegaconf import DictConfig, ListConfig, OmegaConf

from harness.errors import ConfigError
from harness.paths.head import REDUCTIONS
from harness.paths.options import CLASS_WEIGHTS, OPTION_NAMES, TARGETS, CellOptions


def _number(low: float, high: float, closed_high: bool):
    def valid(v) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        return low <= v <= high if closed_high else low <= v < high

    return valid


def _positive_or_null(v) -> bool:
    return v is None or _number(0.0, math.inf, False)(v) and v > 0


RULES = {  # option -> (valid(value), the rule in words)
    "reduction": (lambda v: v in REDUCTIONS, "one of: " + ", ".join(REDUCTIONS)),
    "ignore_fraction": (_number(0.0, 1.0, True), "a number in [0, 1]"),
    "class_weights": (lambda v: v in CLASS_WEIGHTS, "null or random"),
    "label_smoothing": (_number(0.0, 1.0, False), "a number in [0, 1)"),
    "z_loss": (_number(0.0, math.inf, False), "a finite number >= 0"),
    "softcap": (_positive_or_null, "null or a finite number > 0"),
    "target": (lambda v: v in TARGETS, "one of: " + ", ".join(TARGETS)),
}


def _value(key: str, item):
    valid, rule = RULES[key]
    if not valid(item):
        raise ConfigError(f"bad {key} {item!r}; each {key} must be {rule}")
    return float(item) if isinstance(item, (int, float)) and key != "reduction" else item


def option_values(cfg: DictConfig, key: str) -> tuple:
    """A list setting (or one value) whose every item follows the option's rule, else one line naming it."""
    value = cfg.get(key)
    items = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
    if not items:
        raise ConfigError(f"{key} is empty; give one or more values, each {RULES[key][1]}")
    return tuple(dict.fromkeys(_value(key, item) for item in items))


def option_sets(cfg: DictConfig) -> tuple[dict, ...] | None:
    """`option_sets`: null, or a list of {option: one value} mappings (an empty one: the lists alone)."""
    value = cfg.get("option_sets")
    if value is None:
        return None
    if isinstance(value, ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"bad option_sets {value!r}; give null or a list of mappings, e.g. [{{}}, {{z_loss: 1e-4}}]")
    sets = []
    for item in value:
        if not isinstance(item, dict):
            raise ConfigError(f"bad option_sets entry {item!r}; each entry is a mapping of options to one value each")
        for key in item:
            if key not in OPTION_NAMES:
                raise ConfigError(f"unknown option {key!r} in option_sets; valid options: {', '.join(OPTION_NAMES)}")
        sets.append({key: _value(key, item[key]) for key in item})
    return tuple(sets)


def option_grid(lists: dict[str, tuple], sets: tuple[dict, ...] | None) -> tuple[CellOptions, ...]:
    """The cells' options: the product of the lists, or per set the product of the lists it leaves open."""
    chosen = [{}] if sets is None else sets
    grid = []
    for fixed in chosen:
        axes = [(fixed[name],) if name in fixed else lists[name] for name in OPTION_NAMES]
        grid.extend(CellOptions(**dict(zip(OPTION_NAMES, combo, strict=True))) for combo in itertools.product(*axes))
    return tuple(dict.fromkeys(grid))


def loss_options(cfg: DictConfig) -> dict:
    """The option lists (not reduction: the head shares it), option_sets, and the `masked` family's settings."""
    mask_fraction = cfg.get("mask_fraction", 0.1)
    if not _number(0.0, 1.0, False)(mask_fraction):
        raise ConfigError(f"bad mask_fraction {mask_fraction!r}; it must be a number in [0, 1)")
    mask_label = cfg.get("mask_label", False)
    if not isinstance(mask_label, bool):
        raise ConfigError(f"mask_label must be true or false, got {mask_label!r}")
    lists = {name: option_values(cfg, name) for name in OPTION_NAMES if name != "reduction"}
    return lists | {"option_sets": option_sets(cfg), "mask_fraction": float(mask_fraction), "mask_label": mask_label}
