"""The language-model head's families in a sweep's settings: they run apart from the logit families,
take only some of the loss options, and a head file is read before any work."""

from __future__ import annotations

from harness.errors import ConfigError
from harness.sweep.head_inputs import HEAD_FAMILIES, read_head_file


def check(sweep) -> None:
    """Head families run apart from the logit families; a head file is read now, before any work."""
    heads = [f for f in sweep.families if f in HEAD_FAMILIES]
    if heads and len(heads) != len(sweep.families):
        others = [f for f in sweep.families if f not in HEAD_FAMILIES]
        raise ConfigError(
            f"families {heads} (the language-model head) and {others} (logits) cannot share a run; "
            f"run them separately, e.g. families=[{','.join(heads)}]"
        )
    unsupported = [
        f"{name}={list(getattr(sweep, name))}"
        for name, default in (
            ("class_weights", (None,)),
            ("label_smoothing", (0.0,)),
            ("z_loss", (0.0,)),
            ("softcap", (None,)),
            ("target", ("index",)),
        )
        if getattr(sweep, name) != default
    ] + (["option_sets"] if sweep.option_sets is not None else [])
    if heads and unsupported:
        raise ConfigError(
            f"the head families take reduction and ignore_fraction of the loss options, not {', '.join(unsupported)}; "
            "leave those at their defaults"
        )
    if heads and sweep.row_errors:
        raise ConfigError(
            "row_errors=true: the head families write no row errors (their losses are reduced); use row_errors=false"
        )
    if heads and len(sweep.n_rows) > 1:
        raise ConfigError(f"n_rows {list(sweep.n_rows)}: the head families take one n_rows; run one at a time")
    if "head_file" in heads:
        read_head_file(sweep.file.get("path"))
