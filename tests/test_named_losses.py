"""Binary cross-entropy and KL divergence run like cross-entropy: through the one loop, bisected, broken
down against their own theory, with their settings as columns, resumable, comparable, and guarded by
harness.testing. Thresholds checked here by hand: a float32 sigmoid computed as 1 / (1 + exp(-x)) is 1 from
x = 24 ln 2 = 16.6355 (MLX's, correctly rounded, from ln(2**25 - 1) = 17.3287); a float32 probability made
by exp (and a division that keeps subnormals) is 0 below ln(2**-150) = -103.97."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import harness
from harness import api, losses
from harness.dtypes import DTYPES
from harness.errors import ConfigError
from harness.sweep.named_inputs import loss_status
from harness.testing import assert_accurate
from harness.tools import compare

QUICK = ["timing.enabled=false", "progress=false", "workers=1"]
BCE = [
    "loss=binary_cross_entropy",
    "frameworks=[numpy,torch,mlx]",
    "dtypes=[float32,float64]",
    "families=[spread]",
    "scales=[1,10,100]",
    "n_rows=4",
    "n_classes=8",
    "binary_cross_entropy.targets=[hard,soft]",
    "grad.enabled=true",
]
KL = [
    "loss=kl_divergence",
    "frameworks=[numpy,torch]",
    "dtypes=[bfloat16,float32]",
    "families=[independent,near]",
    "scales=[0.1,1,10,100]",
    "n_rows=2",
    "n_classes=64",
    "kl_divergence.delta=[1e-2]",
    "grad.enabled=true",
]


@pytest.fixture(scope="module")
def bce_run(tmp_path_factory):
    return harness.run(None, [*QUICK, *BCE], run_dir=tmp_path_factory.mktemp("bce"))


@pytest.fixture(scope="module")
def kl_run(tmp_path_factory):
    return harness.run(None, [*QUICK, *KL], run_dir=tmp_path_factory.mktemp("kl"))


def test_the_three_losses_are_registered_with_their_paths():
    assert losses.names() == ("cross_entropy", "binary_cross_entropy", "kl_divergence")
    assert losses.path_names("binary_cross_entropy") == ("naive", "probs", "with_logits", "log_sigmoid", "softplus")
    assert losses.path_names("kl_divergence") == ("naive", "kl_div", "kl_div_log_target", "ce_minus_entropy")


def test_bce_tables_carry_the_loss_its_settings_and_quantities(bce_run):
    errors = bce_run.errors
    assert set(errors["loss"]) == {"binary_cross_entropy"}
    assert set(errors["targets"]) == {"hard", "soft"}
    assert errors["pos_weight"].isna().all()
    for column in ("max_logit", "min_logit", "max_exact_loss"):
        assert errors[column].notna().all(), column
    assert "label_smoothing" not in errors  # cross-entropy's options are not a binary cross-entropy's columns
    # 4 x 8 logits: each cell holds 32 losses, one per logit; 3 frameworks x 5 paths x 2 dtypes x 3 scales x 2 targets
    assert len(errors) == 3 * 5 * 2 * 3 * 2
    unsupported = errors[errors["status"] == "unsupported"]
    assert set(zip(unsupported["framework"], unsupported["path"], strict=True)) == {("numpy", "probs")}
    assert set(bce_run.grad_errors["gradient_by"]) == {"harness", "framework"}


def test_bce_log_sigmoid_is_accurate_where_it_never_fails(bce_run):
    errors = bce_run.errors
    fine = errors[(errors["path"] == "log_sigmoid") & (errors["framework"] != "mlx")]
    assert (fine["status"].isin(["ok", "exact_underflow"])).all()
    assert fine["max_ulp_err"].max() < 4


def test_bce_naive_breaks_where_sigmoid_rounds_to_one(bce_run):
    breaks = pd.read_parquet(bce_run.dir / "breaks.parquet")
    naive = breaks[(breaks["path"] == "naive") & (breaks["dtype"] == "float32") & (breaks["targets"] == "hard")]
    by_framework = naive.set_index("framework")
    for framework, threshold in (
        ("numpy", 24 * math.log(2)),
        ("torch", 24 * math.log(2)),
        ("mlx", math.log(2**25 - 1)),
    ):
        lo, hi = by_framework.loc[framework, ["max_logit_lo", "max_logit_hi"]]
        assert lo <= threshold * 1.0001 and hi >= threshold * 0.9999, (framework, lo, hi, threshold)
        assert hi / lo - 1 < 1e-3  # bisected: the bracket is narrow
    breakdown = bce_run.breakdown
    failing = breakdown[breakdown["first_fail_status"] != ""]
    assert len(failing) and failing["matches_theory"].all(), failing["explanation"].tolist()
    assert set(failing["theory_cause"]) == {"sigmoid rounds to 1"}


def test_kl_naive_breaks_once_a_probability_underflows(kl_run):
    """A teacher probability of 0 makes 0 * log 0 = NaN, a student one under a positive teacher one inf."""
    breaks = pd.read_parquet(kl_run.dir / "breaks.parquet")
    naive = breaks[(breaks["path"] == "naive") & (breaks["family"] == "independent") & (breaks["dtype"] == "float32")]
    naive = naive.set_index("framework")
    for framework in ("numpy", "torch"):
        status = naive.loc[framework, "break_status"]
        hi = naive.loc[framework, "min_teacher_log_prob_hi" if status == "nan" else "min_student_log_prob_hi"]
        assert status in ("nan", "inf")
        assert abs(hi - math.log(2.0**-150)) <= 0.01 * 103.97, (framework, hi)
    breakdown = kl_run.breakdown
    failing = breakdown[breakdown["first_fail_status"] != ""]
    assert len(failing) and failing["matches_theory"].all(), failing["explanation"].tolist()


def test_kl_near_family_sweeps_delta_and_independent_ignores_it(kl_run):
    errors = kl_run.errors
    assert errors.loc[errors["family"] == "near", "delta"].eq(1e-2).all()
    assert errors.loc[errors["family"] == "independent", "delta"].isna().all()
    assert set(errors["temperature"]) == {1.0}
    near = errors[(errors["family"] == "near") & (errors["scale"] == 1) & (errors["path"] == "kl_div")]
    # KL of a student 1e-2 * z away, rows of 64 classes: about 1e-4 / 2 * Var_p(z), far below 1
    assert (near["max_exact_loss"] < 1e-3).all() and (near["max_exact_loss"] > 1e-6).all()


def test_a_negative_kl_is_a_status_of_its_own(kl_run):
    errors = kl_run.errors
    assert "negative" in set(errors["status"])  # a near student's bfloat16 sums cancel below zero
    negative = errors[errors["status"] == "negative"]
    assert (negative["n_nonfinite"] == 0).all() and (negative["dtype"] == "bfloat16").all()
    breakdown = kl_run.breakdown
    assert set(breakdown.loc[breakdown["first_fail_status"] == "negative", "theory_cause"]) == {"negative KL"}
    assert loss_status(np.array([-1e-9, 0.5]), np.array([1e-12, 0.5]), np.zeros(2), DTYPES["float32"], 0) == "negative"
    assert loss_status(np.array([1e-9, 0.5]), np.array([1e-12, 0.5]), np.zeros(2), DTYPES["float32"], 0) == "ok"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["loss=kl_divergence", "kl_divergence.temperature=[0]"], "temperature 0.0 is not positive"),
        (["loss=binary_cross_entropy", "binary_cross_entropy.targets=[fuzzy]"], "unknown targets 'fuzzy'"),
        (["loss=binary_cross_entropy", "binary_cross_entropy.pos_weight=[-1]"], "pos_weight must be null or"),
        (
            ["loss=binary_cross_entropy", "label_smoothing=[0.1]"],
            "label_smoothing=0.1 is a cross-entropy option that loss=binary_cross_entropy does not take; it takes "
            "reduction, ignore_fraction, class_weights, binary_cross_entropy.targets",
        ),
        (["loss=kl_divergence", "class_weights=[random]"], "class_weights=random is a cross-entropy option that"),
        (["loss=binary_cross_entropy", "row_errors=true"], "row_errors=true is measured for cross-entropy only"),
        (
            ["loss=kl_divergence", "families=[spread]"],
            "unknown family 'spread' in families; valid choices: independent",
        ),
        (["loss=binary_cross_entropy", "paths=[fused]"], "unknown path 'fused' in paths; valid choices: naive, probs"),
    ],
)
def test_bad_settings_fail_in_one_line_before_any_work(overrides, message):
    with pytest.raises(ConfigError, match=message) as refused:
        api.prepare(*api.settings_of(api.compose_config(overrides)))
    assert "\n" not in str(refused.value)


@pytest.mark.slow
def test_a_resumed_run_measures_nothing_again_and_writes_the_same_tables(tmp_path):
    first = harness.run(None, [*QUICK, *KL[:-1], "frameworks=[numpy]"], run_dir=tmp_path)
    journal = (tmp_path / "cells.jsonl").read_text()
    again = harness.run(None, [*QUICK, *KL[:-1], "frameworks=[numpy]", "resume=true"], run_dir=tmp_path)
    assert (tmp_path / "cells.jsonl").read_text() == journal
    pd.testing.assert_frame_equal(first.errors, again.errors)


def test_compare_keys_on_the_losses_settings(bce_run):
    comparison = compare.compare_errors(bce_run.errors, bce_run.errors)
    assert len(comparison) == len(bce_run.errors)
    assert set(comparison["change"]) == {"unchanged"}


def torch_bce(logits, targets):
    """max(x, 0) - x t + log1p(exp(-|x|)): the form TensorFlow documents."""
    import torch

    return torch.clamp(logits, min=0) - logits * targets + torch.log1p(torch.exp(-logits.abs()))


def torch_softplus_bce(logits, targets):
    import torch

    return torch.nn.functional.softplus(logits) - logits * targets


GRID = dict(loss="binary_cross_entropy", dtypes=["float32"], scales=[1, 100], n_rows=4, n_classes=8)


def test_assert_accurate_against_a_baseline_path():
    errors = assert_accurate(torch_bce, "torch", baseline="log_sigmoid", factor=4, **GRID)
    assert set(errors["path"]) == {"torch_bce", "log_sigmoid"}
    with pytest.raises(AssertionError, match=r"over 4 x log_sigmoid's") as failed:
        assert_accurate(torch_softplus_bce, "torch", baseline="log_sigmoid", factor=4, **GRID)
    assert "cells of torch/torch_softplus_bce exceed 4 x log_sigmoid's error" in str(failed.value)
    with pytest.raises(ValueError, match="baseline= and factor= go together"):
        assert_accurate(torch_bce, "torch", baseline="log_sigmoid", **GRID)


def test_measure_takes_a_losses_own_settings():
    errors = harness.measure(torch_bce, "torch", loss_settings={"targets": ["soft"]}, **GRID)
    assert set(errors["targets"]) == {"soft"} and set(errors["path"]) == {"torch_bce"}
    assert np.isfinite(errors["max_ulp_err"]).all()


def test_a_named_loss_is_timed_on_its_own_arrays(tmp_path):
    timed = ["timing.enabled=true", "timing.budget_s=0.01", "timing.min_blocks=2", "frameworks=[numpy,torch]"]
    run = harness.run(None, [*QUICK, *KL[:-1], *timed, "scales=[1]", "dtypes=[float32]"], run_dir=tmp_path)
    timings = run.timings
    assert set(timings["loss"]) == {"kl_divergence"} and set(timings["temperature"]) == {1.0}
    assert "label_smoothing" not in timings
    ran = timings[timings["status"] == "ok"]
    assert len(ran) == 2 * 4 - 1  # NumPy has no log-target form
    assert (ran["bytes_min"] == 2 * 2 * 64 * 4).all()  # teacher and student, 2 x 64 float32 each, read once
    assert (ran["gb_per_s"] > 0).all()


@pytest.mark.slow
def test_workers_and_a_custom_path_give_the_tables_one_process_gives(tmp_path):
    custom = (
        "custom_paths=[{framework: torch, name: mine, fn: 'test_named_losses:torch_bce', loss: binary_cross_entropy}]"
    )
    grid = [*QUICK[:-1], *BCE[:-1], "frameworks=[torch]", "dtypes=[float32]", custom]
    one = harness.run(None, [*grid, "workers=1"], run_dir=tmp_path / "one")
    assert "mine" in set(one.errors["path"])
    mine = one.errors[one.errors["path"] == "mine"]
    assert set(mine["status"]) <= {"ok", "exact_underflow"} and len(mine) == 3 * 2  # 3 scales x 2 targets
    two = harness.run(None, [*grid[:-1], "workers=2"], run_dir=tmp_path / "two")
    pd.testing.assert_frame_equal(one.errors[one.errors["path"] != "mine"].reset_index(drop=True), two.errors)


def mpmath_kl(teacher, student):
    """KL(softmax(t) || softmax(s)) per row in mpmath at 256 bits, rounded once to float64."""
    import mpmath

    rows = []
    for t, s in zip(teacher, student, strict=True):
        t, s = [mpmath.mpf(float(v)) for v in t], [mpmath.mpf(float(v)) for v in s]
        lt, ls = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in t)), mpmath.log(mpmath.fsum(mpmath.exp(v) for v in s))
        rows.append(float(mpmath.fsum(mpmath.exp(a - lt) * ((a - lt) - (b - ls)) for a, b in zip(t, s, strict=True))))
    return np.array(rows)


def test_reductions_are_the_frameworks_own_against_the_exact_sum_and_mean():
    """KL's mean over rows is PyTorch's batchmean; a callable exact per row leaves only the mean's own rounding."""
    grid = dict(loss="kl_divergence", dtypes=["float64"], scales=[1, 10], families=["independent"], n_rows=4)
    errors = harness.measure(mpmath_kl, "numpy", n_classes=16, **grid, reduction=["none", "mean", "sum"])
    assert set(errors["reduction"]) == {"none", "mean", "sum"} and (errors["status"] == "ok").all()
    assert errors.loc[errors["reduction"] == "none", "max_ulp_err"].max() <= 0.5  # correctly rounded rows
    assert errors.loc[errors["reduction"] != "none", "max_ulp_err"].max() <= 2  # 4 roundings of a 4-row sum
    assert len(errors) == 2 * 3


