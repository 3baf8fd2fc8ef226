"""The OmegaConf resolvers the configs use (`${logspace:...}`, `${or_default:...}`), registered on import.

Its own module so that reading a run's .hydra/config.yaml (harness.outputs.provenance) resolves it
without importing the sweep's validation, which imports backends and paths.
"""

from __future__ import annotations

import numpy as np
from omegaconf import OmegaConf

from harness.errors import ConfigError


def _logspace(start, stop, num) -> list[float]:
    """`${logspace:-2,4,25}`: num log-spaced values from 10**start to 10**stop."""
    try:
        return [float(v) for v in np.logspace(float(start), float(stop), int(num))]
    except (TypeError, ValueError):
        raise ConfigError(
            f"logspace needs numbers: ${{logspace:start,stop,num}}, got {start!r}, {stop!r}, {num!r}"
        ) from None


def _or_default(value, default):
    """`${or_default:${hydra:runtime.choices.experiment},default}`: a name for the run folder."""
    return default if value in (None, "None", "null", "") else value


OmegaConf.register_new_resolver("logspace", _logspace, replace=True)
OmegaConf.register_new_resolver("or_default", _or_default, replace=True)
