"""Plots a reader can use: nothing clipped, no two lines alike, a band labelled by framework, a
panel's range set by its own errors, and theory's breaks marked where the thresholds put them.

Every figure is drawn from small synthetic tables (8 paths x 3 frameworks, 1, 2 or 4 dtypes)."""

import math

import numpy as np
import pandas as pd
import pytest

from harness.mechanisms import joined
from harness.outputs import heatmaps, plots, styles, timing_plots
from harness.paths import ENTRIES_BY_NAME

PATHS = ("naive", "softmax_log", "log_softmax_nll", "fused", "upcast_fused", "log1p_lse", "online", "chunked")
FRAMEWORKS = ("numpy", "torch", "jax")
ALL_DTYPES = ("float16", "bfloat16", "float32", "float64")
SCALES = (1.0, 3.0, 10.0, 30.0, 50.0, 100.0, 1000.0)
HUGE = 1e133  # ulps: one wild float64 error must not flatten the other panels


def synthetic_errors(dtypes=ALL_DTYPES, gradient=False) -> pd.DataFrame:
    """max_lse = 3 x scale, max_exact_loss = 2 x scale; naive fails once max_lse > 11.09 (float16),
    softmax_log is nan at the largest scale; float16 inputs overflow at scale 1e3 (input_inf);
    float64 upcast_fused has one error of 1e133 ulps."""
    rows = []
    for dtype in dtypes:
        for scale in SCALES:
            for framework in FRAMEWORKS:
                for i, path in enumerate(PATHS):
                    status, error = "ok", 0.4 + 0.1 * i + 0.01 * scale
                    if dtype == "float16" and scale == 1000.0:
                        status, error = "input_inf", np.nan
                    elif path == "naive" and 3 * scale > 11.09:
                        status, error = "inf", np.nan
                    elif path == "softmax_log" and scale == 100.0:
                        status, error = "nan", np.nan
                    elif path == "upcast_fused" and dtype == "float64" and scale == 30.0:
                        error = HUGE
                    rows.append(
                        dict(framework=framework, path=path, dtype=dtype, family="spread", scale=scale, n_rows=8,
                             n_classes=100, device="cpu", max_logit=scale, max_exact_loss=2 * scale,
                             max_lse=3 * scale, status=status, bound_ulp=20.0, message="",
                             mechanisms=joined(ENTRIES_BY_NAME[path].mechanisms))
                        | ({"max_row_rel_err": error * 1e-4} if gradient else {"max_ulp_err": error})
                    )  # fmt: skip
    return pd.DataFrame(rows)


