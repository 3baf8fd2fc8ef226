"""The sweep's settings, checked once before any work: each bad value fails in one line."""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from functools import cache

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from harness import losses, package
from harness.backends import FRAMEWORKS, check_device, missing_packages
from harness.dtypes import DTYPES
from harness.errors import ConfigError
from harness.paths import custom as custom_paths
from harness.paths.head import HEAD_PATH_NAMES, MODES, REDUCTIONS
from harness.paths.options import OPTION_NAMES
from harness.processes import cores
from harness.sweep import head_settings, inputs, loss_settings, named_files, option_settings, resolvers  # noqa: F401  resolvers: registers logspace, or_default
from harness.sweep.edge_cases import check_settings as check_edge_settings
from harness.sweep.head_inputs import HEAD_FAMILIES
from harness.sweep.inputs import GIVEN_FAMILIES, LABEL_CHOICES


@dataclass(frozen=True)
class TimingConfig:
    """The timing stage (harness.timing.timer): off unless enabled."""

    enabled: bool = False
    threads: int = 1
    budget_s: float = 0.2  # measured time per cell, beyond warm-up and compilation
    rel_iqr_target: float = 0.05  # stop early once IQR / median is this small
    min_blocks: int = 5  # samples per cell, whatever the budget
    sizes: tuple = ()  # (n_rows, n_classes) pairs; empty: n_rows x the first n_classes


@dataclass(frozen=True)
class SweepConfig:
    experiment: str
    frameworks: tuple[str, ...]
    paths: tuple[str, ...]
    dtypes: tuple[str, ...]
    families: tuple[str, ...]
    scales: tuple[float, ...]
    n_rows: tuple[int, ...]  # one sweep may cover several row counts (token_sweep) ...
    n_classes: tuple[int, ...]  # ... and several class counts
    seed: int
    label: str
    device: str = "cpu"  # cpu, or cuda for PyTorch and JAX (see harness.backends)
    progress: bool = False
    row_errors: bool = False  # also write row_errors.parquet: one row per (cell, logit row)
    file: dict = field(default_factory=dict)  # settings of the `file` family (harness.sweep.logit_files)
    inline: dict = field(default_factory=dict)  # logits and labels of the `inline` family
    custom_paths: tuple = ()  # user paths: dicts with framework, name, fn (harness.paths.custom)
    gradient: bool = False  # also measure d(sum of losses)/d(logits): grad_errors table and plots
    chunk_size: int = 256  # `chunked` path: classes per chunk
    block_size: int = 128  # `online` path: classes per block
    timing: TimingConfig = field(default_factory=TimingConfig)
    bits_lost_limit: float | None = None  # breakdown: more bits lost than this counts (None: half of p)
    mode: tuple[str, ...] = ("eager",)  # head paths: eager, compiled (harness.paths.head)
    reduction: tuple[str, ...] = ("none",)  # head paths: none, mean, sum
    head: dict = field(default_factory=dict)  # the head families' settings (_head below)
    ignore_fraction: tuple[float, ...] = (0.0,)  # loss options (harness.paths.options), swept like dtypes
    class_weights: tuple = (None,)
    label_smoothing: tuple[float, ...] = (0.0,)
    z_loss: tuple[float, ...] = (0.0,)
    softcap: tuple = (None,)
    target: tuple[str, ...] = ("index",)
    option_sets: tuple | None = None  # named combinations of the options (harness.sweep.option_settings)
    mask_fraction: float = 0.1  # family `masked`: the fraction of each row's logits set to -inf
    mask_label: bool = False  # family `masked`: also mask the label (exact loss +inf)
    edge_cases: bool = False  # the edge-case stage instead of the grid (harness.sweep.edge_runner)
    workers: int | str = "auto"  # processes measuring the grid (harness.sweep.workers): auto or >= 1
    loss: str = losses.DEFAULT  # the loss measured (harness.losses): the `loss` column of every table
    loss_settings: dict = field(default_factory=dict)  # a named-array loss's own settings: name -> values

    def __post_init__(self):
        for key in ("n_rows", "n_classes"):
            if isinstance(getattr(self, key), int):
                object.__setattr__(self, key, (getattr(self, key),))
            else:  # a list as read back from sweep.json
                object.__setattr__(self, key, tuple(getattr(self, key)))
        if isinstance(self.timing, dict):  # as read back from sweep.json
            object.__setattr__(self, "timing", TimingConfig(**self.timing))

    @property
    def kind(self) -> str:
        """Which kind of run this is, decided here once: `edge_cases` (edge_cases=true), `head` (the
        language-model head's families) or `grid` (logits, with or without loss options)."""
        if self.edge_cases:
            return "edge_cases"
        return "head" if any(f in HEAD_FAMILIES for f in self.families) else "grid"

    @property
    def timing_sizes(self) -> tuple[tuple[int, int], ...]:
        return self.timing.sizes or ((self.n_rows[0], self.n_classes[0]),)

    def sizes(self, family: str) -> tuple[tuple[int, int] | None, ...]:
        """(n_rows, n_classes) pairs swept for a family; None where the data fixes the shape."""
        if family in GIVEN_FAMILIES:
            return (None,)
        return tuple(itertools.product(self.n_rows, self.n_classes))

    @property
    def named(self) -> bool:
        """Whether the loss is measured on named arrays (harness.sweep.named_inputs), not as cross-entropy."""
        return losses.entry(self.loss).named

    @property
    def n_cells(self) -> int:
        if self.named:
            from harness.sweep import named_inputs

            return named_inputs.n_cells(self)
        per_input = (len(self.frameworks) * len(self.paths) + len(self.custom_paths)) * len(self.dtypes)
        return per_input * len(self.scales) * sum(len(self.sizes(f)) for f in self.families) * len(self.option_grid)

    @property
    def option_grid(self) -> tuple:
        """The loss options of the cells (harness.paths.options.CellOptions), reduction outermost."""
        lists = {name: getattr(self, name) for name in OPTION_NAMES}
        return option_settings.option_grid(lists, self.option_sets)


