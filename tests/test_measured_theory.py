"""Theory from measured facts: the exp's range and a division's flushing, measured by the backends,
put the thresholds (MLX's float64 exp overflows at 88.0, not 709.78); other-class underflow for dense
targets; explanations that agree with the measured flags; why an option cell's break is the grid's."""

from __future__ import annotations

import math

import numpy as np
from test_breakdown import breaks_row, cells

from harness import backends, paths
from harness.mechanisms import (
    EXP_OVERFLOW,
    OTHER_CLASS_UNDERFLOW,
    SUM_OVERFLOW,
    TARGET_UNDERFLOW,
    ExpFacts,
    measured_limits,
)
from harness.outputs import explain, theory
from harness.outputs.breakdown import breakdown_frame
from harness.paths.options import CellOptions
from harness.sweep import option_cells
from harness.sweep.cells import target_quantities
from harness.sweep.journal import OPTION_DEFAULTS
from harness.sweep.option_cells import class_quantities, target_quantities_by_block

GRADUAL_32 = 150 * math.log(2)  # -ln(2**-149 / 2) = 103.972
FLUSH_32 = 126 * math.log(2)  # -ln(2**-126) = 87.337
MLX_FACTS = {"exp_overflow": 88.0, "exp_underflow": 87.683, "quotient_flushes": False}  # measured, MLX 0.32


def test_the_numpy_exp_and_division_are_measured_where_the_dtype_rounds():
    assert backends.exp_overflow("numpy", "float32") == float(np.nextafter(np.float32(88.72284), np.float32(0)))
    assert abs(backends.exp_underflow("numpy", "float32") - GRADUAL_32) < 1e-4
    assert abs(backends.exp_underflow("numpy", "float64") - 1075 * math.log(2)) < 1e-6  # 745.133
    assert not backends.quotient_flushes("numpy", "float32")


def measured_threshold(cause, dtype, facts, shifts, tolerance):
    """(threshold, source, quantity) of each limit measured_limits gives, in order."""
    return [(x.threshold, x.source, x.quantities[0]) for x in measured_limits(cause, dtype, facts, shifts, tolerance)]


def test_measured_thresholds_by_hand():
    kept = ExpFacts(88.0, 87.683, quotient_flushes=False)
    flushed = ExpFacts(88.72, FLUSH_32, quotient_flushes=True)
    assert measured_threshold(EXP_OVERFLOW, "float64", kept, False, 0.005) == [(88.0, "exp", "max_logit")]
    assert measured_threshold(SUM_OVERFLOW, "float64", kept, False, 0.005)[0][0] == math.log(2**1024)  # 709.78
    # a quotient keeps subnormals: gradual underflow on the loss; the exp is 0 past 87.683 on its argument,
    # max_j x_j - x_y where the path shifts, -x_y where it does not
    quotient = (GRADUAL_32, "quotient", "max_exact_loss")
    assert measured_threshold(TARGET_UNDERFLOW, "float32", kept, False, 0.005) == [
        (87.683, "exp", "max_neg_target_logit"),
        quotient,
    ]
    assert measured_threshold(TARGET_UNDERFLOW, "float32", kept, True, 0.005) == [
        (87.683, "exp", "max_target_gap"),
        quotient,
    ]
    # a class's probability made by the shifted exp: on its argument max_k x_k - x_j (then the loss, in a
    # table from before that column)
    assert measured_threshold(OTHER_CLASS_UNDERFLOW, "float32", kept, True, 0.005) == [(87.683, "exp", "max_class_gap")]
    (limit,) = measured_limits(OTHER_CLASS_UNDERFLOW, "float32", kept, True, 0.005)
    assert limit.quantities == ("max_class_gap", "max_class_loss")
    # a flushing division at 87.337 comes first: the exp's 87.337 is no threshold of its own
    assert measured_threshold(TARGET_UNDERFLOW, "float32", flushed, False, 0.005) == [
        (FLUSH_32, "quotient", "max_exact_loss")
    ]
    # bfloat16's last input with a nonzero exp, 92.5, is the dtype's own gradual underflow 92.88 rounded
    bf16 = ExpFacts(88.5, 92.5, quotient_flushes=False)
    assert [t[1] for t in measured_threshold(TARGET_UNDERFLOW, "bfloat16", bf16, True, 0.005)] == ["quotient"]


