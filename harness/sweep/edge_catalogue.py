"""The edge cases of experiment edge_cases and the outcome vocabulary, as data: what each case does
to the edge row and why its exact loss is undefined. harness.sweep.edge_cases makes the inputs and
exact answers; harness.outputs.edge_tables reads only this (no backends, no paths).

Outcomes (loss and gradient alike): `exact` (within half the dtype's significand bits of the exact
value, or the infinity it rounds to), `wrong` (a number, or inf, that is not), `number` (a finite
number where no exact value exists: silently returned), `inf`, `nan`, `error` (raised),
`unsupported` (not called; the message says why).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.sweep import metrics

EXACT, WRONG, NUMBER = "exact", "wrong", "number"
OUTCOMES = (EXACT, NUMBER, WRONG, metrics.INF, metrics.NAN, metrics.ERROR, metrics.UNSUPPORTED)  # mildest first


@dataclass(frozen=True)
class EdgeCase:
    """One edge case: its name (the `case` column), what it does to the edge row, and why its exact
    loss is undefined ('' where it is defined)."""

    name: str
    change: str
    undefined: str = ""
    reduction: str = "none"  # "mean": the case runs through the option layer (harness.sweep.edge_cases.case_options)


EDGE_CASES = (
    EdgeCase("finite", "nothing: every logit finite, the label in range (the control)"),
    EdgeCase("neg_inf_other", "-inf at a class other than the label (a masked class): its gradient entry is 0"),
    EdgeCase(
        "neg_inf_label",
        "-inf at the label, the other logits finite: the exact loss is +inf, its gradient undefined "
        "(the limit as x[y] -> -inf, softmax - onehot with -1 at the label, is what a number there is)",
    ),
    EdgeCase("all_neg_inf", "every logit -inf", "lse(x) - x[y] = -inf + inf"),
    EdgeCase("nan_logit", "NaN at a class other than the label", "a NaN logit"),
    EdgeCase("label_n_classes", "label = n_classes, one past the last class", "label outside [0, n_classes)"),
    EdgeCase("label_minus_one", "label = -1, which is not the ignore index -100", "label outside [0, n_classes)"),
    EdgeCase(
        "ignore_all_mean",
        "ignore_fraction=1 (every row's label the ignore index) with reduction mean, on every row",
        "mean over no kept rows: 0 / 0",
        reduction="mean",
    ),
)
CASES_BY_NAME = {case.name: case for case in EDGE_CASES}
