"""Loss options through the sweep: defaults unchanged bit for bit, statuses, a wrong soft-cap caught,
bad values refused in one line."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import small_sweep

from harness.pipeline import sweep_errors
from harness.sweep.journal import OPTION_COLUMNS

GRID = dict(frameworks=("numpy", "torch"), dtypes=("bfloat16", "float32"), scales=(1.0, 30.0), n_rows=6, n_classes=20)


def wrong_softcap(x, y, softcap=30.0):
    """The soft-cap as unsloth-zoo#593 coded it: x tanh(x / c), not c tanh(x / c)."""
    import torch.nn.functional as F

    return F.cross_entropy(x * (x / softcap).tanh(), y, reduction="none")


def right_softcap(x, y, softcap=30.0):
    import torch.nn.functional as F

    return F.cross_entropy(softcap * (x / softcap).tanh(), y, reduction="none")


def test_the_default_sweep_is_unchanged_bit_for_bit():
    """Sweeping label_smoothing=[0, 0.1] leaves its label_smoothing=0 cells exactly the default sweep's."""
    default = sweep_errors(small_sweep(**GRID))
    swept = sweep_errors(small_sweep(**GRID, label_smoothing=(0.0, 0.1)))
    assert len(swept) == 2 * len(default)
    same = swept[swept["label_smoothing"] == 0.0].reset_index(drop=True)
    pd.testing.assert_frame_equal(same, default)
    defaults = default[list(OPTION_COLUMNS)].drop_duplicates()
    assert defaults.to_dict("records") == [
        {
            "reduction": "none",
            "ignore_fraction": 0.0,
            "class_weights": None,
            "label_smoothing": 0.0,
            "z_loss": 0.0,
            "softcap": None,
            "target": "index",
        }
    ]
    smoothed = swept[swept["label_smoothing"] == 0.1].reset_index(drop=True)
    assert (smoothed["max_exact_loss"] != same["max_exact_loss"]).all()  # the reference took the smoothing
    fused = smoothed[(smoothed["path"] == "fused") & (smoothed["dtype"] == "float32")]
    assert (fused["status"] == "ok").all() and np.isfinite(fused["max_ulp_err"]).all()


def test_a_masked_label_is_a_correct_inf_and_a_mean_over_no_rows_is_undefined():
    masked = sweep_errors(
        small_sweep(**GRID | {"scales": (1.0,)}, families=("masked",), mask_label=True, paths=("log_softmax_nll",))
    )
    assert set(masked["status"]) == {"exact_overflow"}, masked[["framework", "dtype", "status", "message"]]
    nothing_kept = sweep_errors(
        small_sweep(**GRID | {"scales": (1.0,)}, paths=("fused",), reduction=("mean",), ignore_fraction=(1.0,))
    )
    assert set(nothing_kept["status"]) == {"undefined"}
    torch_row = nothing_kept[nothing_kept["framework"] == "torch"].iloc[0]
    assert "mean over no kept rows" in torch_row["message"] and "nan" in torch_row["message"]


