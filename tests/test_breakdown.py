"""Breakdown points against theory: thresholds from the dtype limits, bits lost, hand-built cells,
the flush table re-measured, and a small real sweep whose breaks theory must place."""

import math

import mpmath
import numpy as np
import pandas as pd
import pytest
from conftest import small_sweep

from harness.mechanisms import joined
from harness.outputs import breakdown
from harness.outputs.breakdown import SUM_OVERFLOW, TARGET_UNDERFLOW, breakdown_frame
from harness.paths import ENTRIES_BY_NAME
from harness.sweep import metrics

LN2 = math.log(2.0)
# largest finite = (2 - 2**(1 - p)) * 2**emax; half an ulp there = 2**(emax - p)
LARGEST = {
    "float16": (2 - 2.0**-10) * 2.0**15,
    "bfloat16": (2 - 2.0**-7) * 2.0**127,
    "float32": (2 - 2.0**-23) * 2.0**127,
    "float64": (2 - 2.0**-52) * 2.0**1023,
}
HALF_ULP = {"float16": 2.0**4, "bfloat16": 2.0**119, "float32": 2.0**103, "float64": 2.0**970}


@pytest.mark.parametrize(
    "dtype, about",
    [("float16", 11.0901), ("bfloat16", 88.7209), ("float32", 88.7228), ("float64", 709.7827)],
)
def test_overflow_threshold_is_ln_largest_finite_plus_half_an_ulp(dtype, about):
    with mpmath.workdps(40):
        exact = float(mpmath.log(mpmath.mpf(LARGEST[dtype]) + HALF_ULP[dtype]))
    assert breakdown.overflow_threshold(dtype) == pytest.approx(exact, rel=1e-15)
    assert breakdown.overflow_threshold(dtype) == pytest.approx(about, abs=1e-4)


@pytest.mark.parametrize(
    "dtype, subnormal_exponent, normal_exponent, about",
    [
        ("float16", 24, 14, 17.3287),
        ("bfloat16", 133, 126, 92.8817),
        ("float32", 149, 126, 103.9721),
        ("float64", 1074, 1022, 745.1332),
    ],
)
def test_underflow_threshold_is_minus_ln_half_the_smallest_subnormal_or_the_smallest_normal(
    dtype, subnormal_exponent, normal_exponent, about
):
    # exp(-loss) rounds to 0 once it is at most half the smallest subnormal 2**-(e + 1)
    assert breakdown.underflow_threshold(dtype) == pytest.approx((subnormal_exponent + 1) * LN2, rel=1e-15)
    assert breakdown.underflow_threshold(dtype) == pytest.approx(about, abs=1e-4)
    assert breakdown.underflow_threshold(dtype, flushes_subnormals=True) == pytest.approx(normal_exponent * LN2)


def test_bits_lost_on_hand_cases():
    ulps = [0.0, 0.25, 0.5, 1.0, 2.0, 1024.0, np.nan]
    assert metrics.bits_lost(ulps)[:6].tolist() == [0.0, 0.0, 0.0, 1.0, 2.0, 11.0]
    assert np.isnan(metrics.bits_lost(ulps)[6])
    # correct bits: float16 has 11; 1 ulp costs 1 bit; 2**11 ulps leaves nothing (clipped at 0)
    assert metrics.correct_bits([0.5, 1.0, 2.0**11], 11).tolist() == [11.0, 10.0, 0.0]


def test_default_bits_lost_limit_is_half_the_significand():
    limits = {d: breakdown.default_bits_lost_limit(d) for d in LARGEST}
    assert limits == {"float16": 5.5, "bfloat16": 4.0, "float32": 12.0, "float64": 26.5}


