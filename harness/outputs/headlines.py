"""The report's headline findings: at most eight sentences, ranked by what a practitioner should do differently.

First which path to use and why; then where each failing path breaks (earliest first), stated as the
largest logit and exact loss there; then accuracy lost silently (no failure, more bits lost than the
run's limit); then the gradient, the loss options, what could not run and how theory fared. Each
sentence carries its numbers, all read from the run's tables (harness.outputs.verdict locates the breaks).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.outputs.theory import object_strings
from harness.outputs.verdict import BreakFinder, _and, _num, bits_lost, row_columns, row_label, worst_ulp
from harness.sweep import metrics
from harness.sweep.journal import OPTION_COLUMNS, OPTION_DEFAULTS

MAX_HEADLINES = 8


class PathStats:
    """Per path: its breaks in each dtype (per framework), its worst error, its largest logit, its peak memory."""

    def __init__(self, path: str, cells: pd.DataFrame, finder: BreakFinder, limits: dict, timings=None):
        self.path, self.breaks, self.worst, self.excess = path, {}, (float("nan"), ""), 0.0
        self.lossiest = (0.0, "")  # most bits lost beyond the limit, and where
        for key, of_row in cells.groupby(row_columns(cells) + ["dtype"], sort=False):
            dtype, found = key[-1], finder.earliest(of_row)
            if found is not None:
                self.breaks.setdefault(dtype, []).append((found, row_label(key[:-1])))
            ulp = worst_ulp(of_row)
            if np.isfinite(ulp) and not ulp <= self.worst[0]:
                self.worst = (ulp, f"{row_label(key[:-1])} {dtype}")
            if bits_lost(ulp) - limits[dtype] > self.excess:
                self.excess, self.lossiest = bits_lost(ulp) - limits[dtype], (bits_lost(ulp), f"{dtype} ({key[0]})")
        status = cells["status"]
        ran = ~metrics.status_in(status, (metrics.INPUT_INF, metrics.UNSUPPORTED))
        self.failed = (int((ran & metrics.status_in(status, metrics.FAILED)).sum()), int(ran.sum()))  # failing, run
        logits = cells["max_logit"].to_numpy(dtype=np.float64, na_value=np.nan)
        finite = logits[~metrics.status_in(status, (metrics.INPUT_INF,))]
        self.reach = float(np.nanmax(finite)) if (~np.isnan(finite)).any() else float("nan")
        self.peak = float("nan")
        if timings is not None and "peak_bytes" in timings:
            self.peak = float(timings.loc[timings["path"] == path, "peak_bytes"].max())

    @property
    def fails(self) -> bool:
        return bool(self.breaks)

    def first(self, dtype: str):
        """(Break, framework/path) of the smallest largest logit at a break in dtype."""
        return min(self.breaks[dtype], key=lambda b: b[0].max_logit)

    def earliest(self):
        """(Break, framework/path, dtype) of the smallest largest logit at a break in any dtype."""
        dtype = min(self.breaks, key=lambda d: self.first(d)[0].max_logit)
        return (*self.first(dtype), dtype)

    def rank(self) -> tuple:
        held = -self.earliest()[0].max_logit if self.fails else 0.0
        peak, worst = np.nan_to_num(self.peak, nan=0.0), np.nan_to_num(self.worst[0])
        return (self.fails, held, round(self.excess, 1), peak, worst)

    def worst_words(self) -> str:
        return f"{_num(self.worst[0], 3)} ulp, in {self.worst[1]}"


def path_stats(errors: pd.DataFrame, finder: BreakFinder, limits: dict, timings=None) -> list[PathStats]:
    by_path = object_strings(errors).groupby("path", sort=False)
    stats = [PathStats(p, c, finder, limits, timings) for p, c in by_path]
    return sorted(stats, key=PathStats.rank)


def _memory(stats: PathStats) -> str:
    return f", peak memory {stats.peak / 2**20:.3g} MiB" if np.isfinite(stats.peak) else ""


def recommendation(stats: list[PathStats]) -> str:
    """'Use P: ...' with the reason, from the paths ranked (never failing, then accuracy, then memory);
    where every path fails somewhere, the one failing in the smallest share of its cells."""
    if all(s.fails for s in stats) and len(stats) > 1:
        return no_path_holds(stats)
    best, others = stats[0], stats[1:]
    if not best.fails:
        scope = "in any framework or dtype measured" if len(stats) > 1 else "(the only path measured)"
        reason = (
            f"it never fails {scope}, up to largest logit {_num(best.reach, 3)}, and its worst error while "
            f"finite is {best.worst_words()}{_memory(best)}"
        )
        if best.excess > 0:
            reason += f", though it too loses {best.lossiest[0]:.0f} bits in {best.lossiest[1]}"
    else:
        found, who, dtype = best.earliest()
        reason = f"it holds longest, failing first at largest logit {_num(found.max_logit, 3)} ({dtype}, {who})"
    as_good = [o for o in others if not o.fails and o.excess <= 0]
    lossy = [o for o in others if not o.fails and o.excess > 0]
    failing = [o for o in others if o.fails]
    contrasts = []
    if as_good:
        worst = ", ".join(f"{_num(o.worst[0], 3)} ulp{_memory(o)}" for o in as_good)
        contrasts.append(f"{_and(o.path for o in as_good)} {_verb(as_good, 'never fails')} either (worst {worst})")
    if lossy:
        bits = _and(f"{o.lossiest[0]:.0f} bits in {o.lossiest[1]}" for o in lossy)
        contrasts.append(
            f"{_and(o.path for o in lossy)} {_verb(lossy, 'never fails')} but {_verb(lossy, 'loses')} {bits}"
        )
    if failing:
        where = _and(f"{_num(o.earliest()[0].max_logit, 3)} ({o.earliest()[2]})" for o in failing)
        contrasts.append(f"{_and(o.path for o in failing)} {_verb(failing, 'fails')} from largest logit {where}")
    tail = f"; {'; '.join(contrasts)}" if contrasts else ""
    return f"Use {best.path}: {reason}{tail}."


def no_path_holds(stats: list[PathStats]) -> str:
    """Every path fails somewhere: which fails in the smallest share of its cells, which keeps the
    smallest worst error while finite (one sentence, no single path to use)."""
    fewest = min(stats, key=lambda s: (s.failed[0] / max(1, s.failed[1]), s.rank()))
    accurate = min(stats, key=lambda s: (np.nan_to_num(s.worst[0], nan=np.inf), s.rank()))
    found, who, dtype = fewest.earliest()
    text = (
        f"No path holds everywhere: each fails somewhere, {fewest.path} in the fewest cells "
        f"({fewest.failed[0]} of {fewest.failed[1]}; first at largest logit {_num(found.max_logit, 3)}, {dtype}, {who})"
    )
    return text + f", {accurate.path} with the smallest worst error while finite ({accurate.worst_words()})."


def _verb(subjects: list, singular: str) -> str:
    """'never fails' -> 'never fail' for several subjects."""
    return singular if len(subjects) == 1 else singular.replace("fails", "fail").replace("loses", "lose")


def break_sentence(stats: PathStats, dtypes: list[str]) -> str:
    """'naive fails (inf) by target underflow at largest logit 8.42 (loss 17.3) in float16, ...'."""
    groups = {}
    for dtype in [d for d in dtypes if d in stats.breaks]:
        found, who = stats.first(dtype)
        spread = max(b.max_logit for b, _ in stats.breaks[dtype])
        framework = who.split("/", 1)[0]
        first = f"; {framework} first, others to {_num(spread, 3)}" if spread > 1.01 * found.max_logit else ""
        where = f"; {found.setting}" if found.setting else ""
        part = f"{_num(found.max_logit, 3)} (loss {_num(found.max_exact_loss, 3)}{where}{first}) in {dtype}"
        groups.setdefault((found.status, found.mechanism), []).append(part)
    said = []
    for (status, mechanism), parts in groups.items():
        how = f" by {mechanism}" if mechanism else ""
        said.append(f"{status}{how} at largest logit {_and(parts)}")
    return f"{stats.path} fails: {'; '.join(said)}."


def worst_by_row(errors: pd.DataFrame) -> dict[tuple, tuple[float, bool]]:
    """(worst ulp error while finite, whether it fails) per framework/path row and dtype, in the
    order the rows come: grouped once, for every sentence that compares them."""
    found = {}
    for key, cells in object_strings(errors).groupby(row_columns(errors) + ["dtype"], sort=False):
        found[key] = (worst_ulp(cells), bool(metrics.status_in(cells["status"], metrics.FAILED).any()))
    return found


def silent_sentences(errors: pd.DataFrame, limits: dict, most: int = 2) -> list[str]:
    """The never-failing combinations that lose more bits than the limit, worst first, alike ones merged."""
    rows = worst_by_row(errors)
    lossy = {}
    for key, (ulp, fails) in rows.items():
        if not fails and bits_lost(ulp) > limits[key[-1]]:
            lossy.setdefault((key[-1], float(f"{ulp:.3g}")), []).append(row_label(key[:-1]))
    worst_first = sorted(lossy.items(), key=lambda item: -(bits_lost(item[0][1]) - limits[item[0][0]]))
    sentences = []
    for (dtype, ulp), who in worst_first[:most]:
        named = _and(who) if len(who) <= 3 else f"{len(who)} framework/paths ({_and(who[:2] + ['others'])})"
        others = (worst for key, (worst, _) in rows.items() if key[-1] == dtype and row_label(key[:-1]) not in who)
        best = min(others, default=np.nan)
        reached = np.isfinite(best) and bits_lost(best) <= limits[dtype]
        than = f", where another framework/path keeps within {_num(best, 3)} ulp" if reached else ""
        sentences.append(
            f"{named} {'loses' if len(who) == 1 else 'lose'} {bits_lost(ulp):.0f} bits in {dtype} without failing "
            f"(worst error {_num(ulp, 3)} ulp; more than {limits[dtype]:.3g} bits counts as lost){than}."
        )
    return sentences


def gradient_sentence(grad_errors: pd.DataFrame, finder: BreakFinder, limits: dict) -> str:
    """Where each path's gradient fails, and the worst relative error of the others' (max_row_rel_err)."""
    stats = path_stats(grad_errors, finder, limits)
    failing = [s for s in stats if s.fails]
    parts = [f"{s.path}'s from largest logit {_num(s.earliest()[0].max_logit, 3)} ({s.earliest()[2]})" for s in failing]
    steady = [s.path for s in stats if not s.fails]
    good = grad_errors[grad_errors["status"].isin(metrics.GOOD) & grad_errors["path"].isin(steady)]
    column = "max_row_rel_err" if "max_row_rel_err" in good else "max_ulp_err"
    worst = ""
    if good[column].notna().any():
        row = good.loc[good[column].idxmax()]
        worst = f" (worst {column} {_num(row[column], 3)}, {row['framework']}/{row['path']} {row['dtype']})"
    if not failing:
        return f"The gradient never fails{worst}."
    tail = f"; that of {_and(steady)} never{worst}" if steady else ""
    return f"The gradient fails: {'; '.join(parts)}{tail}."


def option_sentence(errors: pd.DataFrame) -> str:
    """The option set with the largest loss error, where the run varies the options."""
    columns = [c for c in OPTION_COLUMNS if c in errors and errors[c].astype(str).nunique() > 1]
    if not columns:
        return ""
    good = errors[errors["status"].isin(metrics.GOOD) & errors["max_ulp_err"].notna()]
    if good.empty:
        return ""
    worst = good.loc[good["max_ulp_err"].idxmax()]
    changed = [f"{c}={worst[c]}" for c in columns if pd.notna(worst[c]) and worst[c] != OPTION_DEFAULTS.get(c)]
    plain = good[np.logical_and.reduce([good[c].astype(str) == str(OPTION_DEFAULTS.get(c)) for c in columns])]
    base = f"; {_num(plain['max_ulp_err'].max(), 3)} ulp with the defaults" if not plain.empty else ""
    return (
        f"Of the loss options, {', '.join(changed) or 'the defaults'} gives the largest loss error: "
        f"{_num(worst['max_ulp_err'], 3)} ulp ({worst['framework']}/{worst['path']}, {worst['dtype']}){base}."
    )


def unsupported_sentence(errors: pd.DataFrame) -> str:
    cells = errors[errors["status"] == metrics.UNSUPPORTED]
    if cells.empty:
        return ""
    combos = list(dict.fromkeys(cells["framework"] + "/" + cells["path"] + " " + cells["dtype"]))
    named = _and(combos[:3] + ([f"{len(combos) - 3} more"] if len(combos) > 3 else []))
    return f"{len(combos)} framework/path/dtype combinations cannot run some cells (unsupported): {named}."


def theory_sentence(breakdown: pd.DataFrame | None) -> str:
    if breakdown is None or breakdown.empty:
        return ""
    failing = breakdown[breakdown["first_fail_scale"].notna()]
    checked = failing[failing["matches_theory"].notna()]
    if checked.empty:
        return ""
    agree = int(checked["matches_theory"].astype(bool).sum())
    return f"{agree} of the {len(checked)} breaks theory can check lie within 1% of its predicted threshold."


def headline_findings(
    errors: pd.DataFrame,
    finder: BreakFinder,
    limits: dict,
    breakdown: pd.DataFrame | None = None,
    grad: tuple[pd.DataFrame, BreakFinder] | None = None,
    timings: pd.DataFrame | None = None,
) -> list[str]:
    """At most MAX_HEADLINES sentences, in the order a practitioner acts on them."""
    stats = path_stats(errors, finder, limits, timings)
    dtypes = list(dict.fromkeys(errors["dtype"]))
    sentences = [recommendation(stats)]
    failing = sorted((s for s in stats if s.fails), key=lambda s: s.earliest()[0].max_logit)[:3]
    sentences += [break_sentence(s, dtypes) for s in failing]
    sentences += silent_sentences(errors, limits)
    if grad is not None and not grad[0].empty:
        sentences.append(gradient_sentence(grad[0], grad[1], limits))
    sentences += [option_sentence(errors), unsupported_sentence(errors), theory_sentence(breakdown)]
    return [s for s in sentences if s][:MAX_HEADLINES]