def test_given_inputs_from_a_file_and_inline(tmp_path):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "kl.npz", t=rng.standard_normal((3, 50)), s=rng.standard_normal((3, 50)))
    given = [f"file.path={tmp_path / 'kl.npz'}", "file.teacher_key=t", "file.student_key=s", "families=[file]"]
    run = harness.run(None, [*QUICK, *KL[:4], *given, "scales=[1]", "dtypes=[float64]"], run_dir=tmp_path / "kl")
    assert set(zip(run.errors["n_rows"], run.errors["n_classes"], strict=True)) == {(3, 50)}
    assert run.errors["delta"].isna().all()  # the student is given: no delta
    inline = ["families=[inline]", "inline.logits=[[30,-30,1]]", "inline.targets=[[1,0,0.5]]", "scales=[1]"]
    run = harness.run(None, [*QUICK, *BCE[:3], *inline], run_dir=tmp_path / "bce")
    # one row of three losses: about e**-30 for the two confident right answers, softplus(1) - 0.5 for the third
    torch = run.errors[(run.errors["framework"] == "torch") & (run.errors["path"] == "log_sigmoid")]
    assert set(torch["status"]) == {"ok"} and torch["max_ulp_err"].max() <= 2
    assert set(run.errors["n_rows"]) == {1} and set(run.errors["n_classes"]) == {3}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["inline.logits=[[1,2]]", "inline.targets=[[1,1.5]]"], "target 1.5 is outside"),
        (["inline.logits=[[1,2]]", "inline.targets=[[1]]"], "targets of shape"),
        (["inline.logits=[[1,2]]"], "family 'inline' needs inline.targets"),
    ],
)
def test_bad_given_inputs_fail_in_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as refused:
        api.prepare(
            *api.settings_of(api.compose_config(["loss=binary_cross_entropy", "families=[inline]", *overrides]))
        )
    assert "\n" not in str(refused.value)