def _choices(cfg: DictConfig, key: str, singular: str, valid) -> tuple[str, ...]:
    value = cfg.get(key)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple, ListConfig)) or len(value) == 0:
        raise ConfigError(f"{key} is empty; choose one or more of: {', '.join(valid)}")
    for item in value:
        if item not in valid:
            raise ConfigError(f"unknown {singular} {item!r} in {key}; valid choices: {', '.join(valid)}")
    return tuple(dict.fromkeys(str(v) for v in value))


def _whole(value, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _integer(cfg: DictConfig, key: str, minimum: int) -> int:
    return _whole(cfg.get(key), key, minimum)


def _counts(cfg: DictConfig, key: str, minimum: int) -> tuple[int, ...]:
    """An integer setting, or a list of them, each >= minimum: sorted, without repeats."""
    value = cfg.get(key)
    items = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
    if not items:
        raise ConfigError(f"{key} is empty; give an integer >= {minimum} or a list of them")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or item < minimum:
            raise ConfigError(f"{key} must be an integer >= {minimum} (or a list of them), got {item!r}")
    return tuple(sorted(set(items)))


def _positive(value, key: str, kind=(int, float)):
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{key} must be a number > 0, got {value!r}")
    return value


def _timing(cfg: DictConfig) -> TimingConfig:
    node = _plain(cfg, "timing")
    sizes = []
    for size in node.get("sizes") or ():
        if (
            not isinstance(size, (list, tuple))
            or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)
            or size[0] < 1
            or size[1] < 2
        ):
            raise ConfigError(f"timing.sizes must be [n_rows, n_classes] pairs (rows >= 1, classes >= 2), got {size!r}")
        sizes.append(tuple(size))
    threads = _timing_threads(node.get("threads", 1))
    min_blocks = _whole(node.get("min_blocks", 5), "timing.min_blocks", 1)
    return TimingConfig(
        enabled=_flag(cfg, "timing", "enabled"),
        threads=threads,
        budget_s=float(_positive(node.get("budget_s", 0.2), "timing.budget_s")),
        rel_iqr_target=float(_positive(node.get("rel_iqr_target", 0.05), "timing.rel_iqr_target")),
        min_blocks=min_blocks,
        sizes=tuple(sizes),
    )


def _timing_threads(value) -> int:
    """timing.threads: a whole number >= 1, or `all`, every core this process may run on (what
    PyTorch uses by default where each core is a physical one)."""
    if value == "all":
        return cores()
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"timing.threads must be an integer >= 1 or all, got {value!r}")
    return value


