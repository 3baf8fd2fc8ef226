"""The entries of binary cross-entropy and KL divergence, in the shape of harness.losses.LossEntry: every
module path they name resolves, their arrays are what their families make and their paths take, and
reading them imports no framework."""

import inspect
import subprocess
import sys

import numpy as np
import pytest

from harness.losses import LossEntry
from harness.losses.binary_cross_entropy import entry as bce_entry
from harness.losses.kl_divergence import entry as kl_entry

ENTRIES = {"binary_cross_entropy": bce_entry, "kl_divergence": kl_entry}


@pytest.mark.parametrize("name", list(ENTRIES))
def test_entry_names_what_exists(name):
    module = ENTRIES[name]
    entry = module.ENTRY
    assert isinstance(entry, LossEntry) and entry.name == name
    exact, gradient = entry.load("exact"), entry.load("exact_gradient")
    assert tuple(inspect.signature(exact).parameters)[:3] == (*entry.arrays, "output_precision")
    assert tuple(inspect.signature(gradient).parameters)[:2] == entry.arrays
    assert set(entry.options) <= set(inspect.signature(exact).parameters)
    paths = entry.load("paths")
    assert paths.PATH_NAMES and all(e.name in paths.PATH_NAMES for e in paths.ENTRIES)
    for path_entry in paths.ENTRIES:
        assert set(path_entry.mechanisms) <= set(entry.mechanisms), path_entry.name
    families = entry.load("inputs").FAMILIES
    assert tuple(families) + entry.load("inputs").GIVEN == entry.families
    assert entry.differentiated in entry.arrays
    assert set(entry.options) <= set(entry.setting_names)


def test_families_make_the_entrys_arrays():
    from harness.losses.binary_cross_entropy import inputs as bce_inputs
    from harness.losses.kl_divergence import inputs as kl_inputs

    made = bce_inputs.spread(bce_inputs.draw((2, 3), seed=0), 1.0)
    assert tuple(made) == bce_entry.ENTRY.arrays and all(a.dtype == np.float64 for a in made.values())
    made = kl_inputs.near(kl_inputs.draw(2, 3, seed=0), 1.0, delta=1e-3)
    assert tuple(made) == kl_entry.ENTRY.arrays and all(a.dtype == np.float64 for a in made.values())


@pytest.mark.slow
def test_reading_the_entries_imports_no_framework():
    code = (
        "import sys; import harness.losses.binary_cross_entropy.entry, harness.losses.kl_divergence.entry; "
        "print(sorted(m for m in ('torch', 'jax', 'mlx', 'tensorflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
