"""The `loss` setting and column: every table names the loss it measured, the journal keys on it,
compare and merge read tables written before it as cross-entropy's, and custom paths and
harness.measure name the loss they implement."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import small_sweep

import harness
from harness import api, losses, pipeline
from harness.errors import ConfigError
from harness.paths import custom
from harness.sweep import journal
from harness.tools import compare

QUICK = ["timing.enabled=false", "progress=false", "workers=1", "frameworks=[numpy]", "paths=[fused]"]
SMALL = ["families=[spread]", "scales=[1.0,1000.0]", "n_rows=4", "n_classes=6", "dtypes=[float32]"]


def test_the_default_loss_is_cross_entropy_and_its_entry_says_so():
    entry = losses.entry()
    assert (losses.DEFAULT, entry.name, entry.title) == ("cross_entropy", "cross_entropy", "cross-entropy")
    assert entry.arrays == ("logits", "labels")
    assert entry.load("exact").__name__ == "exact_cross_entropy"
    assert losses.names()[0] == "cross_entropy"


def test_an_unknown_loss_fails_in_one_line_naming_the_choices():
    with pytest.raises(ConfigError, match=r"^unknown loss 'hinge'; valid choices: cross_entropy") as refused:
        api.prepare(*api.settings_of(api.compose_config(["loss=hinge"])))
    assert "\n" not in str(refused.value)


@pytest.mark.slow
def test_every_table_opens_with_the_loss(tmp_path):
    run = harness.run(None, [*QUICK, *SMALL, "grad.enabled=true", "row_errors=true"], run_dir=tmp_path)
    for name in ("errors", "grad_errors", "row_errors", "breaks"):
        table = pd.read_parquet(tmp_path / f"{name}.parquet")
        assert table.columns[0] == "loss", name
        assert set(table["loss"]) == {"cross_entropy"}, name
    assert run.errors.columns[0] == "loss"
    records = journal.read(tmp_path / journal.JOURNAL)
    assert {r["cell"]["loss"] for r in records} == {"cross_entropy"}


@pytest.mark.slow
def test_timings_open_with_the_loss(tmp_path):
    harness.run(None, [*QUICK, *SMALL, "timing.enabled=true", "timing.budget_s=0.001", "timing.min_blocks=1"], tmp_path)
    assert pd.read_parquet(tmp_path / "timings.parquet").columns[0] == "loss"


def test_a_cell_journaled_before_the_loss_column_is_cross_entropys():
    cell = {"framework": "numpy", "path": "fused", "dtype": "float32", "family": "spread", "scale": 1.0}
    cell |= {"n_rows": 4, "n_classes": 6}
    assert journal.cell_key(cell) == journal.cell_key(cell | {"loss": "cross_entropy"})
    assert journal.cell_key(cell) != journal.cell_key(cell | {"loss": "kl_divergence"})


def test_compare_reads_a_table_without_the_loss_column_as_cross_entropys():
    errors = pipeline.sweep_errors(small_sweep(frameworks=("numpy",), paths=("fused",), dtypes=("float32",)))
    before = errors.drop(columns="loss")
    compared = compare.compare_errors(before, errors)
    assert set(compared["change"]) == {compare.UNCHANGED} and set(compared["loss"]) == {"cross_entropy"}
    assert compare.different_settings({"seed": 0}, {"seed": 0, "loss": "cross_entropy"}) == []
    assert compare.different_settings({"seed": 0}, {"seed": 0, "loss": "kl_divergence"}) == ["loss"]


def test_a_custom_path_names_the_loss_it_implements():
    entry = {"framework": "numpy", "name": "mine", "fn": "harness.paths.numpy_paths:fused"}
    assert custom.parse([entry])[0].loss == "cross_entropy"
    assert custom.parse([entry | {"loss": "cross_entropy"}])[0].loss == "cross_entropy"
    with pytest.raises(ConfigError, match=r"^unknown loss 'hinge'; valid choices: cross_entropy"):
        custom.parse([entry | {"loss": "hinge"}])
    with pytest.raises(ConfigError, match=r"needs exactly the keys framework, name, fn \(and optionally loss\)"):
        custom.parse([entry | {"weight": 1}])


def test_measure_names_the_loss():
    from harness.paths.numpy_paths import fused

    errors = harness.measure(fused, "numpy", dtypes=["float32"], scales=[1.0], n_rows=4, n_classes=6, name="mine")
    assert set(errors["loss"]) == {"cross_entropy"} and set(errors["path"]) == {"mine"}
    with pytest.raises(ConfigError, match="unknown loss 'hinge'"):
        harness.measure(fused, "numpy", dtypes=["float32"], scales=[1.0], loss="hinge")


def test_the_error_bound_and_theorys_quantities_come_from_the_loss_entry(monkeypatch):
    """Cross-entropy's entry names its error bound (lse_bound) and its input quantities; an entry that
    names neither gets no bound (bound_ulp NaN) and max_exact_loss alone, by hand on two rows."""
    import dataclasses

    import numpy as np

    from harness.dtypes import DTYPES
    from harness.sweep import metrics, runner

    held, labels, f64 = np.array([[0.0, 0.0], [3.0, 1.0]]), np.array([0, 1]), DTYPES["float64"]
    exact = runner.exact_values(held, labels, f64, False)
    losses_by_hand = np.array([np.log(2.0), 2.0 + np.log1p(np.exp(-2.0))])  # lse(x) - x_y
    np.testing.assert_allclose(exact.hi, losses_by_hand, rtol=1e-15)
    np.testing.assert_array_equal(exact.bound, metrics.lse_bound(held, labels, exact.hi, f64))
    found = runner.quantities_of("cross_entropy", held, labels, exact)
    assert found["max_target_gap"] == 2.0 and found["max_neg_target_logit"] == 0.0
    assert found["max_lse"] == pytest.approx(3.0 + np.log1p(np.exp(-2.0)), rel=1e-15)

    bare = dataclasses.replace(losses.entry(), error_bound_at="", quantities_at="")
    monkeypatch.setattr(losses, "entry", lambda name=losses.DEFAULT: bare)
    exact = runner.exact_values(held, labels, f64, False)
    assert exact.bound is None
    assert runner.quantities_of("cross_entropy", held, labels, exact) == {"max_exact_loss": float(exact.hi.max())}
    cell = metrics.cell_metrics(exact.hi, exact.hi, exact.lo, f64, exact.bound)
    assert np.isnan(cell["bound_ulp"]) and np.isnan(cell["frac_within_bound"])


def test_the_paths_a_setting_may_name_are_the_losss_own(monkeypatch):
    """`paths` is checked against the loss's path entries (losses.path_names), and so are custom path
    names and the tables' row order: an entry whose paths module is binary cross-entropy's takes
    with_logits and refuses fused, in one line naming its own paths."""
    import dataclasses

    from harness.paths import PATH_NAMES
    from harness.sweep import runner

    assert losses.path_names() == PATH_NAMES
    assert runner.name_order()["path"] == list(PATH_NAMES)
    other = dataclasses.replace(losses.entry(), paths_at="harness.losses.binary_cross_entropy.paths")
    monkeypatch.setattr(losses, "entry", lambda name=losses.DEFAULT: other)
    own = ("naive", "probs", "with_logits", "log_sigmoid", "softplus")
    assert losses.path_names() == own and runner.name_order()["path"] == list(own)

    sweep = api.prepare(*api.settings_of(api.compose_config(QUICK[:-1] + ["paths=[with_logits]"])))[0]
    assert sweep.paths == ("with_logits",)
    with pytest.raises(ConfigError, match=r"^unknown path 'fused' in paths; valid choices: naive, probs, ") as refused:
        api.prepare(*api.settings_of(api.compose_config(QUICK)))
    assert "\n" not in str(refused.value)
    entry = {"framework": "numpy", "name": "with_logits", "fn": "numpy:log"}
    with pytest.raises(ConfigError, match="not a built-in path \\(naive, probs, with_logits"):
        custom.parse([entry])
    assert custom.parse([entry | {"name": "fused"}])[0].name == "fused"
