"""The head's gradient calls of a one-thread framework (MLX) in a pool of processes: the same bits
as in this process, every cell recorded, a failing call a row with a status."""

import json

import numpy as np
import pytest

from harness import api, backends
from harness.dtypes import round_to
from harness.sweep import head_gradients, head_inputs, head_runner

pytestmark = pytest.mark.skipif(bool(backends.missing_packages("mlx")), reason="mlx is not installed")


def _job(path, mode, dtype, reduction="mean", ignore=False):
    draw = head_inputs.scaled(head_inputs.draw_head(8, 50, 16, True, seed=3), 2.0)
    labels = np.where(np.arange(8) % 3 == 0, -100, draw.labels) if ignore else draw.labels
    u = round_to(head_runner.upstream_none(8), dtype)
    inputs = (*(round_to(a, dtype) for a in (draw.hidden, draw.weight, draw.bias)), labels, u)
    return head_gradients.GradientCall("mlx", path, reduction, mode, 16, ignore, dtype, "cpu", inputs)


JOBS = [
    _job(path, mode, dtype, reduction, ignore)
    for path in ("linear_fused", "linear_chunked")
    for mode in ("eager", "compiled")
    for dtype, reduction, ignore in (("float16", "mean", False), ("bfloat16", "none", True), ("float32", "sum", False))
]


@pytest.mark.slow
def test_a_pool_of_processes_gives_the_bits_of_this_process():
    pool = head_gradients.Pool()
    try:
        elsewhere = [future.result() for future in pool.run(JOBS)]
    finally:
        pool.close()
    for job, there in zip(JOBS, elsewhere, strict=True):
        here = head_gradients.call(job)
        assert [g[1] for g in there] == [g[1] for g in here] == [job.dtype] * 3
        for a, b in zip(there, here, strict=True):
            assert a[0].tobytes() == b[0].tobytes(), (job.path, job.mode, job.dtype)


def test_a_call_that_raises_is_a_row_with_its_status():
    broken = head_gradients.GradientCall(**{**vars(JOBS[0]), "path": "no_such_path"})
    pool = head_gradients.Pool()
    try:
        (future,) = pool.run([broken])
        with pytest.raises(KeyError):
            future.result()
        record = head_runner.gradient_record(future.exception(), None, None, with_bias=True)
    finally:
        pool.close()
    assert set(record) == {"h", "W", "b"}
    assert {r["status"] for r in record.values()} == {"error"}
    assert record["W"]["message"].startswith("KeyError")


def test_only_a_framework_on_one_thread_with_a_core_to_spare_uses_the_pool(monkeypatch):
    monkeypatch.setattr(head_gradients, "cores", lambda: 2)
    assert head_gradients.runs_on_one_thread(backends.load("mlx"))
    assert not head_gradients.runs_on_one_thread(backends.load("numpy"))
    monkeypatch.setattr(head_gradients, "cores", lambda: 1)
    assert not head_gradients.runs_on_one_thread(backends.load("mlx"))


def _records(sweep, pool_allowed: bool, monkeypatch) -> dict:
    monkeypatch.setattr(head_gradients, "cores", lambda: 2 if pool_allowed else 1)
    records = []
    head_runner.sweep_head(sweep, records.append)
    names = ("framework", "path", "mode", "dtype", "reduction")
    return {tuple(r["cell"][n] for n in names): r for r in records}


@pytest.mark.slow
def test_a_sweep_records_the_same_gradient_metrics_with_the_pool_or_without(monkeypatch):
    overrides = ["families=[head]", "frameworks=[mlx,numpy]", "dtypes=[bfloat16,float32]", "n_rows=8"]
    overrides += ["n_classes=50", "head.d=16", "reduction=[none,mean]", "grad.enabled=true", "mode=[eager,compiled]"]
    overrides += ["head.chunk_size=16", "head.paths=[linear_fused,linear_chunked]", "progress=false", "scales=[2]"]
    overrides += ["timing.enabled=false"]
    cfg = api.compose_config(overrides)
    sweep, _ = api.prepare(*api.settings_of(cfg))
    with_pool = _records(sweep, True, monkeypatch)
    without = _records(sweep, False, monkeypatch)
    assert with_pool.keys() == without.keys()
    assert sum(framework == "mlx" for framework, *_ in with_pool) == 2 * 2 * 2 * 2  # paths, modes, dtypes, reductions
    for key, record in with_pool.items():
        assert json.dumps(record["head_grad"], sort_keys=True) == json.dumps(without[key]["head_grad"], sort_keys=True)
        statuses = {g["status"] for g in record["head_grad"].values()}
        assert statuses == {"ok"} if key[0] == "mlx" else statuses in ({"ok"}, {"unsupported"}), key
