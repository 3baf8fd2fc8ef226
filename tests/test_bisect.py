"""Breakpoints located by bisection: the search itself, and the adversarial float16 sweep, where
the exact loss passes float16's largest finite value and inf is the right answer."""

import math

import numpy as np
import pandas as pd
import pytest
from conftest import small_sweep

from harness import backends
from harness.dtypes import DTYPES
from harness.outputs import breakdown, findings, tables
from harness.sweep import bisect, metrics, runner


def test_bisection_halves_a_factor_of_ten_to_1e4_in_15_steps():
    seen = []

    def fails(scale):
        seen.append(scale)
        return scale > 3.7

    good, bad, steps = bisect.bisect_scale(fails, 1.0, 10.0)
    # log2(ln 10 / ln(1 + 1e-4)) = 14.5: 15 halvings in log scale
    assert steps == 15 == len(seen) and good <= 3.7 < bad and bad / good - 1 <= 1e-4
    assert seen[0] == pytest.approx(math.sqrt(10.0))  # the geometric midpoint


def test_bisection_from_zero_halves_arithmetically_until_both_ends_are_positive():
    good, bad, steps = bisect.bisect_scale(lambda s: s > 0.3, 0.0, 1.0)
    # 0.5, then 0.25 arithmetically; then [0.25, 0.5] in log scale: log2(ln 2 / ln(1 + 1e-4)) = 12.8
    assert good <= 0.3 < bad and bad / good - 1 <= 1e-4 and steps == 2 + 13


SCALES = (1.0, 3.0, 10.0, 30.0, 1.5e4)  # 8 x 100 logits: at 1.5e4 the largest is 46000 < 65504


@pytest.fixture(scope="module")
def adversarial():
    """The adversarial float16 sweep (each row's label its smallest logit), small: its records and
    implementations, breaks, errors and breakdown."""
    sweep = small_sweep(
        frameworks=("numpy", "torch"),
        dtypes=("float16",),
        families=("spread",),
        scales=SCALES,
        n_rows=8,
        n_classes=100,
        seed=0,
        label="adversarial",
    )
    records, implementations = [], runner.compile_implementations(sweep)
    runner.sweep_cells(sweep, records.append, implementations=implementations)
    breaks = bisect.breaks_frame(sweep, records, implementations)
    errors = tables.errors_frame([r["cell"] for r in records], names=runner.NAME_ORDER)
    return sweep, implementations, breaks, errors, breakdown.breakdown_frame(errors, breaks=breaks)


def test_a_correct_inf_at_the_top_is_exact_overflow(adversarial):
    _, _, _, errors, table = adversarial
    top = errors[errors["scale"] == SCALES[-1]].set_index(["framework", "path"])
    assert (top["max_exact_loss"] > 65520).all() and (top["max_logit"] < 65504).all()
    stable = top.loc[top.index.get_level_values("path").isin(["log_softmax_nll", "fused"])]
    assert set(stable["status"]) == {metrics.EXACT_OVERFLOW} and (stable["n_nonfinite"] > 0).all()
    quiet = table[table["path"].isin(["log_softmax_nll", "fused"])]
    assert quiet["first_fail_scale"].isna().all() and quiet["matches_theory"].all()
    assert (quiet["exact_overflow_scale"] == SCALES[-1]).all()


def test_no_false_disagreement_in_the_adversarial_findings(adversarial):
    _, _, _, errors, table = adversarial
    assert table["matches_theory"].all(), table.loc[~table["matches_theory"], "explanation"].tolist()
    sentences = findings.key_findings(table, errors)
    assert not [s for s in sentences if s.startswith("Unlike theory")]
    assert any(
        s.startswith("The exact loss itself rounds to inf in float16 (spread) from scale 1.5e+04") for s in sentences
    )


def test_breaks_are_bracketed_to_1e4_and_the_threshold_lies_at_them(adversarial):
    _, _, breaks, _, table = adversarial
    bisected = breaks[breaks["n_bisection_runs"] > 0]
    assert set(bisected["path"]) == {"naive", "softmax_log"} and len(bisected) == 4
    assert (bisected["break_scale_hi"] / bisected["break_scale_lo"] - 1 <= 1e-4).all()
    # theory's thresholds guide the first runs; halving alone would take log2(ln 3 / ln(1 + 1e-4)) = 13.4 steps
    assert (bisected["n_bisection_runs"] <= 2 + bisected["n_bisection_steps"]).all()
    assert bisected["bisection"].str.startswith("bisected: ").all()
    assert set(breaks.loc[breaks["path"].isin(["log_softmax_nll", "fused"]), "bisection"]) == {bisect.NEVER_FAILS}
    # with adversarial labels the target probability underflows first: -ln(2**-25) = 17.33
    for row in table[table["path"].isin(["naive", "softmax_log"])].itertuples():
        assert row.theory_cause == breakdown.TARGET_UNDERFLOW
        assert row.theory_threshold == pytest.approx(25 * math.log(2))
        assert row.break_quantity_lo * 0.99 <= row.theory_threshold <= row.break_quantity_hi * 1.01