def test_target_gap_and_negated_target_logit_by_hand():
    rows = np.array(
        [
            [2.0, -90.0, 1.0],  # label 1: max - x_y = 2 + 90 = 92, -x_y = 90
            [-100.0, -87.0, -95.0],  # label 0: max - x_y = -87 + 100 = 13, -x_y = 100
            [0.0, 0.0, 0.0],  # label 2: 0 and 0
            [-np.inf, 5.0, 3.0],  # label 2, class 0 masked: max - x_y = 2, -x_y = -3
            [-np.inf, 1.0, 2.0],  # label 0 masked: left out
        ]
    )
    labels = np.array([1, 0, 2, 2, 0])
    assert target_quantities(rows, labels) == {"max_target_gap": 92.0, "max_neg_target_logit": 100.0}
    assert target_quantities_by_block(rows.astype(np.float32), labels) == target_quantities(rows, labels)
    assert np.isnan(target_quantities(rows[4:], labels[4:])["max_target_gap"])


def test_the_blockwise_target_quantities_equal_the_definition_over_many_blocks():
    """target_quantities_by_block reads the row maxima of the rows that can hold the largest gap only:
    the same values as the definition, with the largest gap away from the lowest target and a block
    with masked and NaN entries."""
    rng = np.random.default_rng(3)
    held = np.round(rng.standard_normal((300_000, 16)) * 8, 3)  # several 2**20-entry blocks
    labels = rng.integers(0, 16, len(held))
    held[123_456] = 0.0
    held[123_456, 7] = 60.0  # the largest gap, 60, in a row whose target (0) is far from the lowest
    labels[123_456] = 0
    held[250_000, 3], held[250_001, 5] = -np.inf, np.nan
    assert target_quantities_by_block(held, labels) == target_quantities(held, labels)
    assert target_quantities_by_block(held, labels)["max_target_gap"] == 60.0


def test_mlx_float64_naive_breaks_where_its_exp_overflows():
    # the sum of float64 exponentials overflows at lse 709.78; MLX's exp returns inf above x = 88.0
    frame = cells(
        "mlx", "naive", "float64", ["ok", "nan"], [0.6, np.nan], [80.0, 120.0], family="offset",
        max_lse=[82.8, 122.8], max_exact_loss=[9.6, 9.6], flushes_subnormals=True, **MLX_FACTS,
    )  # fmt: skip
    measured = breaks_row(frame, 83.266, 83.271, max_logit_lo=87.9983, max_logit_hi=88.0025)
    row = breakdown_frame(frame, breaks=measured).iloc[0]
    assert row["matches_theory"] and row["theory_cause"] == EXP_OVERFLOW and row["theory_threshold"] == 88.0
    assert row["explanation"].startswith("mlx's exp returns inf above 88 in float64 (measured)")


def _explanations(flushes: bool, quotient_flushes: bool, loss_at_break: float) -> list[str]:
    out = []
    for path in ("naive", "softmax_log"):
        frame = cells(
            "mlx", path, "float32", ["ok", "inf"], [0.6, np.nan], [20.0, 60.0], max_lse=[20.0, 60.0],
            max_exact_loss=[50.0, 120.0], flushes_subnormals=flushes, exp_overflow=88.0, exp_underflow=87.683,
            quotient_flushes=quotient_flushes,
        )  # fmt: skip
        lo, hi = loss_at_break - 0.004, loss_at_break + 0.004
        measured = breaks_row(frame, 24.8, 24.9, max_exact_loss_lo=lo, max_exact_loss_hi=hi)
        out.append(breakdown_frame(frame, breaks=measured).iloc[0]["explanation"])
    return out


