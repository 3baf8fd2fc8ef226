"""The runner on small grids: statuses, failures as rows, and determinism."""

import numpy as np
import pandas as pd
import pytest
from conftest import small_sweep

from harness import pipeline
from harness.dtypes import DTYPES
from harness.outputs import tables
from harness.paths import numpy_paths
from harness.sweep import metrics


@pytest.fixture(scope="module")
def errors() -> pd.DataFrame:
    return pipeline.sweep_errors(small_sweep())


def test_one_row_per_cell_with_documented_columns(errors):
    assert list(errors.columns) == list(tables.ERROR_COLUMNS)
    assert len(errors) == small_sweep().n_cells
    assert not errors.duplicated(list(tables.KEY_COLUMNS)).any()
    assert set(errors["status"]) <= set(metrics.STATUSES)


def test_inputs_beyond_the_dtype_are_input_inf(errors):
    # spread at scale 1e5 puts logits past float16's 65504 but not past bfloat16's 3.4e38
    cells = errors[(errors["family"] == "spread") & (errors["scale"] == 1e5)]
    assert (cells.loc[cells["dtype"] == "float16", "status"] == "input_inf").all()
    assert (cells.loc[cells["dtype"] != "float16", "status"] != "input_inf").all()
    assert cells.loc[cells["dtype"] == "float16", "max_ulp_err"].isna().all()


def test_stable_paths_never_break_where_the_exact_loss_is_representable(errors):
    stable = errors[errors["path"].isin(["log_softmax_nll", "fused"]) & (errors["status"] != "input_inf")]
    representable = stable["max_exact_loss"] < stable["dtype"].map(lambda d: DTYPES[d].max_finite)
    assert (stable.loc[representable, "status"] == "ok").all()


def test_naive_breaks_in_every_dtype_at_the_largest_scales(errors):
    naive = errors[(errors["path"] == "naive") & (errors["scale"] == 1000.0)]
    assert naive["status"].isin(metrics.FAILED).all()


def test_small_scales_are_accurate_everywhere(errors):
    calm = errors[errors["scale"] == 0.01]
    assert (calm["status"] == "ok").all()
    assert calm.loc[calm["dtype"] == "float64", "max_ulp_err"].max() < 4


def test_offset_family_has_the_same_exact_loss_at_every_scale():
    # the exact loss ignores a common shift, up to the rounding of the shifted logits
    errors = pipeline.sweep_errors(small_sweep(frameworks=("numpy",), dtypes=("float64",), families=("offset",)))
    by_scale = errors.groupby("scale")["max_exact_loss"].first()
    assert by_scale.max() - by_scale.min() < 1e-9


def test_a_raising_implementation_is_a_row_not_a_crash(monkeypatch):
    def not_for_half(x, y):
        if x.dtype == np.float16:
            raise NotImplementedError("fused not implemented for 'Half'")
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setitem(numpy_paths.PATHS, "fused", not_for_half)
    errors = pipeline.sweep_errors(small_sweep(frameworks=("numpy",), paths=("fused",), dtypes=("float16", "float32")))
    half = errors[errors["dtype"] == "float16"]
    single = errors[errors["dtype"] == "float32"]
    assert set(half.loc[half["status"] != "input_inf", "status"]) == {"unsupported"}
    assert half["message"].str.contains("not implemented for 'Half'").any()
    assert set(single["status"]) == {"error"}
    assert (single["message"] == "RuntimeError: boom").all()


def test_a_result_in_another_dtype_is_rounded_and_noted():
    errors = pipeline.sweep_errors(small_sweep(frameworks=("numpy",), paths=("fused",), dtypes=("bfloat16",)))
    assert (errors["message"] == "returned float64; rounded to bfloat16").all()


def test_adversarial_labels_pick_each_rows_smallest_logit():
    random = pipeline.sweep_errors(small_sweep(frameworks=("numpy",), dtypes=("float64",), families=("spread",)))
    worst = pipeline.sweep_errors(
        small_sweep(frameworks=("numpy",), dtypes=("float64",), families=("spread",), label="adversarial")
    )
    # the smallest logit's loss is the largest of the row: never below the random label's
    assert (worst["max_exact_loss"].to_numpy() >= random["max_exact_loss"].to_numpy()).all()


def test_same_config_same_errors_bit_for_bit(errors):
    again = pipeline.sweep_errors(small_sweep())
    pd.testing.assert_frame_equal(errors, again, check_exact=True)


def test_stable_paths_stay_within_the_lse_error_bound(errors):
    stable = errors[errors["path"].isin(["log_softmax_nll", "fused"]) & (errors["status"] == "ok")]
    assert (stable["frac_within_bound"] == 1.0).all()
    assert (stable["bound_ulp"] > 0).all()


@pytest.mark.parametrize("reduction", [("none",), ("mean", "sum")])
def test_an_input_rounded_ahead_and_its_draw_let_go_gives_the_same_cells(monkeypatch, reduction):
    # token_sweep's 10**7-row input is rounded to every dtype at once and its float64 draw freed;
    # here every input counts as that large, on both routes (plain cells and loss options), with
    # float16 overflowing at the last scale (input_inf)
    from harness.sweep import runner

    sweep = small_sweep(frameworks=("numpy", "torch"), scales=(1.0, 1e5), reduction=reduction)
    expected = pipeline.sweep_errors(sweep)
    monkeypatch.setattr(runner, "RELEASE_ELEMENTS", 0)
    got = pipeline.sweep_errors(sweep)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert (got["status"] == "input_inf").sum() == (got["dtype"] == "float16").sum() // 2
