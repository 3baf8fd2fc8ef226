"""Figures drawn fast without changing a pixel: one layout pass per figure, and the error plots in a
second process beside the bisection."""

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from harness.outputs import figures, plots, styles


def small_errors() -> pd.DataFrame:
    """Two paths of one framework over five scales; naive is inf from scale 100 on."""
    rows = [
        dict(framework="numpy", path=path, dtype=dtype, family="spread", scale=scale, n_rows=4, n_classes=10,
             device="cpu", max_logit=scale, max_exact_loss=2 * scale, max_lse=3 * scale, bound_ulp=20.0,
             status="inf" if path == "naive" and scale >= 100 else "ok",
             max_ulp_err=np.nan if path == "naive" and scale >= 100 else 0.5 + scale / 100, message="")
        for dtype in ("float16", "float32") for path in ("naive", "fused") for scale in (1.0, 10.0, 100.0, 1e3, 1e4)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def pixels(png) -> np.ndarray:
    return np.asarray(Image.open(png))


def test_save_gives_the_pixels_of_savefig_with_its_own_layout_pass(tmp_path):
    errors = small_errors()
    reference = io.BytesIO()
    plots.error_vs_figure(errors, "scale", "t").savefig(reference, dpi=styles.DPI, format="png")
    styles.save(plots.error_vs_figure(errors, "scale", "t"), tmp_path / "saved.png")
    assert np.array_equal(pixels(tmp_path / "saved.png"), pixels(reference))


@pytest.mark.slow
@pytest.mark.parametrize(("cores", "pays"), [(1, True), (2, True), (2, False)])
def test_the_error_plots_are_drawn_by_the_end_of_the_block(tmp_path, cores, pays):
    small_errors().to_parquet(tmp_path / "errors.parquet")
    with figures.drawn_beside(tmp_path, cores=cores, pays=pays):
        pass
    drawn = tmp_path / "plots" / "error_vs_scale_spread.png"
    expected = tmp_path / "expected.png"
    styles.save(plots.error_vs_figure(small_errors(), "scale", "family spread, 10 classes"), expected)
    assert np.array_equal(pixels(drawn), pixels(expected))


@pytest.mark.slow
def test_a_failed_drawing_process_is_an_error_with_its_message(tmp_path):
    with pytest.raises(RuntimeError, match="(?s)drawing the figures .* failed .*FileNotFoundError.*errors.parquet"):
        with figures.drawn_beside(tmp_path, cores=2):  # no errors.parquet to draw from
            pass
