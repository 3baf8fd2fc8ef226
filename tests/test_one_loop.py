"""The one per-input loop (harness.sweep.calls.measure_input) walks any kind of input the same way:
cells already done are skipped, an input that overflows its dtype gives input_inf rows without
any exact value, a transfer that raises gives a row per cell of that framework, and every other
cell is measured. Here on a kind of input written for the test, and on the grid's plain input."""

from __future__ import annotations

import numpy as np

from harness.dtypes import DTYPES
from harness.paths import build
from harness.sweep import metrics, runner
from harness.sweep.calls import measure_input

CELLS = (("numpy", "a"), ("numpy", "b"))


class Counted:
    """A kind of input with two cells on NumPy that counts what the loop asked of it."""

    device = "cpu"

    def __init__(self, finite=True, transfer_error=None):
        self.finite, self.transfer_error, self.asked = finite, transfer_error, []

    def todo(self, cell, done):
        return {names: None for names in CELLS if (cell["dtype"], *names) not in done}

    def prepare(self, logits, shared):
        self.asked.append("prepare")
        return {"max_logit": float(np.max(logits))}, self.finite

    def input_inf(self, cell, todo, record):
        for _, path in todo:
            record({"cell": cell | {"path": path, "status": metrics.INPUT_INF}})

    def quantities(self):
        self.asked.append("quantities")
        return {"max_exact_loss": 2.0}

    def transfer(self, backend, on):
        if self.transfer_error is not None:
            raise self.transfer_error
        return f"on {on}"

    def failed(self, record, cell, place, cells, exc):
        for _, path in cells:
            record({"cell": cell | {"path": path, "framework": place.framework} | metrics.failure(exc)})

    def measure(self, place, native, cells, cell):
        for _, path in cells:
            yield {"cell": cell | {"path": path, "framework": place.framework, "native": native, "status": "ok"}}


def run(variant, done=frozenset(), logits=(1.0, 3.0)) -> tuple[int, list[dict]]:
    rows: list[dict] = []
    ran = measure_input(np.array([logits]), "float64", {"family": "test"}, rows.append, done, variant)
    return ran, [r["cell"] for r in rows]


def test_every_cell_not_done_is_measured_with_the_inputs_quantities():
    ran, rows = run(Counted(), done={("float64", "numpy", "a")})
    assert ran == 1
    assert rows == [
        {"family": "test", "dtype": "float64", "max_exact_loss": 2.0}
        | {"path": "b", "framework": "numpy", "native": "on cpu", "status": "ok"}
    ]


def test_nothing_is_prepared_when_every_cell_is_done():
    variant = Counted()
    assert run(variant, done={("float64", *names) for names in CELLS}) == (0, [])
    assert variant.asked == []


def test_an_overflowing_input_gives_input_inf_rows_and_no_exact_values():
    variant = Counted(finite=False)
    ran, rows = run(variant)
    assert ran == 2 and variant.asked == ["prepare"]
    assert [(r["path"], r["status"], r["max_logit"]) for r in rows] == [
        ("a", "input_inf", 3.0),
        ("b", "input_inf", 3.0),
    ]


def test_a_transfer_that_raises_is_a_row_per_cell():
    ran, rows = run(Counted(transfer_error=MemoryError("no room on the device")))
    assert ran == 2
    assert [(r["path"], r["status"], r["message"]) for r in rows] == [
        ("a", metrics.ERROR, "MemoryError: no room on the device"),
        ("b", metrics.ERROR, "MemoryError: no room on the device"),
    ]


def test_the_grids_plain_input_measures_ln_2_by_hand():
    """Logits [0, 0] with label 0: the loss is ln 2, and NumPy's naive path rounds it correctly."""
    implementations = build.implementations(("numpy",), ("naive",), {}, None, None)
    variant = runner.PlainInput(implementations, np.array([0]), DTYPES["float64"], "cpu")
    rows: list[dict] = []
    key = {"family": "test", "scale": 1.0, "n_rows": 1, "n_classes": 2}
    ran = measure_input(np.array([[0.0, 0.0]]), "float64", key, rows.append, frozenset(), variant)
    (cell,) = [r["cell"] for r in rows]
    assert ran == 1 and cell["path"] == "naive" and cell["framework"] == "numpy"
    assert cell["max_exact_loss"] == np.log(2.0) and cell["max_logit"] == 0.0
    assert cell["status"] == "ok" and cell["max_ulp_err"] < 0.5  # ln 2 correctly rounded (0.21 units off)
