"""The verdict table at the top of a report: per framework/path (rows) and dtype (columns), where it breaks.

An entry states the break as the measured quantities, the largest logit and the largest exact loss
at the first failing point, with the mechanism theory names there, or "never"; then the worst ulp
error while the loss was finite. A break is located by the run's bisection where its `breaks` table
has the combination ("at": within 1e-4 of the scale), else by the first failing grid scale ("by":
the break lies at or below it). Over several families, sizes or options the earliest break (the
smallest largest logit) is shown, its setting named. Everything is read from the run's tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.outputs.theory import GROUP_COLUMNS, object_strings
from harness.sweep import metrics

OK_CLASS, WARN_CLASS, BAD_CLASS, NA_CLASS = "ok", "warn", "bad", "na"
VERDICT_MARK = "<!-- verdict -->"  # the line before the Markdown table; the HTML page colours its cells
SETTING_COLUMNS = tuple(c for c in GROUP_COLUMNS if c not in ("framework", "path", "dtype", "device"))


def _num(value, digits: int = 4) -> str:
    return "-" if value is None or pd.isna(value) or not np.isfinite(value) else f"{value:.{digits}g}"


def _and(items) -> str:
    """ "a", "a and b", "a, b and c": a list in a sentence."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _plain(value):
    """A key part that compares equal across tables: NaN and None both become None."""
    return None if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA else value


@dataclass(frozen=True)
class Break:
    """Where one framework/path/dtype first fails: the largest logit and exact loss there, how located."""

    status: str
    max_logit: float
    max_exact_loss: float
    scale: float
    bisected: bool
    mechanism: str
    setting: str

    def words(self) -> str:
        """'largest logit 88.72 (loss 88.72), scale 3.162'."""
        return f"largest logit {_num(self.max_logit)} (loss {_num(self.max_exact_loss)}), scale {_num(self.scale)}"


def row_columns(errors: pd.DataFrame) -> list[str]:
    """framework, path, and mode where the run has several (the head's eager and compiled)."""
    return ["framework", "path"] + (["mode"] if "mode" in errors and errors["mode"].nunique() > 1 else [])


def row_label(key: tuple) -> str:
    return f"{key[0]}/{key[1]}" + (f" ({key[2]})" if len(key) > 2 else "")


def _varying(errors: pd.DataFrame) -> list[str]:
    return [c for c in SETTING_COLUMNS if c in errors and c != "dtype" and errors[c].astype(str).nunique() > 1]


def _setting(cell, varying: list[str]) -> str:
    words = {"n_rows": "rows", "n_classes": "classes"}
    return ", ".join(f"{cell[c]} {words[c]}" if c in words else f"{cell[c]}" for c in varying)


class BreakFinder:
    """The breaks of a run, from its errors table and (where it has them) its breaks and breakdown tables."""

    def __init__(self, errors: pd.DataFrame, breaks: pd.DataFrame | None, breakdown: pd.DataFrame | None):
        self.errors, self.varying = errors, _varying(errors)
        self.keys = [c for c in GROUP_COLUMNS if c in errors]
        self.bisected = self._index(breaks) if breaks is not None else {}
        self.theory = self._index(breakdown) if breakdown is not None else {}
        self._found: dict[tuple, Break | None] = {}

    def _index(self, frame: pd.DataFrame) -> dict:
        keys = [c for c in self.keys if c in frame]
        return {tuple(_plain(row[c]) for c in keys): row for row in frame.to_dict("records")}

    def _lookup(self, index: dict, cell) -> dict | None:
        return index.get(tuple(_plain(cell[c]) for c in self.keys)) if index else None

    def earliest(self, cells: pd.DataFrame) -> Break | None:
        """The earliest break among one framework/path/dtype's settings (None: it never fails); the verdict
        and the headlines ask for the same groups, so each answer is kept by the rows it was asked of."""
        asked = tuple(cells.index)
        if asked not in self._found:
            self._found[asked] = self._earliest(cells)
        return self._found[asked]

    def _earliest(self, cells: pd.DataFrame) -> Break | None:
        failed = np.flatnonzero(metrics.status_in(cells["status"], metrics.FAILED))
        if not failed.size:
            return None
        keys = [c for c in self.keys if c in cells]
        firsts = {}  # each setting's first failing cell along scale, in order of first appearance
        for row in failed_rows(cells, failed, keys):
            firsts.setdefault(tuple(_plain(row[c]) for c in keys), row)
        found = []
        for cell in firsts.values():
            bisected = self._lookup(self.bisected, cell)
            theory = self._lookup(self.theory, cell) or {}
            agrees = theory.get("matches_theory")
            mechanism = (theory.get("theory_cause") or "") if pd.notna(agrees) and bool(agrees) else ""
            setting = _setting(cell, self.varying)
            if bisected is not None and pd.notna(bisected.get("max_logit_hi")):
                status = bisected.get("break_status") or cell["status"]
                logit, loss, scale = bisected["max_logit_hi"], bisected["max_exact_loss_hi"], bisected["break_scale_hi"]
                found.append(Break(status, logit, loss, scale, True, mechanism, setting))
            else:
                logit, loss = cell["max_logit"], cell["max_exact_loss"]
                found.append(Break(cell["status"], logit, loss, cell["scale"], False, mechanism, setting))
        if not found:
            return None
        return min(found, key=lambda b: (np.inf if pd.isna(b.max_logit) else b.max_logit, b.scale))


