"""TensorFlow through the real command line: accuracy, timing and the breakdown, on a tiny grid."""

import pandas as pd
import pytest
from conftest import run_cli

from harness import backends

pytestmark = [
    pytest.mark.cli,
    pytest.mark.skipif(bool(backends.missing_packages("tensorflow")), reason="tensorflow not installed"),
]

GRID = ["experiment=precision_sweep", "frameworks=[tensorflow]", "paths=[naive,fused]", "dtypes=[float16,float32]"]
GRID += ["families=[spread]", "scales=[1,1000]", "n_rows=4", "n_classes=20", "progress=false"]
GRID += ["timing.budget_s=0.01", "timing.min_blocks=2", "timing.threads=1"]


@pytest.mark.slow
def test_tensorflow_is_timed_and_broken_down(tmp_path):
    result = run_cli(*GRID, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    timings = pd.read_parquet(tmp_path / "timings.parquet")
    assert set(timings["framework"]) == {"tensorflow"} and set(timings["path"]) == {"naive", "fused"}
    assert (timings["status"] == "ok").all(), timings["message"].tolist()
    assert (timings["median_s"] > 0).all() and (timings["compile_s"] > 0).all()  # tf.function traces first
    # its pools were sized before TensorFlow's first op, so 1 thread was in force, and the rows say 1
    assert (timings["threads"] == 1).all() and (timings["message"] == "").all()
    breakdown = pd.read_parquet(tmp_path / "breakdown.parquet")
    assert set(breakdown["framework"]) == {"tensorflow"} and set(breakdown["path"]) >= {"naive", "fused"}
    assert (breakdown["n_scales"] == 2).all() and (breakdown["n_unsupported"] == 0).all()
    row = breakdown.set_index(["path", "dtype"])
    assert row.loc[("naive", "float16"), "first_fail_scale"] == 1000  # exp overflows past ln 65504 = 11.1
    assert pd.isna(row.loc[("fused", "float32"), "first_fail_scale"])  # the fused kernel does not break
    assert row.loc[("naive", "float16"), "flushes_subnormals"] == backends.load("tensorflow").flushes_subnormals(
        "float16"
    )