def test_explanations_agree_with_the_measured_flush_flags():
    # MLX: flushes_subnormals is true (its exp returns 0 below -87.683) but its division keeps subnormals
    for quotient_flushes in (False, True):
        for loss in (FLUSH_32, 87.683, GRADUAL_32):
            for text in _explanations(True, quotient_flushes, loss):
                assert "though" not in text or "flushes them" not in text, text
                assert ("division keeps" in text) <= (not quotient_flushes), text
                assert ("division flushes" in text) <= quotient_flushes, text
    naive, shifted = _explanations(True, False, GRADUAL_32)
    assert naive == ""  # theory's own threshold: the quotient keeps subnormals
    assert "mlx's division keeps subnormal quotients in float32 (measured)" in shifted


def test_max_class_loss_by_hand():
    # row [0, -100]: lse = ln(1 + e^-100) = 3.7e-44, so lse - x_1 = 100; a -inf (masked) class is left out
    rounded = np.array([[0.0, -100.0], [0.0, -np.inf]], dtype=np.float32)
    assert class_quantities(rounded)["max_class_loss"] == 100.0
    # 1000 equal logits but one 90 below: lse - x_j = ln(1000) + 90 with a ln C gap to max - x_j = 90
    row = np.zeros((1, 1000))
    row[0, 7] = -90.0
    found = class_quantities(row)
    assert found["max_class_gap"] == 90.0
    assert abs(found["max_class_loss"] - (90 + math.log(999 + math.exp(-90)))) < 1e-12


def test_mlx_dense_softmax_log_breaks_where_a_class_gap_passes_its_exp_underflow():
    # MLX's exp gives 0 below -87.683: p_j = exp(x_j - max) / sum is 0 once max - x_j passes it, which
    # the loss lse - x_j passes up to ln C earlier (here at cell 0, which did not break)
    frame = cells(
        "mlx", "softmax_log", "float32", ["ok", "nan"], [0.6, np.nan], [20.0, 60.0], target="dense",
        mechanisms=f"{TARGET_UNDERFLOW}; {OTHER_CLASS_UNDERFLOW}", max_exact_loss=[9.6, 9.6], max_lse=[20.0, 60.0],
        max_class_loss=[89.0, 99.0], max_class_gap=[80.0, 95.0], max_target_gap=[5.0, 5.0],
        max_neg_target_logit=[1.0, 1.0], flushes_subnormals=True, **MLX_FACTS,
    )  # fmt: skip
    row = breakdown_frame(frame).iloc[0]
    assert row["matches_theory"] and row["theory_cause"] == OTHER_CLASS_UNDERFLOW
    assert (row["theory_quantity"], row["theory_threshold"]) == ("max_class_gap", 87.683)
    before = breakdown_frame(frame.drop(columns=["max_class_gap"])).iloc[0]  # a table from before the column
    assert not before["matches_theory"] and before["theory_quantity"] == "max_class_loss"


def test_dense_softmax_log_breaks_at_other_class_underflow():
    # one-hot targets: the label's loss is 9.6, another class's probability underflows at loss 103.97: 0 * -inf
    frame = cells(
        "numpy", "softmax_log", "float32", ["ok", "nan"], [0.6, np.nan], [20.0, 60.0], target="dense",
        mechanisms=f"{TARGET_UNDERFLOW}; {OTHER_CLASS_UNDERFLOW}", max_exact_loss=[9.6, 9.6],
        max_class_loss=[100.0, 104.0], exp_overflow=88.72, exp_underflow=GRADUAL_32, quotient_flushes=False,
    )  # fmt: skip
    row = breakdown_frame(frame).iloc[0]
    assert row["matches_theory"] and row["theory_cause"] == OTHER_CLASS_UNDERFLOW
    assert row["theory_quantity"] == "max_class_loss" and abs(row["theory_threshold"] - GRADUAL_32) < 1e-12
    assert row["bisection"] == theory.OPTION_CELLS_NOTE
    late = frame.assign(max_class_loss=[120.0, 130.0])  # broke, though no class had passed 103.97
    assert not breakdown_frame(late).iloc[0]["matches_theory"]


