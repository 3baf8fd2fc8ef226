"""Theory's side of the breakdown for a loss measured on named arrays (binary cross-entropy, KL divergence).

The loss's theory module (its entry's `theory_at`) states, per framework, path and dtype, at the facts its
backend measured, where each failure mechanism sets in: `limits(framework, path, dtype, facts)` returns
`Limit`s, each a threshold on one of the loss's quantities (harness.losses: max_logit, min_logit, the
smallest log-probabilities) passed upward (sense +1) or downward (-1). The measured break is the
bisection's bracket (harness.sweep.named_bisect), else the grid's; theory agrees when a threshold lies
within 1% of the quantity there and none was passed before it. The columns are cross-entropy's
(harness.outputs.breakdown), so that the verdict, headlines and report read them alike.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness import losses
from harness.losses.limits import TOLERANCE, Limit, g
from harness.outputs.theory import NO_BREAK, unmatched


def group_facts(cells: pd.DataFrame) -> dict:
    """What the backend measured in this group (exp_overflow, exp_underflow, quotient_flushes,
    flushes_subnormals), and its size (n_rows, n_classes)."""
    first = cells.iloc[0]
    return {
        name: first[name]
        for name in ("exp_overflow", "exp_underflow", "quotient_flushes", "flushes_subnormals", "n_rows", "n_classes")
        if name in cells and not pd.isna(first[name])
    }


def _ends(cells: pd.DataFrame, entry, index: int | None, bisected) -> tuple[float, float, dict, dict, str]:
    """(scale_lo, scale_hi, quantities at lo, at hi, how located) of the first failure at grid `index`."""
    nothing = {q: np.nan for q in entry.quantities}
    if index is None:
        note = str(bisected["bisection"]) if bisected is not None else "grid only: no breaks table"
        return np.nan, np.nan, nothing, nothing, note
    if bisected is not None and np.isfinite(bisected["break_scale_lo"]) and np.isfinite(bisected["break_scale_hi"]):
        lo = {q: float(bisected.get(f"{q}_lo", np.nan)) for q in entry.quantities}
        hi = {q: float(bisected.get(f"{q}_hi", np.nan)) for q in entry.quantities}
        return float(bisected["break_scale_lo"]), float(bisected["break_scale_hi"]), lo, hi, str(bisected["bisection"])

    def at(i):
        return {q: float(cells[q].iloc[i]) if i is not None and q in cells else np.nan for q in entry.quantities}

    before = index - 1 if index > 0 else None
    scales = cells["scale"].to_numpy(dtype=np.float64)
    note = str(bisected["bisection"]) if bisected is not None else "grid only: no breaks table"
    return (scales[before] if before is not None else np.nan), scales[index], at(before), at(index), note


def _passed_before(limit: Limit, lo: float) -> bool:
    """Whether the quantity was already more than 1% past the threshold at the last good scale."""
    if not np.isfinite(lo) or (limit.upper is not None and np.isinf(limit.upper)):
        return False  # an open range is never passed before: anywhere beyond its start agrees
    far = limit.upper if limit.upper is not None and limit.sense > 0 else limit.threshold  # a range's far end
    return bool(limit.sense * (lo - far) > TOLERANCE * abs(far))


def _crossing(cells: pd.DataFrame, limit: Limit) -> int | None:
    """The first grid index whose quantity passes the threshold."""
    if limit.quantity not in cells:
        return None
    values = cells[limit.quantity].to_numpy(dtype=np.float64)
    passed = np.flatnonzero(limit.sense * (values - limit.threshold) >= 0)
    return int(passed[0]) if passed.size else None


def theory_columns(cells: pd.DataFrame, framework: str, path: str, dtype: str, index: int | None, bisected) -> dict:
    """theory_* columns, the measured break, matches_theory and explanation of one group (its cells by scale)."""
    entry = losses.entry(str(cells["loss"].iloc[0]))
    scale_lo, scale_hi, lo, hi, note = _ends(cells, entry, index, bisected)
    columns = unmatched(note, scale_lo, scale_hi)
    status = cells["status"]
    if status.isin(("unsupported", "input_inf")).all():
        message = str(cells["message"].iloc[0]) if "message" in cells else ""
        return columns | {"explanation": f"unsupported: {message}" if (status == "unsupported").any() else ""}
    facts = group_facts(cells) | ({"accumulation": str(bisected["accumulation"])} if bisected is not None else {})
    limits = entry.load("theory").limits(framework, path, dtype, facts)
    limits = [limit for limit in limits if limit.quantity in lo]
    crossings = {limit: _crossing(cells, limit) for limit in limits}
    predicted = [limit for limit in limits if crossings[limit] is not None]
    earliest = min(predicted, key=lambda limit: crossings[limit]) if predicted else None
    if index is None:
        agrees = earliest is None
        shown = earliest
        why = "neither theory nor measurement breaks within the grid" if agrees else "theory breaks; the path does not"
        fitting, early = [], []
    else:
        fitting = [limit for limit in limits if limit.fits(lo[limit.quantity], hi[limit.quantity])]
        early = [limit for limit in limits if _passed_before(limit, lo[limit.quantity])]
        agrees = bool(fitting) and not early
        shown = fitting[0] if fitting else earliest
        why = ""
    if shown is not None:
        columns |= {"theory_quantity": shown.quantity, "theory_threshold": shown.threshold}
        columns |= {"break_quantity_lo": lo[shown.quantity], "break_quantity_hi": hi[shown.quantity]}
        if crossings.get(shown) is not None:
            columns["theory_scale"] = cells["scale"].iloc[crossings[shown]]
        if index is not None and shown.quantity in cells:
            columns["quantity_at_fail"] = float(cells[shown.quantity].iloc[index])
            columns["quantity_before_fail"] = float(cells[shown.quantity].iloc[index - 1]) if index > 0 else np.nan
            if crossings.get(shown) is not None:
                columns["grid_steps_off"] = index - crossings[shown]
    if index is not None:
        why = _explain(entry, cells, index, limits, fitting, early, lo, hi, scale_lo, scale_hi)
    cause = (fitting[0] if fitting else earliest) if index is not None else earliest
    return columns | {
        "theory_cause": cause.cause if cause is not None else NO_BREAK,
        "matches_theory": agrees,
        "explanation": why,
    }


def _explain(entry, cells, index, limits, fitting, early, lo, hi, scale_lo, scale_hi) -> str:
    status = cells["status"].iloc[index]
    where = f"broke ({status}) at scale {g(scale_hi)} (not yet at {g(scale_lo)})"
    if fitting and not early:
        limit = fitting[0]
        within = "within 1% of" if limit.upper is None else "within"
        span = f"{g(lo[limit.quantity])} to {g(hi[limit.quantity])}"
        return f"{where}, where {limit.quantity} is {span}: {within} {limit.words()}"
    if early:
        passed = "; ".join(limit.words() for limit in early)
        return f"{where}; theory's threshold was passed before the break: {passed}"
    if not limits:
        known = ", ".join(f"{q} {g(lo[q])} to {g(hi[q])}" for q in entry.quantities if np.isfinite(hi[q]))
        return f"{where}, where {known}; theory states no failure threshold for this path here"
    stated = "; ".join(limit.words() for limit in limits)
    found = ", ".join(f"{limit.quantity} {g(lo[limit.quantity])} to {g(hi[limit.quantity])}" for limit in limits)
    return f"{where}, where {found}; none of theory's thresholds lies within 1% ({stated})"