def _flag(cfg: DictConfig, group: str | None, key: str, default: bool = False) -> bool:
    """A yes/no setting, top-level (group None) or inside a group such as `timing`."""
    node = cfg if group is None else _group(cfg, group)
    value = node.get(key, default) if node is not None else default
    if not isinstance(value, bool):
        name = key if group is None else f"{group}.{key}"
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value


def _group(cfg: DictConfig, key: str) -> DictConfig | None:
    node = cfg.get(key)
    if node is not None and not isinstance(node, DictConfig):
        raise ConfigError(f"{key} is a group of settings, not a value: set {key}.<name>=..., got {key}={node!r}")
    return node


def _workers(value) -> int | str:
    if value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"workers must be auto or an integer >= 1, got {value!r}")
    return value


def _bits_lost_limit(cfg: DictConfig) -> float | None:
    value = cfg.get("bits_lost_limit")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"bits_lost_limit must be a number >= 0 or null (half the significand bits), got {value!r}")
    return float(value)


def _plain_list(cfg: DictConfig, key: str) -> list:
    node = cfg.get(key)
    if node is None:
        return []
    if not isinstance(node, ListConfig):
        raise ConfigError(f"{key} must be a list, e.g. {key}=[{{framework: torch, name: mine, fn: 'pkg.mod:fn'}}]")
    return OmegaConf.to_container(node, resolve=True)


def _plain(cfg: DictConfig, key: str) -> dict:
    node = _group(cfg, key)
    return dict(OmegaConf.to_container(node, resolve=True)) if node is not None else {}


def _scales(cfg: DictConfig) -> tuple[float, ...]:
    value = cfg.get("scales")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple, ListConfig)) or len(value) == 0:
        raise ConfigError(
            "scales is empty; give positive numbers, e.g. scales=[0.1,1,10] or scales='${logspace:-2,4,25}'"
        )
    scales = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item) or item <= 0:
            raise ConfigError(f"bad scale {item!r} in scales; each scale must be a finite number > 0")
        scales.append(float(item))
    return tuple(sorted(set(scales)))


def check_installed(frameworks: tuple[str, ...]) -> None:
    for name in frameworks:
        missing = missing_packages(name)
        if missing:
            others = [f for f in frameworks if f != name] or ["numpy"]
            raise ConfigError(
                f"framework {name!r} needs the package(s) {', '.join(missing)} "
                f"({package.install_line(name, FRAMEWORKS[name].install)}), "
                f"or leave it out: frameworks=[{','.join(others)}]"
            )


def resume_flag(cfg: DictConfig) -> bool:
    return _flag(cfg, None, "resume")


CONF_DIR = package.CONF_DIR  # conf/: harness.conf in an installed copy


@cache
def known_settings() -> dict:
    """The settings of conf/config.yaml (nested as there), without Hydra's own and the defaults list."""
    base = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "config.yaml"), resolve=False)
    return {k: v for k, v in base.items() if k not in ("defaults", "hydra")}


def check_known_keys(cfg: DictConfig, known: dict | None = None, prefix: str = "") -> None:
    """Refuse a key conf/config.yaml does not have, e.g. a typo added with `+fo=1`, which Hydra accepts."""
    known = known_settings() if known is None else known
    for key in cfg.keys():
        if key not in known:
            raise ConfigError(f"unknown setting {prefix + str(key)!r}; valid settings: {', '.join(known)}")
        node = cfg._get_node(key)
        if isinstance(known[key], dict) and isinstance(node, DictConfig):
            check_known_keys(node, known[key], f"{prefix}{key}.")


def sweep_config(cfg: DictConfig, experiment: str) -> SweepConfig:
    """Validate the composed Hydra config; raise ConfigError naming the first bad value."""
    try:
        check_known_keys(cfg)
        return _sweep_config(cfg, experiment)
    except OmegaConfBaseException as exc:  # e.g. a resolver's ConfigError, wrapped by OmegaConf
        cause = exc.__cause__ if isinstance(exc.__cause__, ConfigError) else None
        raise ConfigError(str(cause) if cause else f"bad setting: {str(exc).splitlines()[0]}") from None