def synthetic_timings(dtypes=ALL_DTYPES) -> pd.DataFrame:
    rows = [
        dict(framework=f, path=p, dtype=d, n_rows=n, n_classes=1000, threads=1, median_s=1e-4 * (1 + i) * n / 64,
             iqr_s=1e-6, status="ok", bandwidth_gb_per_s=10.0)
        for d in dtypes for n in (64, 256) for f in FRAMEWORKS for i, p in enumerate(PATHS)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def outside_the_figure(fig) -> list[str]:
    """Every text the figure draws, with its extent, that is not inside the figure's box."""
    fig.canvas.draw()
    renderer, box = fig.canvas.get_renderer(), fig.bbox
    parts = [(f"axes {ax.get_title() or i}", ax.get_tightbbox(renderer)) for i, ax in enumerate(fig.axes)]
    parts += [(f"legend {i}", legend.get_window_extent(renderer)) for i, legend in enumerate(fig.legends)]
    texts = fig.texts + [t for ax in fig.axes for t in ax.texts]  # the titles and tick labels are the axes'
    parts += [(f"text {t.get_text()!r}", t.get_window_extent(renderer)) for t in texts if t.get_text()]
    tol = 1.0  # pixel
    return [
        f"{name}: {extent.bounds}"
        for name, extent in parts
        if extent.x0 < box.x0 - tol or extent.y0 < box.y0 - tol or extent.x1 > box.x1 + tol or extent.y1 > box.y1 + tol
    ]


def test_the_clipping_check_sees_clipped_text():
    fig = styles.new_figure(3, 2)
    fig.text(0.9, 0.5, "a label that runs far past the right edge of the figure")
    assert outside_the_figure(fig) != []


@pytest.fixture(scope="module")
def four_dtypes():
    """The error plot of all four dtypes, 8 paths x 3 frameworks: drawn once, read by several tests."""
    return plots.error_vs_figure(synthetic_errors(), "scale", "family spread, 100 classes")


@pytest.mark.parametrize("dtypes", [("float16",), ("float16", "float64"), ALL_DTYPES], ids=len)
def test_error_plot_text_and_legend_lie_inside_the_figure(dtypes, four_dtypes):
    fig = four_dtypes if len(dtypes) == 4 else plots.error_vs_figure(synthetic_errors(dtypes), "scale", "spread")
    assert outside_the_figure(fig) == []
    assert len(fig.legends) == 1


def test_gradient_plot_text_lies_inside_the_figure():
    cells = synthetic_errors(("bfloat16", "float64"), gradient=True)
    assert outside_the_figure(plots.error_vs_figure(cells, "scale", "family spread", plots.GRADIENT_ROW_REL)) == []


@pytest.mark.parametrize("dtypes", [("float16",), ALL_DTYPES], ids=len)
def test_heatmap_and_timing_text_lie_inside_the_figure(dtypes):
    errors, timings = synthetic_errors(dtypes), synthetic_timings(dtypes)
    assert outside_the_figure(timing_plots.accuracy_vs_time_figure(errors, timings)) == []
    if len(dtypes) == 1:  # one panel per family and size: the dtypes do not change their width
        assert outside_the_figure(heatmaps.correct_bits_figure(errors, dtypes[0])) == []
        assert outside_the_figure(timing_plots.timing_bars_figure(timings, dtypes[0])) == []


def synthetic_row_errors(frameworks, paths) -> pd.DataFrame:
    """Per-row errors of the MNIST study's shape: 50 rows per cell, one non-finite row per cell."""
    rng = np.random.default_rng(0)
    rows = [
        dict(framework=f, path=p, dtype=d, scale=1.0, row=r, computed=np.inf if r == 0 else 1.0,
             ulp_err=float(rng.lognormal(0, 2)))
        for d in ALL_DTYPES for f in frameworks for p in paths for r in range(50)
    ]  # fmt: skip
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    ("frameworks", "paths"),
    [(("numpy", "torch", "jax", "mlx"), PATHS[:4]), (("numpy", "torch", "jax", "mlx", "tensorflow"), PATHS)],
    ids=["default 16 lines", "40 lines"],
)
def test_error_distribution_text_and_legend_lie_inside_the_figure(frameworks, paths):
    from harness.experiments.blanchard2021_mnist import distribution_figure

    fig = distribution_figure(synthetic_row_errors(frameworks, paths), 1.0)
    assert outside_the_figure(fig) == []
    assert len(fig.legends) == 1 and len(fig.legends[0].get_texts()) == len(frameworks) * len(paths)


def data_lines(ax):
    return [line for line in ax.get_lines() if line.get_label().startswith("_") and line.get_marker() != "None"]


def test_no_two_lines_of_a_panel_look_alike():
    fig = plots.error_vs_figure(synthetic_errors(("float32",)), "scale", "spread")
    (ax,) = [ax for ax in fig.axes if ax.get_yscale() == "log"]
    lines = data_lines(ax)
    assert len(lines) == len(PATHS) * len(FRAMEWORKS)
    looks = {(line.get_color(), str(line.get_linestyle()), line.get_marker()) for line in lines}
    assert len(looks) == 24
    assert len({line.get_color() for line in lines}) == 8  # one colour per path