def test_plain_options_are_the_cell_options_defaults():
    assert OPTION_DEFAULTS == CellOptions().columns()
    assert not theory.has_options(OPTION_DEFAULTS) and theory.has_options({"target": "dense"})
    assert theory.unbisected_note({"z_loss": 1e-4}, True) == "grid only: option cells are not bisected"
    assert theory.unbisected_note({}, False) == "grid only: no breaks table"


def test_tables_without_the_measured_exp_columns_keep_the_exp_dtype_theory():
    frame = cells("mlx", "naive", "float64", ["ok", "inf"], [0.6, np.nan], [80.0, 90.0], max_lse=[82.8, 92.8])
    row = breakdown_frame(frame.assign(exp_dtype="float32", max_exact_loss=[9.6, 9.6])).iloc[0]
    assert (
        row["theory_cause"] == SUM_OVERFLOW and abs(row["theory_threshold"] - math.log(2**128 - 2**103)) < 1e-12
    )  # float32 88.72


def test_mlx_softmax_log_breaks_where_its_exp_argument_passes_the_measured_underflow():
    # shifted: exp(x_y - max) is 0 once max - x_y passes 87.683; the loss exceeds it by lse - max (here 0.9)
    frame = cells(
        "mlx", "softmax_log", "float32", ["ok", "inf"], [0.6, np.nan], [20.0, 60.0], max_lse=[20.0, 60.0],
        max_exact_loss=[50.9, 120.9], max_target_gap=[50.0, 120.0], max_neg_target_logit=[30.0, 60.0],
        flushes_subnormals=True, **MLX_FACTS,
    )  # fmt: skip
    measured = breaks_row(
        frame, 24.8, 24.9, max_exact_loss_lo=88.58, max_exact_loss_hi=88.59,
        max_target_gap_lo=87.680, max_target_gap_hi=87.686,
    )  # fmt: skip
    row = breakdown_frame(frame, breaks=measured).iloc[0]
    assert row["matches_theory"] and row["theory_cause"] == TARGET_UNDERFLOW
    assert (row["theory_quantity"], row["theory_threshold"]) == ("max_target_gap", 87.683)
    assert row["explanation"] == (
        "mlx's exp returns 0 below -87.683 in float32 (measured), so a probability made by the exp, "
        "exp(x_y - max_j x_j), is 0 once max_j x_j - x_y passes it: within 1% of the measured largest "
        "max_j x_j - x_y 87.68 to 87.686"
    )
    # a table from before the gap column: the exp's threshold on the loss, passed before the break
    old = breakdown_frame(frame.drop(columns=["max_target_gap"]), breaks=measured).iloc[0]
    assert not old["matches_theory"] and old["theory_quantity"] == "max_exact_loss"


def test_mlx_float64_naive_breaks_where_its_unshifted_exp_of_the_target_underflows():
    # naive exponentiates x_y itself: exp(-87.69) is 0 in MLX's float32 exp though float64 holds e^-745
    frame = cells(
        "mlx", "naive", "float64", ["ok", "inf"], [0.6, np.nan], [40.0, 120.0], max_lse=[40.0, 120.0],
        max_exact_loss=[80.0, 240.0], max_target_gap=[80.0, 240.0], max_neg_target_logit=[40.0, 120.0],
        flushes_subnormals=True, **MLX_FACTS,
    )  # fmt: skip
    measured = breaks_row(
        frame, 50.0, 50.01, max_logit_lo=86.54, max_logit_hi=86.55, max_lse_lo=86.54, max_lse_hi=86.55,
        max_exact_loss_lo=174.2, max_exact_loss_hi=174.23, max_neg_target_logit_lo=87.67,
        max_neg_target_logit_hi=87.685,
    )  # fmt: skip
    row = breakdown_frame(frame, breaks=measured).iloc[0]
    assert row["matches_theory"] and row["theory_cause"] == TARGET_UNDERFLOW
    assert (row["theory_quantity"], row["theory_threshold"]) == ("max_neg_target_logit", 87.683)
    assert "so the unshifted exp(x_y) is 0, and so the target probability, once -x_y passes it" in row["explanation"]
    # the loss 174.23 is far below float64's quotient underflow 745.13: without -x_y nothing puts it there
    without = breakdown_frame(frame.drop(columns=["max_neg_target_logit"]), breaks=measured).iloc[0]
    assert not without["matches_theory"]