BREAK_COLUMNS = ("status", "max_logit", "max_exact_loss", "scale")


def failed_rows(cells: pd.DataFrame, failed: np.ndarray, keys: list[str]) -> list[dict]:
    """The failing cells (positions `failed`) along scale (stable), as records of their keys and
    BREAK_COLUMNS: read column by column, as records of the whole frame cost milliseconds a group."""
    columns = list(dict.fromkeys([*keys, *BREAK_COLUMNS]))
    order = failed[np.argsort(cells["scale"].to_numpy()[failed], kind="stable")]
    values = [cells[c].to_numpy()[order].tolist() for c in columns]
    return [dict(zip(columns, row, strict=True)) for row in zip(*values, strict=True)]


@dataclass(frozen=True)
class Entry:
    """One verdict entry: its text and its colour class."""

    text: str
    css: str


def worst_ulp(cells: pd.DataFrame) -> float:
    """The largest max_ulp_err over the cells whose loss was finite (NaN where none has one)."""
    ulp = cells["max_ulp_err"].to_numpy(dtype=np.float64, na_value=np.nan)
    ulp = ulp[metrics.status_in(cells["status"], metrics.GOOD)]
    return float(np.nanmax(ulp)) if (~np.isnan(ulp)).any() else float("nan")


def bits_lost(ulp: float) -> float:
    """Bits lost at an error of `ulp` ulps, as the breakdown counts them (metrics.bits_lost); 0 where
    the error is missing or not finite."""
    return float(metrics.bits_lost(ulp)) if np.isfinite(ulp) and ulp > 0 else 0.0


def entry(cells: pd.DataFrame, found: Break | None, bits_lost_limit: float) -> Entry:
    statuses = set(cells["status"])
    if cells.empty:
        return Entry("", NA_CLASS)
    if statuses <= {metrics.UNSUPPORTED, metrics.INPUT_INF}:
        return Entry(metrics.UNSUPPORTED if metrics.UNSUPPORTED in statuses else "no finite input", NA_CLASS)
    ulp = worst_ulp(cells)
    error = f"{_num(ulp, 3)} ulp" if np.isfinite(ulp) else ("never finite" if np.isnan(ulp) else "> 1.8e308 ulp")
    if found is None:
        lossy = bits_lost(ulp) > bits_lost_limit
        text = f"never; {error}" + (f" ({bits_lost(ulp):.0f} bits lost)" if lossy else "")
        return Entry(text, WARN_CLASS if lossy else OK_CLASS)
    where = "at" if found.bisected else "by"
    text = f"{found.status} {where} logit {_num(found.max_logit, 3)} (loss {_num(found.max_exact_loss, 3)})"
    return Entry(text + (f", {found.mechanism}" if found.mechanism else "") + f"; {error}", BAD_CLASS)


def entry_class(text: str) -> str:
    """The colour class of an entry's text, as `entry` wrote it."""
    if text.startswith(("never;", "exact or flagged")):
        return WARN_CLASS if "bits lost)" in text else OK_CLASS
    if text.startswith("silent"):
        return WARN_CLASS
    return BAD_CLASS if text.split(" ", 1)[0] in (*metrics.FAILED, "wrong") else NA_CLASS


def verdict_entries(errors: pd.DataFrame, finder: BreakFinder, limits: dict[str, float]) -> dict:
    """{(row key, dtype): Entry} over the run; `limits` maps a dtype to k of "more than k bits lost"."""
    found = {}
    for key, cells in object_strings(errors).groupby(row_columns(errors) + ["dtype"], sort=False):
        found[key[:-1], key[-1]] = entry(cells, finder.earliest(cells), limits[key[-1]])
    return found


def verdict_markdown(errors: pd.DataFrame, finder: BreakFinder, limits: dict[str, float]) -> list[str]:
    """The verdict table as Markdown lines, marked for the HTML page's colours, with a one-line legend."""
    entries = verdict_entries(errors, finder, limits)
    dtypes = list(dict.fromkeys(errors["dtype"]))
    rows = list(dict.fromkeys(key for key, _ in entries))
    body = [[row_label(key)] + [entries.get((key, d), Entry("", NA_CLASS)).text for d in dtypes] for key in rows]
    legend = (
        'Entry: the first failure, at the largest logit (and exact loss) of the bisected break ("at") or of the '
        'first failing grid scale ("by"), with the mechanism theory names there; or never; then the worst error '
        "while the loss is finite."
    )
    header = ["framework/path", *dtypes]
    table = ["| " + " | ".join(row) + " |" for row in [header, ["---"] * len(header), *body]]
    return [VERDICT_MARK, *table, "", "<!-- legend -->", legend, ""]