def test_colours_derive_from_the_order_of_paths_present():
    assert styles.path_colors(["b", "a", "b"]) == {"b": styles.PALETTE[0], "a": styles.PALETTE[1]}
    assert len(set(styles.palette(30))) == 30  # past the palette: still no repeat
    marks = styles.framework_marks(["numpy", "torch", "jax", "mlx", "tensorflow"])
    assert len(set(marks.values())) == 5


def test_the_band_rows_are_labelled_by_framework():
    fig = plots.error_vs_figure(synthetic_errors(("float16", "float32")), "scale", "spread")
    band = fig.axes[1]  # each dtype: main panel, then the band above it
    assert [t.get_text() for t in band.get_yticklabels()] == list(FRAMEWORKS)
    assert band.get_ylim() == (-2.5, 0.5)
    rows = sorted({round(float(y)) for c in band.collections for _, y in c.get_offsets()})
    assert rows == [-2, -1, 0]  # the inf and nan marks sit on the framework rows, nothing between


def main_panels(fig, dtypes=ALL_DTYPES) -> dict[str, object]:
    """dtype -> its main panel (the log-scaled one, below the band), in dtype order."""
    return dict(zip(dtypes, [ax for ax in fig.axes if ax.get_yscale() == "log"], strict=True))


def test_a_huge_error_does_not_flatten_the_other_panels(four_dtypes):
    panels = main_panels(four_dtypes)
    # largest error elsewhere 0.4 + 0.7 + 10 = 11.1 ulps, bound 20: the axis ends at 10**ceil(log10(60)) = 100
    for dtype in ("float16", "bfloat16", "float32"):
        assert panels[dtype].get_ylim()[1] == 100.0
    # float64: 1e133 ulps is drawn on the ceiling 2**53 (every bit lost); the axis ends at 1e17, not 1e133
    assert panels["float64"].get_ylim()[1] == 1e17
    off_scale = [c for c in panels["float64"].collections if c.get_offsets().shape[0]]
    assert [tuple(c.get_offsets()[0]) for c in off_scale] == [(30.0, 2.0**53)] * 3


def theory_lines(ax) -> dict[str, float]:
    return {line.get_label(): line.get_xdata()[0] for line in ax.get_lines() if line.get_label().startswith("theory")}


def test_theory_marks_sit_where_the_thresholds_are_passed(four_dtypes):
    panels = main_panels(four_dtypes)
    overflow = "theory: sum overflow (naive)"
    underflow = "theory: target underflow (naive, softmax_log)"
    flushed = "theory: target underflow, subnormals flushed to zero (naive, softmax_log)"
    # float16: max_lse = 3 x scale passes ln(65504) = 11.09 at scale 10 (9 at 3); max_exact_loss = 2 x scale
    # passes -ln(2**-24) = 16.64 at scale 10 as well
    assert math.log(65504) == pytest.approx(11.09, abs=0.01)
    assert theory_lines(panels["float16"]) == {overflow: 10.0, underflow: 10.0}
    # float32: ln(3.4e38) = 88.72 is passed at 30 (90); -ln(2**-149) = 103.3 at 100 (200 > 103.3 > 100),
    # but JAX flushes subnormals in float32, so its threshold is -ln(2**-126) = 87.34, passed at 50 (100)
    assert theory_lines(panels["float32"]) == {overflow: 30.0, underflow: 100.0, flushed: 50.0}
    legend_texts = [t.get_text() for t in four_dtypes.legends[0].get_texts()]
    assert {overflow, underflow, flushed} <= set(legend_texts)


def test_a_panel_whose_cells_all_failed_still_draws(tmp_path):
    """Every cell unsupported (e.g. a NumPy gradient with loss options): no line to draw, a log axis all the same."""
    errors = synthetic_errors(dtypes=["float32"]).assign(status="unsupported", max_ulp_err=np.nan)
    out = tmp_path / "all_unsupported.png"
    plots.error_vs(errors, "scale", "all unsupported", out)
    assert out.stat().st_size > 5_000
