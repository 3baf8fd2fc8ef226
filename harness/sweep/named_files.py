"""The given inputs of a loss measured on named arrays (harness.sweep.named_inputs): family `file`, one
file holding each of the loss's arrays under the key `file.<array>_key` (binary cross-entropy:
`file.logits_key` and `file.targets_key`; KL: `file.teacher_key` and `file.student_key`), read as
harness.sweep.logit_files reads logits, never through pickle; and family `inline`, each array written
in the settings as `inline.<array>`. Either is checked by the loss (`check_inputs`: targets in [0, 1],
shapes that agree) when the settings are read, in one line, before any work."""

from __future__ import annotations

import numpy as np

from harness.errors import ConfigError
from harness.sweep.logit_files import pick_array, read_contents

GIVEN = ("file", "inline")


def given(entry, family: str, file_settings: dict, inline_settings: dict) -> dict[str, np.ndarray]:
    """The loss's arrays (rows, columns) of a given family, float64, checked by the loss."""
    if family == "file":
        path = file_settings.get("path")
        if not path:
            keys = " ".join(f"file.{name}_key=..." for name in entry.arrays)
            raise ConfigError(f"family 'file' needs file.path=<.npy/.npz/.pt/.mat file> and {keys}")
        contents = read_contents(path)
        found = {
            name: pick_array(contents, file_settings.get(f"{name}_key"), f"file.{name}_key", path)
            for name in entry.arrays
        }
    else:
        missing = [name for name in entry.arrays if inline_settings.get(name) is None]
        if missing:
            raise ConfigError(
                f"family 'inline' needs inline.{missing[0]}: a list of rows (arrays {', '.join(entry.arrays)})"
            )
        found = {name: inline_settings[name] for name in entry.arrays}
    arrays = {}
    for name, value in found.items():
        try:
            array = np.array(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{family} {name} must be rows of numbers: {exc}") from None
        if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1 or not np.isfinite(array).all():
            raise ConfigError(f"{family} {name} must be finite (rows, columns) numbers, got shape {array.shape}")
        arrays[name] = array
    entry.load("inputs").check_inputs(*(arrays[name] for name in entry.arrays))
    return arrays
