"""The timing stage of a loss measured on named arrays (harness.sweep.named_inputs): every
framework/path/dtype at the timing sizes, as cross-entropy's (harness.timing.stage) times its paths,
on the loss's first family at scale 1 under the first value of each of its settings: the inputs the
accuracy stage measures there, rounded to each dtype. bytes_min is every array read once."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pandas as pd
from tqdm import tqdm

from harness import backends, losses
from harness.dtypes import DTYPES, round_to
from harness.sweep import named_inputs
from harness.sweep.journal import OPTION_COLUMNS
from harness.timing.memory import measure_bandwidth
from harness.timing.stage import request_threads, time_framework, timings_frame

log = logging.getLogger(__name__)
TIMING_SCALE = 1.0


def timing_settings(sweep) -> dict:
    """The first value of each of the loss's settings that its first family varies over."""
    return named_inputs.setting_grid(losses.entry(sweep.loss), sweep.loss_settings, sweep.families[0])[0]


def implementations(paths: named_inputs.Paths, framework: str, names, dtype: str, options: dict, device: str) -> dict:
    """name -> an object with .loss (compiled, options bound) and .unsupported, as harness.paths.build's."""
    found = {}
    for name in names:
        reason = paths.unsupported(framework, name, options)
        loss = None if reason else paths.callables(framework, name, DTYPES[dtype], options, device)[0]
        found[name] = SimpleNamespace(loss=loss, unsupported=reason)
    return found


def time_sweep(sweep, bandwidth_gb_per_s: float | None = None, custom_callables: dict | None = None) -> pd.DataFrame:
    """The timings table of a named-array loss's sweep: one row per (framework, path, dtype, size)."""
    entry, settings = losses.entry(sweep.loss), timing_settings(sweep)
    make, timing = entry.load("inputs"), sweep.timing
    request_threads(sweep.frameworks, timing.threads)
    if bandwidth_gb_per_s is None:
        bandwidth_gb_per_s = measure_bandwidth(timing.threads)
    timer = {"budget_s": timing.budget_s, "rel_iqr_target": timing.rel_iqr_target, "min_blocks": timing.min_blocks}
    paths = named_inputs.Paths(sweep.loss, custom_callables or {})
    options = named_inputs.path_options(entry, settings)
    names = list(sweep.paths) + [name for _, name in paths.customs]
    total = len(sweep.timing_sizes) * len(sweep.dtypes) * len(sweep.frameworks) * len(names)
    rows = []
    with tqdm(total=total, disable=not sweep.progress, desc="timing", unit="cell") as bar:
        for n_rows, n_classes in sweep.timing_sizes:
            made = make.arrays(sweep.families[0], make.base(n_rows, n_classes, sweep.seed), TIMING_SCALE, settings)
            for dtype in sweep.dtypes:
                rounded = {name: round_to(made[name], dtype) for name in entry.arrays}
                key = {"dtype": dtype, "n_rows": n_rows, "n_classes": n_classes}
                for framework in sweep.frameworks:
                    own = [n for n in names if (framework, n) in paths.customs or n in sweep.paths]
                    on = backends.row_device(framework, sweep.device)
                    built = implementations(paths, framework, own, dtype, options, on)
                    with backends.load(framework).threads(timing.threads) as (in_force, note):
                        for row in time_framework(
                            framework, built, rounded, None, key | {"threads": in_force}, timer,
                            bandwidth_gb_per_s, sweep.device, note,
                        ):  # fmt: skip
                            rows.append(row)
                            bar.update(1)
    frame = timings_frame(rows).drop(columns=list(OPTION_COLUMNS))  # cross-entropy's options: not this loss's
    for at, (name, value) in enumerate(settings.items()):
        frame.insert(frame.columns.get_loc("n_classes") + 1 + at, name, value)
    frame["bandwidth_gb_per_s"] = bandwidth_gb_per_s
    log.info("timing: %d rows, %d thread(s)", len(frame), timing.threads)
    return frame