def test_the_wrong_softcap_is_flagged_far_from_the_reference():
    """With softcap=30 at logit scale 30, x tanh(x / c) is off by O(1) relative; c tanh(x / c), registered the
    same way, matches the harness's own soft-capped fused path."""
    customs = tuple(
        {"framework": "torch", "name": name, "fn": f"test_options_sweep:{name}"}
        for name in ("wrong_softcap", "right_softcap")
    )
    errors = sweep_errors(
        small_sweep(
            **GRID | {"scales": (30.0,), "frameworks": ("torch",)},
            paths=("fused",),
            softcap=(30.0,),
            custom_paths=customs,
        )
    )
    for family in ("spread", "offset"):
        cells = errors[(errors["dtype"] == "float32") & (errors["family"] == family)].set_index("path")
        assert cells.loc["right_softcap", "max_ulp_err"] == cells.loc["fused", "max_ulp_err"] < 8
        assert cells.loc["right_softcap", "max_rel_err"] < 1e-6
        assert cells.loc["wrong_softcap", "max_rel_err"] > 0.5  # measured 17.9 (spread) and 0.60 (offset)


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ("label_smoothing=[0,1.0]", "bad label_smoothing 1.0; each label_smoothing must be a number in [0, 1)"),
        ("softcap=[0]", "bad softcap 0; each softcap must be null or a finite number > 0"),
        ("ignore_fraction=[1.5]", "bad ignore_fraction 1.5; each ignore_fraction must be a number in [0, 1]"),
        ("reduction=[avg]", "unknown reduction 'avg' in reduction; valid choices: none, mean, sum"),
        ("target=[soft]", "bad target 'soft'; each target must be one of: index, dense"),
        ("mask_fraction=1", "bad mask_fraction 1; it must be a number in [0, 1)"),
    ],
)
def test_bad_option_values_fail_before_any_work_in_one_line(tmp_path, refused, setting, words):
    out = tmp_path / "run"
    code, _, stderr = refused(setting, f"hydra.run.dir={out}", cwd=tmp_path)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], lines
    assert not out.exists()


def test_dense_targets_on_a_picking_path_are_unsupported_rows():
    errors = sweep_errors(small_sweep(**GRID | {"scales": (1.0,)}, paths=("naive", "fused"), target=("dense",)))
    naive = errors[errors["path"] == "naive"]
    assert set(naive["status"]) == {"unsupported"}
    assert naive["message"].str.contains("no probability-target form").all()
    assert set(errors.loc[errors["path"] == "fused", "status"]) == {"ok"}
    assert np.isfinite(errors.loc[errors["path"] == "fused", "max_ulp_err"]).all()


def plain_facts(held: np.ndarray) -> tuple[float, float]:
    """max_logit and max_lse of finite logits, every row's lse computed (float64)."""
    top = held.max(axis=1, keepdims=True)
    return float(held.max()), float((top[:, 0] + np.log(np.exp(held - top).sum(axis=1))).max())


@pytest.mark.parametrize("n_classes", [2, 16, 1000])
def test_input_facts_find_the_largest_lse_of_any_row(n_classes):
    """The largest lse is often not in the row of the largest logit: a row of many near-maximal logits
    outweighs one large logit (4.5 + ln 16 = 7.27 > 5). The facts computed block by block (2**20
    logits each; here the largest logit is in the first, the largest lse in the last), on the rows
    that can reach it, are those of every row, bit for bit."""
    from harness.sweep.option_cells import _input_facts

    rng = np.random.default_rng(n_classes)
    held = rng.standard_normal((3 * 2**20 // n_classes - 5, n_classes))
    held[7] = -30.0
    held[7, 0] = 5.0 + held.max()  # the largest logit, alone in its row
    held[-2] = held[7, 0] - 0.5  # every logit just below it: the largest lse
    facts = _input_facts(held, None)
    assert (facts["max_logit"], facts["max_lse"]) == plain_facts(held)
    assert facts["valid"]


def test_input_facts_keep_nan_inf_and_masked_rows():
    from harness.sweep.option_cells import _input_facts

    held = np.random.default_rng(0).standard_normal((50, 16))
    masked = held.copy()
    masked[3, :5] = -np.inf
    facts = _input_facts(masked, masked)  # -inf where the input masks a class: valid
    assert facts["valid"] and (facts["max_logit"], facts["max_lse"]) == plain_facts(masked)
    assert not _input_facts(masked, None)["valid"]  # -inf where nothing masks it
    with_nan = held.copy()
    with_nan[9, 4] = np.nan
    assert not _input_facts(with_nan, None)["valid"]
    with_inf = held.copy()
    with_inf[9, 4] = np.inf
    assert _input_facts(with_inf, None)["max_lse"] == np.inf and not _input_facts(with_inf, None)["valid"]