def _sweep_config(cfg: DictConfig, experiment: str) -> SweepConfig:
    label = cfg.get("label")
    if label not in LABEL_CHOICES:
        raise ConfigError(f"unknown label {label!r}; valid choices: {', '.join(LABEL_CHOICES)}")
    seed = _integer(cfg, "seed", 0)
    loss = losses.check(cfg.get("loss", losses.DEFAULT))  # first: its paths are the valid choices of `paths`
    entry = losses.entry(loss)
    sweep = SweepConfig(
        experiment=experiment,
        frameworks=_choices(cfg, "frameworks", "framework", tuple(FRAMEWORKS)),
        paths=_loss_choices(cfg, "paths", "path", losses.path_names(loss), entry.default_paths),
        dtypes=_choices(cfg, "dtypes", "dtype", tuple(DTYPES)),
        families=_loss_choices(cfg, "families", "family", loss_settings.families(entry), entry.default_families),
        scales=_scales(cfg),
        n_rows=_counts(cfg, "n_rows", 1),
        n_classes=_counts(cfg, "n_classes", 2),
        seed=seed,
        label=label,
        device=str(cfg.get("device", "cpu")),
        progress=_flag(cfg, None, "progress", default=True),
        row_errors=_flag(cfg, None, "row_errors"),
        file=_plain(cfg, "file"),
        inline=_plain(cfg, "inline"),
        bits_lost_limit=_bits_lost_limit(cfg),
        gradient=_flag(cfg, "grad", "enabled"),
        timing=_timing(cfg),
        chunk_size=_integer(cfg, "chunk_size", 1),
        block_size=_integer(cfg, "block_size", 1),
        custom_paths=tuple(dataclasses.asdict(c) for c in custom_paths.parse(_plain_list(cfg, "custom_paths"))),
        mode=_choices(cfg, "mode", "mode", MODES),
        reduction=_choices(cfg, "reduction", "reduction", REDUCTIONS),
        head=_head(cfg),
        edge_cases=_flag(cfg, None, "edge_cases"),
        workers=_workers(cfg.get("workers", "auto")),
        loss=loss,
        loss_settings=loss_settings.read(_plain(cfg, entry.name), entry),
        **option_settings.loss_options(cfg),
    )
    loss_settings.check(sweep)
    head_settings.check(sweep)
    check_edge_settings(sweep)
    check_installed(sweep.frameworks)
    check_device(sweep.device, sweep.frameworks)
    custom_paths.check(custom_paths.parse(sweep.custom_paths), sweep.frameworks, sweep.loss)
    for family in sweep.families:
        if family in GIVEN_FAMILIES:  # a bad file or inline table fails here, before any work
            given_inputs(sweep, family)
    return sweep


def _loss_choices(cfg: DictConfig, key: str, singular: str, valid, default) -> tuple[str, ...]:
    """A list of names, or null for the loss's defaults (every valid one where it declares none)."""
    if cfg.get(key) is None:
        return tuple(default or valid)
    return _choices(cfg, key, singular, valid)


def _head(cfg: DictConfig) -> dict:
    """The `head` group: d >= 1, bias, paths, chunk_size, compiled_paths, large_n_classes, large_dtype."""
    node = _plain(cfg, "head")
    compiled = node.get("compiled_paths")
    large = node.get("large_n_classes")
    return {
        "d": _whole(node.get("d", 64), "head.d", 1),
        "bias": _flag(cfg, "head", "bias"),
        "paths": _head_paths(node.get("paths", ["linear_fused", "linear_chunked"]), "head.paths"),
        "chunk_size": _whole(node.get("chunk_size", 4096), "head.chunk_size", 1),
        "compiled_paths": None if compiled is None else _head_paths(compiled, "head.compiled_paths"),
        "large_n_classes": None if large is None else _whole(large, "head.large_n_classes", 2),
        "large_dtype": _choices(
            {"head.large_dtype": node.get("large_dtype", "bfloat16")}, "head.large_dtype", "dtype", DTYPES
        )[0],
    }


def _head_paths(value, key: str) -> tuple[str, ...]:
    return _choices({key: value}, key, "head path", HEAD_PATH_NAMES)


def given_inputs(sweep: SweepConfig, family: str):
    """The given family's inputs, checked: cross-entropy's logits and labels, another loss's named arrays."""
    entry = losses.entry(sweep.loss)
    if entry.named:
        return named_files.given(entry, family, sweep.file, sweep.inline)
    return given_draw(sweep, family)


def given_draw(sweep: SweepConfig, family: str) -> inputs.Draw:
    """The logits and labels of a given family (`file` or `inline`)."""
    if family == "file":
        return inputs.file_draw(sweep.file)
    return inputs.inline_draw(sweep.inline.get("logits"), sweep.inline.get("labels"))
