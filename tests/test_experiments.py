"""The given-logit families and the studies built on them, through the real command line."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, run_cli

BLANCHARD = REPO.parent / "shared" / "data" / "blanchard2021" / "data_presoftmax.mat"


@pytest.mark.slow
def test_seed_article_prints_the_per_label_table(tmp_path):
    result = run_cli("experiment=seed_article", "progress=false", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    table = (tmp_path / "seed_article.md").read_text()
    assert table.strip().splitlines()[-1] in result.stdout
    # NumPy's softmax-then-log in float64: the article's numbers, next to the exact ones
    assert "| float64 | numpy/naive | 19.100000005069617 | 36.600000005069617 | 5.0696199589136649e-09 |" in table
    assert "| float64 | **exact** | 19.100000005069617 | 36.600000005069617 | 5.0696199767698928e-09 |" in table
    rows = pd.read_parquet(tmp_path / "row_errors.parquet")
    assert len(rows) == 4 * 4 * 4 * 3  # frameworks x paths x dtypes x labels
    float32 = rows[(rows["dtype"] == "float32") & (rows["label"] == 2)].set_index(["framework", "path"])
    assert (float32["computed"] == 0).all()
    # x[y] - lse(x) rounds to -0 (as PyTorch prints, tensor([19.1000, 36.6000, -0.0000])), except where
    # the loss is formed as logsumexp(x) - x[y] = 31.4 - 31.4 = +0: SciPy's, optax's and MLX's fused losses
    positive = {("numpy", "fused"), ("jax", "fused"), ("mlx", "fused")}
    assert {fp for fp, v in float32["computed"].items() if not np.signbit(v)} == positive
    assert "| float32 | torch/fused | 19.099998474121094 | 36.599998474121094 | -0 |" in table


def test_seed_article_without_row_errors_is_refused_before_any_work(tmp_path, refused):
    code, _, stderr = refused(
        "experiment=seed_article", "row_errors=false", f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path
    )
    assert code == 2
    assert stderr.strip() == (
        "error: experiment seed_article needs row_errors=true (its summary is built from it), got row_errors=false"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_seed_article_with_several_scales_tabulates_each(tmp_path):
    result = run_cli(
        "experiment=seed_article",
        "scales=[1,2]",
        "frameworks=[numpy]",
        "dtypes=[float64]",
        "paths=[naive]",
        "progress=false",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr
    table = (tmp_path / "seed_article.md").read_text()
    # scale 2: logits [24.6, -10.4, 62.8]; the exact third loss is log1p(exp(-38.2) + exp(-73.2)) = 2.5700e-17
    assert "| float64 x1 | **exact** | 19.100000005069617 |" in table
    assert "| float64 x2 | **exact** | 38.199999999999996 | 73.200000000000003 | 2.57010455484" in table


@pytest.mark.slow
def test_file_family_reads_npz_with_settings(tmp_path):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((5, 7)) * 3
    labels = rng.integers(1, 8, 5)  # 1-based, classes along axis 0 in the file
    np.savez(tmp_path / "logits.npz", scores=logits.T, target=labels)
    out = tmp_path / "run"
    result = run_cli(
        "experiment=precision_sweep",
        "timing.enabled=false",
        "families=[file]",
        f"file.path={tmp_path / 'logits.npz'}",
        "file.logits_key=scores",
        "file.labels_key=target",
        "file.class_axis=0",
        "file.label_base=1",
        "scales=[1,100]",
        "frameworks=[numpy]",
        "progress=false",
        f"hydra.run.dir={out}",
    )
    assert result.returncode == 0, result.stderr
    errors = pd.read_parquet(out / "errors.parquet")
    assert set(zip(errors["n_rows"], errors["n_classes"], strict=True)) == {(5, 7)}
    assert (out / "plots" / "error_vs_scale_file.png").is_file()


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        (["file.path=/nonexistent/logits.npy"], "logits file not found: /nonexistent/logits.npy"),
        ([], "family 'file' needs file.path="),
    ],
)
def test_file_family_bad_settings_fail_in_one_line(tmp_path, refused, settings, words):
    code, _, stderr = refused(
        "experiment=precision_sweep", "families=[file]", *settings, f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path
    )
    assert code == 2
    assert stderr.strip().splitlines() == [f"error: {stderr.strip()[7:]}"]
    assert words in stderr and not (tmp_path / "r").exists()


def test_a_pickled_file_is_refused(tmp_path, refused):
    np.save(tmp_path / "evil.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    code, _, stderr = refused(
        "experiment=precision_sweep",
        "timing.enabled=false",
        "families=[file]",
        f"file.path={tmp_path / 'evil.npy'}",
        f"hydra.run.dir={tmp_path / 'r'}",
        cwd=tmp_path,
    )
    assert code == 2 and "needs pickle" in stderr


@pytest.mark.slow
@pytest.mark.skipif(not BLANCHARD.is_file(), reason=f"Blanchard et al. (2021) data absent: {BLANCHARD}")
def test_blanchard2021_mnist(tmp_path):
    result = run_cli(
        "experiment=blanchard2021_mnist",
        f"file.path={BLANCHARD}",
        "frameworks=[numpy,torch]",
        "dtypes=[float16,float32]",
        "scales=[1]",
        "progress=false",
        f"hydra.run.dir={tmp_path}",
        cwd=Path(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    errors = pd.read_parquet(tmp_path / "errors.parquet")
    assert set(errors["n_rows"]) == {2500} and set(errors["n_classes"]) == {10}
    table = pd.read_parquet(tmp_path / "error_distribution.parquet")
    assert set(table["n_rows"]) == {2500}
    # the largest logit is 19.7 > ln(65504) = 11.09: float16's naive path overflows on some rows, float32's never
    naive = table[table["path"] == "naive"]
    assert (naive.loc[naive["dtype"] == "float16", "n_nonfinite"] > 0).all()
    assert (naive.loc[naive["dtype"] == "float32", "n_nonfinite"] == 0).all()
    stable = table[table["path"].isin(["log_softmax_nll", "fused"])]
    assert (stable["n_nonfinite"] == 0).all()
    assert (tmp_path / "plots" / "ulp_error_distribution_scale1.png").is_file()
