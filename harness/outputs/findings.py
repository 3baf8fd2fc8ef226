"""Every finding of a report, per combination: sentences written from the breakdown and errors tables.

key_findings gives, in order, an overview (how many combinations fail, how many agree with theory),
the disagreements with theory, the combinations theory cannot check, one sentence per predicted break
(frameworks that break alike merged into one, with the bisected break quantity), the paths that never
fail, where more than k bits are lost while the loss is still finite, where the exact loss itself
rounds to inf or 0 (a correct result, not a failure), where the logits themselves overflow the
dtype, and what is unsupported. Numbers are written to 4 significant digits (_g); with_where names each row's setting
('float16 (spread)'), which the report's breakdown section shares.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.dtypes import DTYPES
from harness.outputs import breakdown
from harness.outputs.verdict import _and
from harness.sweep import metrics


def _g(value) -> str:
    return "-" if value is None or pd.isna(value) or not np.isfinite(value) else f"{value:.4g}"


def _who(frameworks, all_frameworks) -> str:
    frameworks = list(dict.fromkeys(frameworks))
    return "every framework" if set(frameworks) == set(all_frameworks) and len(frameworks) > 1 else _and(frameworks)


VERBS = {breakdown.SUM_OVERFLOW: "overflows", breakdown.TARGET_UNDERFLOW: "underflows"}


SIZE_WORDS = {"n_classes": "classes", "n_rows": "rows", "device": ""}


def with_where(table: pd.DataFrame) -> pd.DataFrame:
    """Add `setting` ('spread', or 'spread, 1000 classes' where the run varies the size or device)
    and `where` ('float16 (spread)')."""
    varying = [c for c in SIZE_WORDS if c in table and table[c].nunique() > 1]
    sizes = [[f"{value} {SIZE_WORDS[c]}".strip() for value in table[c].tolist()] for c in varying]  # not row by row
    setting = [
        ", ".join([str(family), *words]) for family, *words in zip(table["family"].tolist(), *sizes, strict=True)
    ]
    return table.assign(setting=setting, where=[f"{d} ({s})" for d, s in zip(table["dtype"], setting, strict=True)])


def overview_finding(table: pd.DataFrame) -> str:
    failing = table["first_fail_scale"].notna().sum()
    checked = table["matches_theory"].notna()
    agree = int(table.loc[checked, "matches_theory"].astype(bool).sum())
    text = (
        f"{failing} of {len(table)} framework/path/dtype/family combinations fail within the grid; "
        f"{agree} of the {int(checked.sum())} that theory can check agree with it (a threshold within 1% of "
        "the measured break)"
    )
    disagree = int(checked.sum()) - agree
    if disagree:
        text += f", {disagree} disagree (explained below)"
    if (~checked).any():
        text += f", {int((~checked).sum())} cannot be checked (below)"
    return text + "."


def _is(column: pd.Series, value: bool) -> pd.Series:
    """column == value, NA counting as False."""
    return column.eq(value).fillna(False).astype(bool)


def _measured(row) -> str:
    """'; located between scales 2.3006 and 2.3008, where the largest log-sum-exp is 11.088 to 11.095'."""
    if pd.isna(row["break_scale_lo"]) or pd.isna(row["break_quantity_hi"]) or not row["theory_quantity"]:
        return ""
    words = breakdown.QUANTITY_WORDS.get(row["theory_quantity"], row["theory_quantity"])
    lo, hi = (breakdown.fmt_quantity(row[f"break_scale_{end}"]) for end in ("lo", "hi"))
    value = breakdown.fmt_span(row["break_quantity_lo"], row["break_quantity_hi"])
    return f"; located between scales {lo} and {hi}, where the {words} is {value}"


def break_findings(table: pd.DataFrame, all_frameworks) -> list[str]:
    """One sentence per path/dtype/family break that theory predicts or cannot check, frameworks merged
    where they break alike (the same grid scale and the same bisected quantity to 5 digits)."""
    rows = table[table["first_fail_scale"].notna() & ~_is(table["matches_theory"], False)]
    rows = rows.assign(measured=[_measured(row) for _, row in rows.iterrows()])
    key = ["where", "path", "theory_cause", "theory_quantity", "theory_threshold"]
    key += ["first_fail_scale", "first_fail_max_logit", "measured", "explanation"]
    findings = []
    for _, group in rows.groupby(key, sort=False, dropna=False):
        row = group.iloc[0]
        statuses = _and(dict.fromkeys(group["first_fail_status"]))
        measured = (
            f"{statuses} from scale {_g(row['first_fail_scale'])} (largest logit {_g(row['first_fail_max_logit'])}) "
            f"in {_who(group['framework'], all_frameworks)}"
        )
        if pd.isna(row["matches_theory"]):
            findings.append(
                f"{row['path']} fails in {row['where']}: {measured}; not checked against theory: {row['explanation']}."
            )
            continue
        words = breakdown.QUANTITY_WORDS.get(row["theory_quantity"], row["theory_quantity"])
        verb = VERBS.get(row["theory_cause"], "fails")
        sentence = (
            f"{row['path']} {verb} in {row['where']} once the {words} passes {_g(row['theory_threshold'])}, "
            f"as theory predicts: {measured}{row['measured']}"
        )
        findings.append(sentence + (f"; {row['explanation']}" if row["explanation"] else "") + ".")
    return findings


def never_failing_findings(table: pd.DataFrame, errors: pd.DataFrame) -> list[str]:
    """Paths (and families of a path) that never fail anywhere, where theory agrees."""
    findings, everywhere = [], []
    top = f"up to scale {_g(errors['scale'].max())}"
    quiet = table["first_fail_scale"].isna() & _is(table["matches_theory"], True)
    for path, of_path in quiet.groupby(table["path"], sort=False):
        if of_path.all():
            everywhere.append(path)
            continue
        for family, of_family in of_path.groupby(table["family"], sort=False):
            if of_family.all():
                findings.append(
                    f"{path} never fails in family {family} (any framework or dtype, {top}), as theory predicts: "
                    "no threshold is passed."
                )
    if everywhere:
        verb = "never fails" if len(everywhere) == 1 else "never fail"
        findings.insert(0, f"{_and(everywhere)} {verb} in any framework, dtype or family ({top}), as theory predicts.")
    return findings


def disagreement_findings(table: pd.DataFrame, all_frameworks) -> list[str]:
    rows = table[_is(table["matches_theory"], False)]
    findings = []
    for (path, where, explanation), group in rows.groupby(["path", "where", "explanation"], sort=False):
        who = _who(group["framework"], all_frameworks)
        findings.append(f"Unlike theory, {path} in {where} {explanation} in {who}.")
    return findings


def unchecked_findings(table: pd.DataFrame) -> list[str]:
    """Combinations that never fail but that theory cannot check (failing ones have their own sentence)."""
    rows = table[table["matches_theory"].isna() & table["first_fail_scale"].isna()]
    return [
        f"Theory is not checked for {len(group)} combinations that never fail "
        f"({_and(dict.fromkeys(group['path']))}): {explanation}."
        for explanation, group in rows.groupby("explanation", sort=False)
    ]


def accuracy_findings(table: pd.DataFrame, all_frameworks) -> list[str]:
    """Where more than k bits are lost while the loss is still finite."""
    early = table["first_bits_lost_scale"].notna() & (
        table["first_fail_scale"].isna() | (table["first_bits_lost_scale"] < table["first_fail_scale"])
    )
    findings = []
    key = ["path", "where", "bits_lost_limit", "first_bits_lost_scale", "first_fail_scale"]
    for _, group in table[early].groupby(key, sort=False, dropna=False):
        row = group.iloc[0]
        precision = DTYPES[row["dtype"]].precision
        then = (
            f"before failing at scale {_g(row['first_fail_scale'])}"
            if pd.notna(row["first_fail_scale"])
            else "and never fails"
        )
        findings.append(
            f"{row['path']} in {row['where']} loses more than {_g(row['bits_lost_limit'])} of {precision} bits from "
            f"scale {_g(row['first_bits_lost_scale'])} (largest logit {_g(row['first_bits_lost_max_logit'])}) in "
            f"{_who(group['framework'], all_frameworks)}, up to {group['max_bits_lost'].max():.1f} bits while the "
            f"loss is finite, {then}."
        )
    return findings


CORRECTLY_ROUNDED_WORDS = {
    "exact_overflow_scale": ("inf", "exact_overflow"),
    "exact_underflow_scale": ("0", "exact_underflow"),
}


def correctly_rounded_findings(table: pd.DataFrame) -> list[str]:
    """Where the exact loss itself rounds to inf or 0: those results are right, not failures."""
    findings = []
    for column, (value, status) in CORRECTLY_ROUNDED_WORDS.items():
        if column not in table:
            continue
        for where, group in table[table[column].notna()].groupby("where", sort=False):
            findings.append(
                f"The exact loss itself rounds to {value} in {where} from scale {_g(group[column].min())}: "
                f"{_and(dict.fromkeys(group['path']))} give {value} there correctly ({status}), not a failure."
            )
    return findings


def input_findings(table: pd.DataFrame) -> list[str]:
    rows = table[table["input_inf_scale"].notna()]
    return [
        f"Logits overflow {where} from scale {_g(scale)}: those cells are input_inf, not failures of a path."
        for where, scale in rows.groupby("where", sort=False)["input_inf_scale"].min().items()
    ]


def unsupported_messages(errors: pd.DataFrame) -> dict[tuple, str]:
    """The message of each framework/path/dtype's first unsupported cell, read in one pass."""
    cells = errors[errors["status"] == metrics.UNSUPPORTED]
    if "message" not in cells:
        return {}
    firsts = cells.drop_duplicates(["framework", "path", "dtype"])
    keys = zip(firsts["framework"], firsts["path"], firsts["dtype"], strict=True)
    return dict(zip(keys, firsts["message"], strict=True))


def unsupported_findings(table: pd.DataFrame, errors: pd.DataFrame) -> list[str]:
    findings = []
    unsupported = table[table["n_unsupported"] > 0]
    messages = unsupported_messages(errors) if len(unsupported) else {}
    for _, row in unsupported.iterrows():
        message = messages.get((row["framework"], row["path"], row["dtype"]), "")
        findings.append(
            f"{row['framework']}/{row['path']} is unsupported in {row['where']} at {row['n_unsupported']} of "
            f"{row['n_scales']} scales" + (f": {message}" if message else "") + "."
        )
    return findings


def key_findings(table: pd.DataFrame, errors: pd.DataFrame) -> list[str]:
    """Sentences written from the breakdown table (and the errors table's grid)."""
    frameworks = list(dict.fromkeys(errors["framework"]))
    table = with_where(table)
    return (
        [overview_finding(table)]
        + disagreement_findings(table, frameworks)
        + unchecked_findings(table)
        + break_findings(table, frameworks)
        + never_failing_findings(table, errors)
        + accuracy_findings(table, frameworks)
        + correctly_rounded_findings(table)
        + input_findings(table)
        + unsupported_findings(table, errors)
    )