def test_the_bracket_ends_fail_and_pass_when_run_again(adversarial):
    sweep, implementations, breaks, _, _ = adversarial
    base = inputs_of(sweep)
    stream = bisect.Inputs("spread", base, "adversarial", "float16")
    for row in breaks[breaks["n_bisection_runs"] > 0].itertuples():
        impl = implementations[(row.framework, row.path)]
        lo = bisect.break_status(impl, row.framework, "cpu", "float16", *stream.at(row.break_scale_lo))
        hi = bisect.break_status(impl, row.framework, "cpu", "float16", *stream.at(row.break_scale_hi))
        assert lo not in metrics.FAILED and hi == row.break_status and hi in metrics.FAILED


def inputs_of(sweep):
    return dict(runner.bases(sweep))["spread"]


def test_break_quantities_are_the_runners_numbers():
    """quantities() picks the top rows by a float64 estimate, then takes the exact values: the same
    numbers the runner records for the whole input."""
    rng = np.random.default_rng(5)
    held = rng.standard_normal((64, 300)) * 40.0
    labels = rng.integers(0, 300, 64)
    found = bisect.quantities(held, labels, "float32")
    exact = runner.exact_values(held, labels, DTYPES["float32"], False)
    loss = np.ldexp(exact.hi, exact.exponent)
    assert found["max_exact_loss"] == loss.max() and found["max_logit"] == held.max()
    assert found["max_lse"] == (loss + held[np.arange(64), labels]).max()


def test_combinations_that_need_no_bisection_say_why():
    cells = pd.DataFrame(
        {
            "framework": "numpy",
            "path": "naive",
            "dtype": "float16",
            "family": "spread",
            "device": "cpu",
            "n_rows": 2,
            "n_classes": 3,
            "scale": [1.0, 2.0],
            "status": ["inf", "inf"],
            "max_logit": [1.0, 2.0],
            "max_lse": [11.5, 12.0],
            "max_exact_loss": [1.0, 1.0],
        }
    )
    first = bisect.break_row(cells, None, None)
    assert first["bisection"] == bisect.FAILS_FIRST and first["break_scale_hi"] == 1.0
    assert np.isnan(first["break_scale_lo"]) and first["max_lse_hi"] == 11.5
    never = bisect.break_row(cells.assign(status="ok"), None, None)
    assert never["bisection"] == bisect.NEVER_FAILS and np.isnan(never["break_scale_hi"])
    assert never["accumulation"] == "float32"  # NumPy sums float16 in float32 (the path entry)


def test_the_first_guesses_come_from_the_path_entry_the_dtype_and_the_flush_measurement():
    f16, f32 = DTYPES["float16"], DTYPES["float32"]
    assert bisect.predicted_thresholds("numpy", "naive", "float16", "cpu") == [
        ("max_lse", f16.exp_overflow_threshold),  # ln(65520) = 11.09
        ("max_exact_loss", f16.exp_underflow_threshold),  # -ln(2**-25) = 17.33
    ]
    assert bisect.predicted_thresholds("torch", "fused", "float32", "cpu") == []  # no mechanism: halving only
    # JAX flushes float32 subnormals (measured): the target at -ln(2**-126) = 87.34, and 1/sum there too
    assert bisect.predicted_thresholds("jax", "naive", "float32", "cpu") == [
        ("max_lse", f32.exp_overflow_threshold),
        ("max_exact_loss", f32.exp_flush_threshold),
        ("max_lse", f32.exp_flush_threshold),
    ]
    # MLX's exp returns 0 past 87.683 (measured): the guess lies on the exp's argument, x_y - max where the
    # path shifts, x_y where it does not; its exp returns inf above 88.0 in float64 too
    mlx_zero = backends.exp_underflow("mlx", "float32")
    assert bisect.predicted_thresholds("mlx", "softmax_log", "float32", "cpu") == [
        ("max_target_gap", mlx_zero),
        ("max_exact_loss", f32.exp_underflow_threshold),
    ]
    guesses = bisect.predicted_thresholds("mlx", "naive", "float64", "cpu")
    assert [q for q, _ in guesses] == ["max_lse", "max_neg_target_logit", "max_exact_loss", "max_logit"]
    assert abs(guesses[1][1] - 87.683) < 1e-3 and abs(guesses[3][1] - 88.0) < 1e-5


def test_bisected_quantities_by_hand():
    # row 0: lse = ln(e^2 + e^-90 + e^1) = 2.3133, loss 92.3133; row 1: lse = -86.9997, loss 13.0003
    held = np.array([[2.0, -90.0, 1.0], [-100.0, -87.0, -95.0]])
    found = bisect.quantities(held, np.array([1, 0]), "float64")
    assert found["max_logit"] == 2.0 and found["max_target_gap"] == 92.0 and found["max_neg_target_logit"] == 100.0
    assert abs(found["max_lse"] - (2 + math.log1p(math.exp(-1) + math.exp(-92)))) < 1e-12
    assert abs(found["max_exact_loss"] - (92 + math.log1p(math.exp(-1) + math.exp(-92)))) < 1e-12
    for quantity in ("max_logit", "max_target_gap", "max_neg_target_logit"):
        assert bisect.estimate(held, np.array([1, 0]), quantity).max() == found[quantity]