SIGMA16 = 2.0**-24  # float16's smallest subnormal


def test_double_rounding_takes_a_probability_of_0_6_sigma_to_0():
    """Row [0, 0, ln(1.2 sigma)], label 2: exp rounds 1.2 sigma to sigma, the sum is about 2, and
    sigma / 2 ties to 0, though the exact probability 0.6 sigma rounds to sigma (a loss of 17.147,
    below float16's target-underflow threshold 17.329). PyTorch's softmax rounds once."""
    import torch

    x = np.array([0.0, 0.0, math.log(1.2 * SIGMA16)]).astype(np.float16)  # -16.453125
    target = float(x[2])
    exact_loss = math.log(2 + math.exp(target)) - target  # ln 2 - ln(1.2 sigma), x rounded
    assert abs(exact_loss - 17.1462) < 1e-3 and 16.9232 < exact_loss < float(np.log(2 / SIGMA16))  # 17.329
    e = np.exp(x - x.max())
    assert e[2] == np.float16(SIGMA16) and (e / e.sum())[2] == 0  # NumPy: exp, then divide: two roundings
    assert float(torch.softmax(torch.tensor(x), 0)[2]) == SIGMA16  # float32 inside, rounded once
    assert paths.double_rounding("numpy", "softmax_log", "float16")
    assert not paths.double_rounding("torch", "softmax_log", "float16")
    assert paths.double_rounding("torch", "softmax_log", "float32")  # torch.softmax's exp is float32 there


def test_a_double_rounding_break_is_explained_by_its_band():
    (fact,) = explain.double_rounding_facts("numpy", "softmax_log", (TARGET_UNDERFLOW,), "float16", False, None, True)
    assert abs(fact.earliest - (-math.log(0.75 * SIGMA16))) < 1e-12 and abs(fact.earliest - 16.9232) < 1e-4
    assert abs(fact.threshold - (-math.log(SIGMA16 / 2))) < 1e-12
    assert explain._fact_fits(fact, 17.138, 17.142)  # gradient_sweep's float16 break, in the band
    assert not explain._fact_fits(fact, 16.5, 16.6)  # below it by more than 1%
    assert (
        explain.double_rounding_facts("torch", "softmax_log", (TARGET_UNDERFLOW,), "float16", False, None, False) == []
    )
    flushing = explain.double_rounding_facts("jax", "softmax_log", (TARGET_UNDERFLOW,), "float32", True, None, True)
    assert flushing == []  # no subnormals to round to


def test_a_soft_capped_cells_quantities_are_of_the_logits_its_loss_sees():
    # c = 30: 100 -> 30 tanh(10/3) = 29.9232, -50 -> 30 tanh(-5/3) = -27.9085; an exp of them never
    # passes MLX's 88.0, so theory cannot put an exp overflow in a soft-capped cell
    rounded = np.array([[100.0, 0.0], [0.0, -50.0]])
    labels = np.array([1, 0])
    top = 30 * math.tanh(10 / 3)
    capped = option_cells._quantities({"rounded": rounded}, labels, CellOptions(softcap=30.0, target="dense"), None)
    assert capped["max_logit"] == top and abs(capped["max_lse"] - (top + math.log1p(math.exp(-top)))) < 1e-14
    assert capped["max_target_gap"] == top and capped["max_neg_target_logit"] == 0.0
    assert abs(capped["max_class_loss"] - (top + math.log1p(math.exp(-top)))) < 1e-14  # row 0, class 1
    shared = {"rounded": rounded, "facts": option_cells._input_facts(rounded, None)}
    plain = option_cells._quantities(shared, labels, CellOptions(target="dense"), None)
    assert (plain["max_logit"], plain["max_target_gap"], plain["max_class_loss"]) == (100.0, 100.0, 100.0)