def _flushes_in(framework: str, dtype: str) -> bool:
    """Whether smallest_normal / 4 (a subnormal) comes back as zero, by product and by quotient."""
    from harness.dtypes import DTYPES

    fmt = DTYPES[dtype]
    tiny = np.array([fmt.smallest_normal]).astype(fmt.numpy_type)
    if framework == "numpy":
        results = [tiny * fmt.numpy_type(0.25), tiny / fmt.numpy_type(4)]
    elif framework == "torch":
        torch = pytest.importorskip("torch")
        x = torch.tensor(tiny.astype(np.float64)).to(getattr(torch, dtype))
        results = [(x * 0.25).double().numpy(), (x / 4).double().numpy()]
    else:
        pytest.importorskip("jax")
        import jax
        import jax.numpy as jnp

        from harness.backends import jax as jax_backend

        with jax_backend.dtype_scope(dtype):  # x64 in float64 cells, as the sweep runs them
            x = jnp.asarray(tiny)
            assert x.dtype == tiny.dtype
            results = [jax.jit(lambda v: v * 0.25)(x), jax.jit(lambda v: v / 4)(x)]
    return all(float(np.asarray(r, dtype=np.float64)[0]) == 0.0 for r in results)


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["numpy", "torch", "jax"])
def test_flush_table_matches_the_installed_frameworks_on_cpu(framework):
    for dtype in LARGEST:
        assert _flushes_in(framework, dtype) == breakdown.flushes_subnormals(framework, dtype, "cpu"), dtype


# --- hand-built errors tables ---------------------------------------------------------------


def cells(framework, path, dtype, statuses, ulps, max_logit, scales=None, family="spread", **quantities):
    """One framework/path/dtype/family over a scale grid, as the errors table holds it."""
    n = len(statuses)
    frame = pd.DataFrame(
        {
            "framework": framework,
            "path": path,
            "dtype": dtype,
            "family": family,
            "scale": scales if scales is not None else [2.0**i for i in range(n)],
            "n_rows": 4,
            "n_classes": 10,
            "max_logit": max_logit,
            "status": statuses,
            "max_ulp_err": ulps,
            "message": ["NotImplementedError: no bfloat16" if s == "unsupported" else "" for s in statuses],
            "mechanisms": declared_mechanisms(path),
        }
    )
    return frame.assign(**quantities)


def declared_mechanisms(path: str):
    """What the runner writes in the `mechanisms` column: the entry's mechanisms (None for an unknown path)."""
    entry = ENTRIES_BY_NAME.get(path)
    return None if entry is None else joined(entry.mechanisms)


def one_row(frame, **kwargs):
    table = breakdown_frame(frame, **kwargs)
    assert len(table) == 1
    return table.iloc[0]


def test_naive_overflow_on_a_hand_built_grid():
    frame = cells(
        "numpy",
        "naive",
        "float16",
        ["ok", "ok", "ok", "inf", "nan"],
        [0.5, 1.0, 64.0, np.nan, np.nan],
        max_logit=[2.0, 4.0, 8.0, 16.0, 32.0],
        max_lse=[3.0, 5.0, 9.0, 17.0, 33.0],
        max_exact_loss=[4.0, 6.0, 10.0, 15.0, 40.0],
    )
    row = one_row(frame)
    assert (row["first_fail_scale"], row["first_fail_max_logit"], row["first_fail_status"]) == (8.0, 16.0, "inf")
    # 64 ulps = log2(128) = 7 bits > 5.5 from scale 4, before the failure
    assert (row["bits_lost_limit"], row["first_bits_lost_scale"], row["max_bits_lost"]) == (5.5, 4.0, 7.0)
    assert row["theory_cause"] == SUM_OVERFLOW and row["theory_quantity"] == "max_lse"
    assert row["theory_threshold"] == pytest.approx(math.log(65520.0))
    assert (row["theory_scale"], row["quantity_before_fail"], row["quantity_at_fail"]) == (8.0, 9.0, 17.0)
    # without a breaks table the measured break is the grid's bracket: ln 65520 = 11.09 lies in [9, 17]
    assert (row["break_scale_lo"], row["break_scale_hi"], row["break_quantity_lo"], row["break_quantity_hi"]) == (
        4.0,
        8.0,
        9.0,
        17.0,
    )
    assert row["bisection"] == "grid only: no breaks table"
    assert row["grid_steps_off"] == 0 and row["matches_theory"] and row["explanation"] == ""
    # k as a setting: with k = 0.5, 1 ulp (1 bit) at scale 2 is already too much
    assert one_row(frame, bits_lost_limit=0.5)["first_bits_lost_scale"] == 2.0


