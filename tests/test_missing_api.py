"""A path whose library function an installed release lacks is a row with status unsupported and the reason."""

from __future__ import annotations

import numpy as np
import optax
from conftest import small_sweep

from harness import paths
from harness.paths import build
from harness.sweep import runner


def test_every_declared_function_exists_in_the_pinned_releases():
    for framework in ("numpy", "torch", "jax", "mlx", "tensorflow"):
        try:
            module = paths.implementations_module(framework)
        except ImportError:
            continue  # an optional framework that is not installed
        for path, needs in getattr(module, "NEEDS", {}).items():
            assert path in module.PATHS, (framework, path)
            assert build.missing_api(needs) == "", (framework, path)


def test_a_missing_function_names_the_release_that_lacks_it():
    assert build.missing_api(("optax.no_such_loss",)) == f"optax {optax.__version__} has no optax.no_such_loss"
    assert build.missing_api(("no_such_package.loss",)) == "no_such_package has no no_such_package.loss"
    assert build.missing_api(("scipy.special.logsumexp", "torch.nn.functional.no_such")).startswith("torch ")


def test_a_release_without_the_fused_loss_runs_it_as_unsupported(monkeypatch):
    monkeypatch.delattr(optax, "softmax_cross_entropy_with_integer_labels")
    impl = build.builtin("jax", "fused")
    reason = f"optax {optax.__version__} has no optax.softmax_cross_entropy_with_integer_labels"
    assert impl.loss is None and impl.unsupported == reason
    records = []
    sweep = small_sweep(frameworks=("jax",), paths=("fused", "log_softmax_nll"), dtypes=("float32",), scales=(1.0,))
    runner.sweep_cells(sweep, records.append)
    by_path = {r["cell"]["path"]: r["cell"] for r in records if r["cell"]["family"] == "spread"}
    assert by_path["fused"]["status"] == "unsupported" and by_path["fused"]["message"].endswith(reason)
    assert by_path["log_softmax_nll"]["status"] == "ok" and np.isfinite(by_path["log_softmax_nll"]["max_ulp_err"])
