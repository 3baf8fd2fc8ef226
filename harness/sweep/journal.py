"""The run's journal: one JSON line per finished cell, appended as each cell completes.

A killed run loses at most the cell in flight; `resume=true` reads the journal back and computes
only the missing cells. The tables are always built from the journal, so a resumed run writes
the same tables as an uninterrupted one. A last line torn by a kill is dropped on reopening.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from harness import losses
from harness.losses import DEFAULT

KEY_COLUMNS = ("loss", "framework", "path", "dtype", "family", "scale", "n_rows", "n_classes")  # what names a cell
# the loss options of a cell (harness.paths.options), in every table; a cell without them is a bare loss
OPTION_COLUMNS = ("reduction", "ignore_fraction", "class_weights", "label_smoothing", "z_loss", "softcap", "target")
# their values in a bare loss (harness.paths.options.CellOptions's defaults; a test keeps the two equal)
OPTION_DEFAULTS = {
    "reduction": "none",
    "ignore_fraction": 0.0,
    "class_weights": None,
    "label_smoothing": 0.0,
    "z_loss": 0.0,
    "softcap": None,
    "target": "index",
}
HEAD_COLUMNS = ("mode", "d", "reduction")  # the columns a head cell adds to the logit cells' keys


JOURNAL = "cells.jsonl"


def cell_key(row: dict) -> tuple:
    """The cell's key columns; a head cell adds its mode and reduction (harness.sweep.head_runner). A cell
    journaled before the `loss` column is one of the default loss."""
    key = tuple(row.get(k, DEFAULT) if k == "loss" else row[k] for k in KEY_COLUMNS)
    return key + tuple(row[k] for k in ("mode", *OPTION_COLUMNS, *setting_columns()) if k in row)


@functools.cache
def setting_columns() -> tuple[str, ...]:
    """The columns of every loss's own settings (harness.losses: binary cross-entropy's targets, ...)."""
    return tuple(dict.fromkeys(name for loss in losses.names() for name in losses.entry(loss).setting_names))


def read(path: Path) -> list[dict]:
    """The complete records of a journal (a torn last line is ignored)."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines(keepends=True):
        if not line.endswith("\n"):
            break  # torn by a kill mid-write
        records.append(json.loads(line))
    return records


def done_cells(run_dir: Path) -> frozenset:
    """The keys of the cells a run folder's journal holds."""
    return frozenset(cell_key(r["cell"]) for r in read(Path(run_dir) / JOURNAL))


def _drop_torn_tail(path: Path) -> None:
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        with path.open("r+b") as f:
            f.truncate(end)


class Journal:
    """Appends finished cells to run_dir/cells.jsonl, flushed line by line."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / JOURNAL
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            _drop_torn_tail(self.path)
        self.records = read(self.path)
        self.done = {cell_key(r["cell"]) for r in self.records}
        self._file = self.path.open("a")

    def append(self, record: dict) -> None:
        """Append one finished cell: {"cell": {...}} plus its "rows" and "grad" where measured."""
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        self.records.append(record)
        self.done.add(cell_key(record["cell"]))

    def close(self) -> None:
        self._file.close()