def test_sum_overflow_falls_back_to_max_logit_and_says_what_is_missing():
    frame = cells(
        "torch",
        "naive",
        "float16",
        ["ok", "inf", "inf", "inf", "inf"],
        [0.5, np.nan, np.nan, np.nan, np.nan],
        max_logit=[2.0, 4.0, 6.0, 10.0, 16.0],
        max_exact_loss=[3.0, 4.0, 5.0, 6.0, 8.0],
    )
    row = one_row(frame)
    assert row["theory_quantity"] == "max_logit" and row["theory_scale"] == 16.0
    # the log-sum-exp is at most max_logit + ln 10 = 6.3 at the break, far below 11.09
    assert row["grid_steps_off"] == -3 and not row["matches_theory"]
    assert "63.9% below the sum overflow threshold 11.09" in row["explanation"] and "no max_lse" in row["explanation"]
    # 9 + ln 10 = 11.30 >= 11.09: the log-sum-exp may have passed it, so theory agrees and says why
    near = one_row(frame.assign(max_logit=[2.0, 9.0, 12.0, 14.0, 16.0]))
    assert near["grid_steps_off"] == -1 and near["matches_theory"]
    assert near["explanation"].startswith("the sum of exps overflows before any single exp")
    assert "ln(n_classes) = 2.303" in near["explanation"]  # 10 classes


def test_target_underflow_with_and_without_subnormal_flushing():
    scales = [10.0, 20.0, 40.0]
    losses = {"max_exact_loss": [50.0, 95.0, 120.0]}  # -ln(2**-126) = 87.3 < 95 < 104.0 = -ln(2**-150)
    args = (["ok", "inf", "inf"], [0.6, np.nan, np.nan], [20.0, 40.0, 80.0], scales)
    jax_row = one_row(cells("jax", "softmax_log", "float32", *args, **losses))
    assert jax_row["flushes_subnormals"] and jax_row["theory_threshold"] == pytest.approx(126 * LN2)
    assert jax_row["theory_scale"] == 20.0 and jax_row["grid_steps_off"] == 0 and jax_row["matches_theory"]
    assert jax_row["explanation"].startswith("jax flushes subnormals to zero in float32 (measured)")
    assert "gradual underflow would put it at 103.97" in jax_row["explanation"]
    # gradual underflow puts the break at 103.97, beyond the bracket [50, 95] by more than 1%
    numpy_row = one_row(cells("numpy", "softmax_log", "float32", *args, **losses))
    assert not numpy_row["flushes_subnormals"] and numpy_row["theory_threshold"] == pytest.approx(150 * LN2)
    assert numpy_row["grid_steps_off"] == -1 and not numpy_row["matches_theory"]
    assert "8.6% below the target underflow threshold 103.97; no measured fact" in numpy_row["explanation"]


def test_the_measured_flush_column_decides_over_the_fallback_table():
    frame = cells(
        "numpy", "softmax_log", "float32", ["ok", "inf"], [0.6, np.nan], [20.0, 40.0], max_exact_loss=[50.0, 95.0]
    )
    assert one_row(frame.assign(flushes_subnormals=True))["matches_theory"]  # 87.34 in [50, 95]
    assert not one_row(frame.assign(flushes_subnormals=[pd.NA, False]))["matches_theory"]


def breaks_row(frame, lo, hi, accumulation="", **quantities):
    """The breaks-table row harness.sweep.bisect writes for a one-combination errors table."""
    keys = frame.iloc[0][["framework", "path", "dtype", "family", "n_rows", "n_classes"]].to_dict()
    ends = {f"{q}_{end}": np.nan for q in ("max_logit", "max_lse", "max_exact_loss") for end in ("lo", "hi")}
    row = keys | ends | quantities
    row |= {"bisection": "bisected: 13 halvings, 13 runs", "break_scale_lo": lo, "break_scale_hi": hi}
    return pd.DataFrame([row | {"accumulation": accumulation}])


def test_a_bisected_break_tells_flushing_from_gradual_underflow():
    # one grid step from loss 50 to 120 holds both 87.34 (flushed) and 103.97 (gradual): the grid cannot tell
    frame = cells(
        "numpy", "softmax_log", "float32", ["ok", "inf"], [0.6, np.nan], [20.0, 50.0], max_exact_loss=[50.0, 120.0]
    )
    assert one_row(frame)["matches_theory"]
    gradual = breaks_row(frame, 24.83, 24.832, max_exact_loss_lo=103.966, max_exact_loss_hi=103.974)
    row = breakdown_frame(frame, breaks=gradual).iloc[0]
    assert row["matches_theory"] and (row["break_scale_lo"], row["break_scale_hi"]) == (24.83, 24.832)
    assert (row["break_quantity_lo"], row["break_quantity_hi"]) == (103.966, 103.974)
    assert row["bisection"] == "bisected: 13 halvings, 13 runs"
    early = breaks_row(frame, 20.86, 20.862, max_exact_loss_lo=87.333, max_exact_loss_hi=87.34)
    row = breakdown_frame(frame, breaks=early).iloc[0]
    assert not row["matches_theory"]
    assert row["explanation"] == (
        "broke (inf) at scale 20.862 (not yet at 20.86), where the largest exact loss is 87.333 to 87.34, 16.0% below "
        "the target underflow threshold 103.97; no measured fact (subnormal flushing, accumulation dtype) puts a "
        "threshold there"
    )


