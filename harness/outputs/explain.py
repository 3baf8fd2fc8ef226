"""Explanations of the breakdown: the measured facts (subnormals flushed, the dtype a path accumulates
in) that put a threshold at a measured break, in words generated from the numbers."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.dtypes import DTYPES
from harness.mechanisms import (
    EXP_OVERFLOW,
    OTHER_CLASS_UNDERFLOW,
    SUM_OVERFLOW,
    TARGET_UNDERFLOW,
    THEORY_QUANTITIES,
    ExpFacts,
    threshold,
)
from harness.outputs.theory import MEASURABLY, TOLERANCE, Break, Prediction, fits
from harness.sweep import metrics

# --- explanations from measured facts -------------------------------------------------------

QUANTITY_WORDS = {
    "max_lse": "largest log-sum-exp",
    "max_logit": "largest logit",
    "max_exact_loss": "largest exact loss",
    "max_class_loss": "largest lse - x_j over every class",
    "max_class_gap": "largest max_k x_k - x_j over every class",
    "max_target_gap": "largest max_j x_j - x_y",
    "max_neg_target_logit": "largest -x_y",
}
# what a probability made by the exp is, and where its argument passes the exp's underflow, by quantity
EXP_UNDERFLOW_WORDS = {
    "max_target_gap": "a probability made by the exp, exp(x_y - max_j x_j), is 0 once max_j x_j - x_y passes it",
    "max_neg_target_logit": "the unshifted exp(x_y) is 0, and so the target probability, once -x_y passes it",
    "max_class_gap": "a class's probability made by the exp, exp(x_j - max_k x_k), is 0 once max_k x_k - x_j passes it",
}


def _fmt(value) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.4g}"


def fmt_quantity(value) -> str:
    """A measured quantity, to the 5 digits a bisected bracket resolves."""
    return "-" if value is None or not np.isfinite(value) else f"{value:.5g}"


def fmt_span(lo: float, hi: float) -> str:
    """'87.333 to 87.34', or one number where both ends read the same."""
    if not np.isfinite(lo) or fmt_quantity(lo) == fmt_quantity(hi):
        return fmt_quantity(hi)
    return f"{fmt_quantity(min(lo, hi))} to {fmt_quantity(max(lo, hi))}"


@dataclass(frozen=True)
class Fact:
    """A measured fact that puts a threshold on a quantity: `says` how, in words. With `earliest`, the
    break may come anywhere from `earliest` up to `threshold` (a band, not a point)."""

    quantity: str
    threshold: float
    says: str
    earliest: float = float("nan")


def exp_words(framework: str, dtype: str, measured: ExpFacts, cause: str, quantity: str = "max_exact_loss") -> str:
    """The measured fact behind an 'exp' threshold stated in `quantity`, in words."""
    if cause == EXP_OVERFLOW:
        return (
            f"{framework}'s exp returns inf above {fmt_quantity(measured.exp_overflow)} in {dtype} (measured), before "
            f"the sum overflows at ln(largest finite + half an ulp) = "
            f"{fmt_quantity(DTYPES[dtype].exp_overflow_threshold)}"
        )
    made = EXP_UNDERFLOW_WORDS.get(quantity, "a probability made by the exp, exp(x_j - max), is 0 past that loss")
    return f"{framework}'s exp returns 0 below -{fmt_quantity(measured.exp_underflow)} in {dtype} (measured), so {made}"


def quotient_words(framework: str, dtype: str, measured: ExpFacts) -> str:
    """The measured fact behind a 'quotient' threshold, in words (flushing or not, as measured)."""
    fmt = DTYPES[dtype]
    if measured.quotient_flushes:
        return (
            f"{framework}'s division flushes subnormal quotients to zero in {dtype} (measured), so a probability "
            f"exp(x_y) / sum(exp(x)) is 0 past -ln(smallest normal) = {fmt_quantity(fmt.exp_flush_threshold)}"
        )
    return (
        f"{framework}'s division keeps subnormal quotients in {dtype} (measured), so a probability exp(x_y) / "
        f"sum(exp(x)) is 0 only past gradual underflow's -ln(smallest subnormal / 2) = "
        f"{fmt_quantity(fmt.exp_underflow_threshold)}"
    )


def _measured_facts(framework: str, mechanisms, dtype: str, measured: ExpFacts, quantity_of: dict) -> list[Fact]:
    """The thresholds theory did not choose but a measured fact puts on the path: a flushing division's
    1/sum(exp), and for other-class underflow the other way a probability can be made (by the exp, or
    as a quotient). A target probability's two ways are both theory's (harness.mechanisms.measured_limits)."""
    found = []
    fmt = DTYPES[dtype]
    if measured.quotient_flushes and SUM_OVERFLOW in mechanisms:
        says = (
            f"{framework}'s division flushes subnormal quotients to zero in {dtype} (measured), so 1/sum(exp) "
            f"becomes 0 once the log-sum-exp passes -ln(smallest normal) = {fmt_quantity(fmt.exp_flush_threshold)}"
        )
        found.append(Fact(quantity_of.get(SUM_OVERFLOW, "max_lse"), fmt.exp_flush_threshold, says))
    quotient = fmt.exp_flush_threshold if measured.quotient_flushes else fmt.exp_underflow_threshold
    if OTHER_CLASS_UNDERFLOW in mechanisms and measured.exp_underflow < quotient * (1 - MEASURABLY):
        quantity = quantity_of.get(OTHER_CLASS_UNDERFLOW, THEORY_QUANTITIES[OTHER_CLASS_UNDERFLOW][0])
        if SUM_OVERFLOW not in mechanisms:  # theory chose the exp's threshold: the quotient's is the other
            on_loss = THEORY_QUANTITIES[OTHER_CLASS_UNDERFLOW][0]  # a quotient's threshold is on the loss
            found.append(Fact(on_loss, quotient, quotient_words(framework, dtype, measured)))
        else:  # theory chose the quotient's: the exp's is the other
            found.append(
                Fact(quantity, measured.exp_underflow, exp_words(framework, dtype, measured, OTHER_CLASS_UNDERFLOW))
            )
    return found


def prediction_facts(framework: str, dtype: str, measured: ExpFacts, predicted) -> list[Fact]:
    """Theory's own measured thresholds (the exp's, a division's) as facts, so that where one was passed
    before the break (another of theory's was first), the one that fits it is named."""
    says = {
        "exp": lambda p: exp_words(framework, dtype, measured, p.cause, p.quantity),
        "quotient": lambda p: quotient_words(framework, dtype, measured),
    }
    return [Fact(p.quantity, p.threshold, says[p.source](p)) for p in predicted if p.source in says]


def facts(
    framework: str,
    path: str,
    mechanisms,
    dtype: str,
    flushes: bool,
    accumulation: str,
    quantity_of: dict,
    measured: ExpFacts | None = None,
    predicted=(),
) -> list[Fact]:
    """Thresholds that measured facts put on this combination, beside theory's own.

    The exp and the division (the backend's measurements, `measured`): a flushing division's
    1/sum(exp) is 0 once the log-sum-exp passes -ln(smallest normal); a probability is made either by
    the exp or as a quotient, and theory took one of the two. In a table before those measurements,
    flushing (`flushes`): 1/sum(exp) flushes to 0 likewise. Accumulation (the path entry, through the
    breaks table): a mechanism's threshold in the dtype the sums are carried in. Theory's own
    measured thresholds (`predicted`) too, where another of them was passed first.
    """
    found = []
    if measured is not None:
        found += _measured_facts(framework, mechanisms, dtype, measured, quantity_of)
        found += prediction_facts(framework, dtype, measured, predicted)
    elif flushes and SUM_OVERFLOW in mechanisms:
        limit = DTYPES[dtype].exp_flush_threshold
        says = (
            f"{framework} flushes subnormals to zero in {dtype} (measured), so 1/sum(exp) becomes 0 once the "
            f"log-sum-exp passes -ln(smallest normal) = {fmt_quantity(limit)}"
        )
        found.append(Fact(quantity_of.get(SUM_OVERFLOW, "max_lse"), limit, says))
    if accumulation and accumulation != dtype and accumulation in DTYPES:
        for cause in mechanisms:
            limit = threshold(cause, accumulation, False)
            says = (
                f"{framework}'s {path} carries {dtype} sums in {accumulation} (path entry): {cause} at "
                f"{fmt_quantity(limit)}"
            )
            found.append(Fact(quantity_of.get(cause, THEORY_QUANTITIES[cause][0]), limit, says))
    return found


def double_rounding_facts(framework, path, mechanisms, dtype: str, flushes: bool, measured, double: bool) -> list[Fact]:
    """Where the path rounds exp(x) to the dtype before dividing by the sum s (path entry, through the
    breaks table) and the dtype keeps gradual underflow: exp(x_y - max) rounds to the smallest
    subnormal sigma from 0.5 sigma up to 1.5 sigma, and sigma / s rounds to 0 once s >= 2, so the
    target probability, exactly between sigma/2 and 0.75 sigma, can round to 0: target underflow from
    a loss of -ln(0.75 sigma) up to -ln(sigma / 2) (float16: 16.924 to 17.329)."""
    flushing = measured.quotient_flushes if measured is not None else flushes
    if not double or flushing or TARGET_UNDERFLOW not in (mechanisms or ()):
        return []
    latest = DTYPES[dtype].exp_underflow_threshold  # -ln(sigma / 2)
    earliest = latest - math.log(1.5)  # -ln(0.75 sigma)
    says = (
        f"{framework}'s {path} rounds exp(x) to {dtype} before dividing by the sum (path entry): that exp "
        f"rounds up to the smallest subnormal sigma from 0.5 sigma and down to it below 1.5 sigma, and "
        f"sigma / sum rounds to 0 once the sum is 2 or more, so a target probability of 0.5 to 0.75 sigma "
        f"can come out 0: from a loss of -ln(0.75 sigma) = {fmt_quantity(earliest)} up to {fmt_quantity(latest)}"
    )
    return [Fact("max_exact_loss", latest, says, earliest)]


def _fact_fits(fact: Fact, lo: float, hi: float) -> bool:
    """A point fact within 1% of the measured bracket [lo, hi]; a band fact overlapping it (within 1%)."""
    if not np.isfinite(fact.earliest):
        return fits(fact.threshold, lo, hi)
    low = lo if np.isfinite(lo) else hi
    return np.isfinite(hi) and hi >= fact.earliest * (1 - TOLERANCE) and low <= fact.threshold * (1 + TOLERANCE)


def _distance(limit: float, lo: float, hi: float) -> float:
    """How far `limit` lies outside [lo, hi], relative to it (0 inside)."""
    low, high = (min(lo, hi), max(lo, hi)) if np.isfinite(lo) else (hi, hi)
    return max(low - limit, limit - high, 0.0) / abs(limit)


def _fitting_fact(known: list[Fact], brk: Break) -> Fact | None:
    """The fact whose threshold lies closest to the measured break, if within 1% of it."""
    fitting = [f for f in known if _fact_fits(f, brk.lo[f.quantity], brk.hi[f.quantity])]
    return min(fitting, key=lambda f: _distance(f.threshold, brk.lo[f.quantity], brk.hi[f.quantity]), default=None)


def _broke(cells: pd.DataFrame, brk: Break) -> str:
    """'broke (inf) at scale 20.862 (not yet at 20.86)'."""
    status = cells["status"].iloc[brk.index]
    text = f"broke ({status}) at scale {fmt_quantity(brk.scale_hi)}"
    if np.isfinite(brk.scale_lo):
        text += f" (not yet at {fmt_quantity(brk.scale_lo)})"
    message = cells["message"].iloc[brk.index] if "message" in cells else ""
    return text + (f": {message}" if status == metrics.ERROR and message else "")


def _ln_classes(cells: pd.DataFrame) -> str:
    """' = 6.908' for 1000 classes, where the table says how many."""
    return f" = {_fmt(math.log(cells['n_classes'].iloc[0]))}" if "n_classes" in cells else ""


def _sum_first_note(cells: pd.DataFrame, p: Prediction) -> str:
    return (
        f"the sum of exps overflows before any single exp: once lse(x) passes {_fmt(p.threshold)}, which it does "
        f"up to ln(n_classes){_ln_classes(cells)} before the largest logit; this table has no max_lse to check it"
    )


def explain_disagreement(cells, mechanisms, brk: Break, shown, chosen, early, known: list[Fact]) -> str:
    """Why a measured break and theory disagree: a measured fact that puts a threshold there, or the numbers."""
    if brk.index is None:
        value = chosen.values[chosen.index]
        text = (
            f"never broke, though the {QUANTITY_WORDS[chosen.quantity]} {fmt_quantity(value)} > "
            f"{fmt_quantity(chosen.threshold)} "
            f"from scale {_fmt(cells['scale'].iloc[chosen.index])}"
        )
        below = [f for f in known if np.nanmax(np.r_[cells[f.quantity].to_numpy(dtype=float), -np.inf]) <= f.threshold]
        return text + (f"; {below[0].says}, never passed within the grid" if below else "")
    text = _broke(cells, brk)
    fact = _fitting_fact(known, brk)
    if early:
        p = early[0]
        text += (
            f", though the {QUANTITY_WORDS[p.quantity]} had passed {fmt_quantity(p.threshold)} ({p.cause}) before it"
        )
    elif shown is None:
        text += ", though a stable path should not break" if not mechanisms else ""
    else:
        lo, hi = brk.lo[shown.quantity], brk.hi[shown.quantity]
        off = (hi - shown.threshold) / shown.threshold
        text += (
            f", where the {QUANTITY_WORDS[shown.quantity]} is {fmt_span(lo, hi)}, {abs(off):.1%} "
            f"{'below' if off < 0 else 'above'} the {shown.cause} threshold {fmt_quantity(shown.threshold)}"
        )
        if shown.quantity == "max_logit" and off < 0:
            text += f"; {_sum_first_note(cells, shown)}"
    if fact is not None and np.isfinite(fact.earliest):
        value = fmt_span(brk.lo[fact.quantity], brk.hi[fact.quantity])
        return text + f"; {fact.says}: the measured {QUANTITY_WORDS[fact.quantity]} {value} lies in that band"
    if fact is not None and shown is not None and not early and fact.quantity == shown.quantity:
        return text + f"; {fact.says}: within 1% of it"
    if fact is not None:
        value = fmt_span(brk.lo[fact.quantity], brk.hi[fact.quantity])
        return text + f"; {fact.says}, within 1% of the measured {QUANTITY_WORDS[fact.quantity]} {value}"
    return text + (
        "" if shown is None else "; no measured fact (subnormal flushing, accumulation dtype) puts a threshold there"
    )


def explain_agreement(
    cells, framework: str, dtype: str, flushes: bool, brk: Break, cause, known, exp_facts: ExpFacts | None = None
) -> str:
    """What is notable where theory agrees: a measured exp or division fact, a flushed threshold, a fact
    that fits closer, a lower bound."""
    if brk.index is None or cause is None:
        return ""
    lo, hi = brk.lo[cause.quantity], brk.hi[cause.quantity]
    measured = f"the measured {QUANTITY_WORDS[cause.quantity]} {fmt_span(lo, hi)}"
    if exp_facts is not None and cause.source == "exp":
        return f"{exp_words(framework, dtype, exp_facts, cause.cause, cause.quantity)}: within 1% of {measured}"
    if exp_facts is not None and cause.source == "quotient" and exp_facts.quotient_flushes:
        return f"{quotient_words(framework, dtype, exp_facts)}: within 1% of {measured}"
    if exp_facts is None and cause.cause == TARGET_UNDERFLOW and flushes:
        gradual = DTYPES[dtype].exp_underflow_threshold
        return (
            f"{framework} flushes subnormals to zero in {dtype} (measured): -ln(smallest normal) = "
            f"{fmt_quantity(cause.threshold)} lies within 1% of {measured}; gradual underflow would put it at "
            f"{fmt_quantity(gradual)}"
        )
    inside = np.isfinite(lo) and min(lo, hi) <= cause.threshold <= max(lo, hi)
    closer = next(
        (
            f
            for f in known
            if np.isfinite(lo)
            and min(brk.lo[f.quantity], brk.hi[f.quantity])
            <= f.threshold
            <= max(brk.lo[f.quantity], brk.hi[f.quantity])
        ),
        None,
    )
    if not inside and closer is not None:
        return (
            f"{measured} brackets {fmt_quantity(closer.threshold)}, not {fmt_quantity(cause.threshold)}: {closer.says}"
        )
    if cause.quantity == "max_logit" and cause.index is not None and cause.index > brk.index:
        return _sum_first_note(cells, cause)
    return ""