def test_bce_ignored_rows_and_class_weights_against_mpmath():
    """sum(w l) / (kept count), w = mask x the label's weight, by hand in mpmath at 60 digits, is the
    reference the composed cells are measured against; its gradient is w sigmoid(x) - w t, over the count."""
    import mpmath

    from harness.paths.options import CellOptions
    from harness.sweep.named_options import Weights

    entry = losses.entry("binary_cross_entropy")
    rng = np.random.default_rng(3)
    x, t = 30 * rng.standard_normal((6, 5)), rng.integers(0, 2, (6, 5)).astype(float)
    weights = Weights(entry, CellOptions(ignore_fraction=0.5, class_weights="random"), x.shape, seed=4)
    assert weights.count == 3 * 5 and set(weights.weights.ravel()) - {0.0} <= {k / 8 for k in range(4, 17)}
    exact = entry.load("exact")(x, t)
    exact = type(exact)(exact.hi.ravel(), exact.lo.ravel(), np.broadcast_to(exact.exponent, exact.hi.shape).ravel())
    mpmath.mp.dps = 60
    softplus = [mpmath.log1p(mpmath.exp(-mpmath.mpf(v))) for v in x.ravel()]  # -log sigmoid(x)
    triples = zip(t.ravel(), softplus, x.ravel(), strict=True)
    losses_mp = [ti * sp + (1 - ti) * (sp + mpmath.mpf(v)) for ti, sp, v in triples]
    total = mpmath.fsum(w * l for w, l in zip(weights.weights.ravel(), losses_mp, strict=True))
    for reduction, expected in (("sum", total), ("mean", total / weights.count)):
        value = weights.exact(exact, reduction)
        got = (mpmath.mpf(value.hi[0]) + mpmath.mpf(value.lo[0])) * mpmath.mpf(2) ** int(value.exponent[0])
        assert abs(got - expected) <= 2**-60 * expected
    gradient = weights.exact_gradient(entry.load("exact_gradient")(x, t), "mean")
    for (i, j), w in np.ndenumerate(weights.weights):
        by_hand = w * (1 / (1 + mpmath.exp(-mpmath.mpf(x[i, j]))) - t[i, j]) / weights.count
        exponent = int(np.broadcast_to(gradient.exponent, x.shape)[i, j])
        got = (mpmath.mpf(gradient.hi[i, j]) + mpmath.mpf(gradient.lo[i, j])) * mpmath.mpf(2) ** exponent
        assert abs(got - by_hand) <= 2**-60 * abs(by_hand) + mpmath.mpf(2) ** -1000