def test_a_flushed_reciprocal_explains_an_early_sum_overflow():
    # JAX computes x / s as x * (1 / s): with subnormals flushed, 1/s is 0 once lse passes -ln(2**-126) = 87.34
    frame = cells("jax", "naive", "float32", ["ok", "nan"], [0.6, np.nan], [50.0, 100.0], max_lse=[57.0, 107.0]).assign(
        flushes_subnormals=True, max_exact_loss=[9.6, 9.6]
    )
    measured = breaks_row(frame, 79.82, 79.83, max_lse_lo=87.3355, max_lse_hi=87.3411)
    row = breakdown_frame(frame, breaks=measured).iloc[0]
    assert not row["matches_theory"] and row["theory_cause"] == SUM_OVERFLOW
    assert "1.6% below the sum overflow threshold 88.723" in row["explanation"]
    assert "jax flushes subnormals to zero in float32 (measured), so 1/sum(exp) becomes 0" in row["explanation"]
    assert row["explanation"].endswith("-ln(smallest normal) = 87.337: within 1% of it")


def test_an_accumulation_dtype_explains_a_late_sum_overflow():
    frame = cells("numpy", "naive", "float16", ["ok", "inf"], [0.6, np.nan], [5.0, 95.0], max_lse=[10.0, 100.0])
    frame = frame.assign(max_exact_loss=[1.0, 1.0])
    late = breaks_row(frame, 88.7, 88.71, "float32", max_lse_lo=88.70, max_lse_hi=88.73)
    row = breakdown_frame(frame, breaks=late).iloc[0]
    assert not row["matches_theory"]
    assert "had passed 11.09 (sum overflow) before it" in row["explanation"]
    assert "numpy's naive carries float16 sums in float32 (path entry): sum overflow at 88.723" in row["explanation"]


def test_a_correctly_rounded_inf_is_not_a_break():
    # the adversarial float16 loss at scale 1e4 is 70208: inf is the correctly rounded answer
    frame = cells(
        "torch",
        "fused",
        "float16",
        ["ok", "ok", "exact_overflow"],
        [0.5, 0.5, 2.0],
        [10.0, 1000.0, 10000.0],
        max_exact_loss=[20.0, 7000.0, 70208.0],
    )
    row = one_row(frame)
    assert np.isnan(row["first_fail_scale"]) and row["exact_overflow_scale"] == 4.0
    assert row["matches_theory"] and row["theory_cause"] == "none" and row["explanation"] == ""
    assert row["max_bits_lost"] == 2.0  # its finite rows still count: 2 ulps = 2 bits


def test_stable_paths_should_not_break():
    quiet = one_row(cells("torch", "fused", "float64", ["ok"] * 3, [0.5, 1.0, 1.2], [1.0, 10.0, 100.0]))
    assert quiet["theory_cause"] == "none" and quiet["matches_theory"] and np.isnan(quiet["first_fail_scale"])
    broken = one_row(
        cells("torch", "log_softmax_nll", "float64", ["ok", "nan", "nan"], [0.5, np.nan, np.nan], [1, 2, 3])
    )
    assert not broken["matches_theory"] and "stable path should not break" in broken["explanation"]


def test_a_path_that_never_breaks_where_theory_says_it_should():
    frame = cells("numpy", "softmax_log", "float16", ["ok"] * 3, [0.5] * 3, [1, 5, 9], max_exact_loss=[5.0, 20.0, 40.0])
    row = one_row(frame)
    assert not row["matches_theory"] and row["explanation"].startswith("never broke, though the largest exact loss 20")


