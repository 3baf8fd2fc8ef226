"""Findings per loss option, written from the errors table alone: a report section for each option
the run swept beyond its default (reduction, ignore_fraction, class_weights, label_smoothing, z_loss,
softcap, target).

For each value off the default it says how many cells ran, which broke (inf, nan, error) where the
same cell with the option at its default did not, the worst error per dtype among the cells that
did not break (e.g. how far a bfloat16 mean over the rows drifts from the exact mean), and why
cells were unsupported or undefined.
"""

from __future__ import annotations

import pandas as pd

from harness.outputs.findings import _g
from harness.sweep import metrics
from harness.sweep.journal import KEY_COLUMNS, OPTION_COLUMNS, OPTION_DEFAULTS

MAX_NAMED = 3  # cells named per sentence; the table has the rest


def _is(series: pd.Series, value) -> pd.Series:
    return series.isna() if value is None else series == value


def _where(row) -> str:
    return f"{row['framework']}/{row['path']} {row['dtype']} ({row['family']}, scale {_g(row['scale'])})"


def _newly_broken(errors: pd.DataFrame, option: str, value) -> pd.DataFrame:
    """Cells with option=value that broke where the same cell at the option's default did not."""
    others = [c for c in KEY_COLUMNS + OPTION_COLUMNS if c in errors and c != option]
    with_it = errors[_is(errors[option], value)]
    without = errors[_is(errors[option], OPTION_DEFAULTS[option])]
    healthy = set(_keys(without[~without["status"].isin(metrics.FAILED)], others))
    broke = with_it[with_it["status"].isin(metrics.FAILED)]
    return broke[[k in healthy for k in _keys(broke, others)]]


def _keys(frame: pd.DataFrame, columns: list[str]) -> list[tuple]:
    """Each row's values as strings (None and NaN compare equal to themselves)."""
    return [tuple(str(v) for v in row) for row in frame[columns].itertuples(index=False)]


def _worst_per_dtype(cells: pd.DataFrame) -> str:
    good = cells[cells["status"].isin(metrics.GOOD) & cells["max_rel_err"].notna()]
    parts = []
    for dtype, of_dtype in good.groupby("dtype", sort=False):
        worst = of_dtype.loc[of_dtype["max_rel_err"].idxmax()]
        parts.append(
            f"{dtype} {_g(worst['max_rel_err'])} relative ({_g(worst['max_ulp_err'])} ulp, "
            f"{worst['framework']}/{worst['path']}, {worst['family']} scale {_g(worst['scale'])})"
        )
    return "; ".join(parts)


def value_findings(errors: pd.DataFrame, option: str, value) -> list[str]:
    """Sentences on the cells with option=value."""
    cells = errors[_is(errors[option], value)]
    label = f"{option}={'null' if value is None else value}"
    sentences = []
    worst = _worst_per_dtype(cells)
    if worst:
        sentences.append(f"{label} ({len(cells)} cells): worst error against the exact value by dtype: {worst}.")
    broke = _newly_broken(errors, option, value)
    if not broke.empty:
        named = ", ".join(f"{_where(r)}: {r['status']}" for _, r in broke.head(MAX_NAMED).iterrows())
        more = f" and {len(broke) - MAX_NAMED} more" if len(broke) > MAX_NAMED else ""
        sentences.append(f"{label} breaks {len(broke)} cells that are fine without it: {named}{more}.")
    for status in (metrics.UNSUPPORTED, metrics.UNDEFINED):
        of_status = cells[cells["status"] == status]
        if not of_status.empty:
            reasons = "; ".join(sorted(set(of_status["message"].str.replace("NotImplementedError: ", ""))))[:400]
            sentences.append(f"{label}: {len(of_status)} cells {status} ({reasons}).")
    return sentences


def option_sections(errors: pd.DataFrame) -> list[str]:
    """Markdown lines: a section per option swept beyond its default (none for a run without options)."""
    lines = []
    for option in OPTION_COLUMNS:
        if option not in errors:
            continue
        default = OPTION_DEFAULTS[option]
        values = [v for v in errors[option].drop_duplicates() if not _is(pd.Series([v]), default).iloc[0]]
        sentences = [s for value in values for s in value_findings(errors, option, value)]
        if sentences:
            lines += [f"## Option {option}", "", *[f"- {sentence}" for sentence in sentences], ""]
    return lines