def test_ignored_rows_and_class_weights_are_composed_in_every_framework(tmp_path):
    """Ignored rows and a weight per label (BCE), ignored rows (KL): each framework's multiply, sum and divide
    around its losses, within a few ulps of the exact composition in float64 where its path is accurate; a
    mean over no kept row is `undefined`, not a failure."""
    bce = harness.run(
        None,
        [*QUICK, *BCE[:-2], "frameworks=[numpy,torch,jax]", "dtypes=[float64]", "binary_cross_entropy.targets=[hard]"]
        + ["reduction=[none,mean,sum]", "ignore_fraction=[0.5]", "class_weights=[null,random]", "grad.enabled=true"],
        run_dir=tmp_path / "bce",
    )
    for table in (bce.errors, bce.grad_errors):
        assert {"ignore_fraction", "class_weights"} <= set(table.columns)
        accurate = table[table["path"] == "log_sigmoid"]
        assert len(accurate) == 3 * 3 * 2 * 3 and set(accurate["status"]) == {"ok"}
        assert accurate.loc[accurate["framework"] != "jax", "max_ulp_err"].max() <= 4
        assert accurate["max_ulp_err"].max() <= 16  # JAX's log_sigmoid gradient: 15.5 ulps without options too
    kl = harness.run(
        None,
        [*QUICK, *KL[:-1], "frameworks=[numpy,torch]", "dtypes=[float64]", "families=[independent]"]
        + ["reduction=[mean]", "ignore_fraction=[0.5,1.0]", "grad.enabled=true"],
        run_dir=tmp_path / "kl",
    )
    ran = kl.errors[kl.errors["status"] != "unsupported"]
    kept = ran[ran["ignore_fraction"] == 0.5]
    assert len(kept) == 7 * 4 and set(kept["status"]) == {"ok"}
    # at logits of 0.1 z every path's sum cancels (KL about 1e-2 of its terms); from 1 up one path holds
    best = kept[kept["scale"] >= 1].groupby(["framework", "scale"])["max_ulp_err"].min()
    assert best.max() <= 4
    assert set(ran.loc[ran["ignore_fraction"] == 1.0, "status"]) == {"undefined"}
    gradients = kl.grad_errors[kl.grad_errors["status"] != "unsupported"]
    assert set(gradients.loc[gradients["ignore_fraction"] == 1.0, "status"]) == {"undefined"}