def test_input_inf_and_unsupported_are_not_the_paths_failure():
    overflowing = cells(
        "numpy",
        "naive",
        "float16",
        ["ok", "ok", "input_inf", "input_inf"],
        [0.5, 0.6, np.nan, np.nan],
        [1.0, 2.0, np.inf, np.inf],
        max_lse=[2.0, 3.0, np.nan, np.nan],
        max_exact_loss=[2.5, 3.5, np.nan, np.nan],
    )
    row = one_row(overflowing)
    assert np.isnan(row["first_fail_scale"]) and row["input_inf_scale"] == 4.0
    assert row["matches_theory"] and row["theory_cause"] == "none"
    unsupported = one_row(cells("torch", "fused", "bfloat16", ["unsupported"] * 2, [np.nan] * 2, [1.0, 2.0]))
    assert unsupported["n_unsupported"] == 2 and pd.isna(unsupported["matches_theory"])
    assert unsupported["explanation"] == "unsupported: NotImplementedError: no bfloat16"


def test_theory_that_needs_a_missing_column_is_not_checked():
    row = one_row(cells("numpy", "softmax_log", "float16", ["ok", "inf"], [0.5, np.nan], [1.0, 20.0]))
    assert pd.isna(row["matches_theory"]) and "needs column max_exact_loss" in row["explanation"]
    assert row["first_fail_scale"] == 2.0  # the measured break is still reported


def test_write_breakdown_writes_csv_and_parquet(tmp_path):
    frame = cells(
        "numpy", "softmax_log", "float16", ["ok", "inf"], [0.5, np.nan], [1.0, 20.0], max_exact_loss=[2.0, 30.0]
    )
    written = breakdown.write_breakdown(frame, tmp_path)
    from_parquet = pd.read_parquet(tmp_path / "breakdown.parquet")
    from_csv = pd.read_csv(tmp_path / "breakdown.csv")
    assert list(from_parquet.columns) == list(written.columns) == list(from_csv.columns)
    assert from_parquet["matches_theory"].tolist() == [True] and from_csv["theory_cause"].tolist() == [TARGET_UNDERFLOW]


# --- a real sweep ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_sweep_errors():
    from harness.pipeline import sweep_errors

    sweep = small_sweep(
        experiment="breakdown_test",
        frameworks=("numpy", "torch"),
        paths=("naive", "fused"),
        dtypes=("float16", "float32"),
        scales=tuple(float(s) for s in np.logspace(-1, 3, 20)),
        seed=0,
    )
    return sweep_errors(sweep)


@pytest.mark.slow
def test_breakdown_csv_agrees_with_theory_on_a_small_sweep(small_sweep_errors, tmp_path):
    assert "max_exact_loss" in small_sweep_errors, "the runner must record max_exact_loss for the underflow theory"
    breakdown.write_breakdown(small_sweep_errors, tmp_path)
    table = pd.read_csv(tmp_path / "breakdown.csv")
    assert len(table) == 2 * 2 * 2 * 2
    disagreements = table.loc[table["matches_theory"] != True, ["framework", "path", "dtype", "family", "explanation"]]  # noqa: E712
    assert disagreements.empty, disagreements.to_string()
    fused = table[table["path"] == "fused"]
    assert fused["first_fail_scale"].isna().all() and (fused["theory_cause"] == "none").all()
    naive = table[table["path"] == "naive"]
    assert naive["first_fail_scale"].notna().all()
    # spread breaks by the target probability underflowing, offset (loss unchanged) by the sum overflowing
    assert set(naive.loc[naive["family"] == "offset", "theory_cause"]) == {SUM_OVERFLOW}
    for row in naive.itertuples():
        expected = (
            breakdown.overflow_threshold(row.dtype)
            if row.theory_cause == SUM_OVERFLOW
            else breakdown.underflow_threshold(row.dtype)
        )
        assert row.theory_threshold == pytest.approx(expected)
        # at the break the quantity has passed the threshold; the largest logit is only a lower bound on
        # the log-sum-exp, which exceeds it by at most ln(n_classes)
        slack = math.log(row.n_classes) if row.theory_quantity == "max_logit" else 0.0
        assert row.quantity_at_fail + slack > row.theory_threshold
    by_dtype = naive.groupby(["family", "dtype"])["first_fail_scale"].min().unstack()
    assert (by_dtype["float16"] < by_dtype["float32"]).all()  # float16's thresholds come far sooner
