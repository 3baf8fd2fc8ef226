"""The edge_cases stage's outputs: edge_cases.{parquet,csv}, the matrix edge_cases.md, the report section.

The matrix has a row per case and a column per framework/path; each cell is `loss outcome / gradient
outcome`, that of most dtypes, then the dtypes that differ. The report section reads the table back
from the run folder (this layer never runs a framework).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from harness.dtypes import DTYPES
from harness.outputs import tables
from harness.sweep.edge_catalogue import EDGE_CASES, NUMBER, WRONG
from harness.sweep.metrics import ERROR, INF, NAN

EDGE_TABLE = "edge_cases"
EDGE_COLUMNS = (
    "case",
    "framework",
    "path",
    "dtype",
    "device",
    "reduction",
    "label",
    "exact_loss",
    "why_undefined",
    "loss",
    "loss_returned",
    "loss_outcome",
    "loss_ulp_err",
    "status",
    "grad_returned",
    "grad_outcome",
    "grad_max_row_rel_err",
    "grad_status",
    "other_rows_loss",
    "other_rows_grad",
    "message",
)
OUTCOME_NOTE = (
    "Outcomes: `exact` (within half the dtype's significand bits of the exact value, or the infinity it "
    "rounds to; a gradient row within 2^-(p/2) of its largest exact entry), `wrong` (a value that is not), "
    "`number` (a finite number where no exact value exists: returned silently), `inf`, `nan`, `error` "
    "(raised), `unsupported` (not called, or no gradient)."
)
SAID = {  # outcome -> what the findings say of it
    ERROR: "raise an error",
    NAN: "return NaN",
    NUMBER: "silently return a number where none is defined",
    WRONG: "return a value that is not the exact one",
    INF: "return inf where the exact value is not that infinity",
}
SHORT = {"float16": "f16", "bfloat16": "bf16", "float32": "f32", "float64": "f64"}


def _ranked(frame: pd.DataFrame, names: dict) -> pd.DataFrame:
    """Rows in case, framework, path, dtype order (names in registry order, then as they came)."""
    order = {"case": [c.name for c in EDGE_CASES], "dtype": list(DTYPES)} | names
    ranks = {c: {n: i for i, n in enumerate(dict.fromkeys(list(known) + list(frame[c])))} for c, known in order.items()}
    keys = pd.DataFrame({c: frame[c].map(rank) for c, rank in ranks.items()})
    by = [c for c in ("case", "framework", "path", "dtype") if c in keys]
    return frame.loc[keys.sort_values(by, kind="stable").index].reset_index(drop=True)


def edge_frame(rows: list[dict], names: dict) -> pd.DataFrame:
    """The stage's rows as the edge_cases table: documented columns, in registry order."""
    frame = pd.DataFrame(rows).reindex(columns=list(EDGE_COLUMNS))
    frame = _ranked(frame, {k: v for k, v in names.items() if k in ("framework", "path")})
    for column in EDGE_COLUMNS:
        if frame[column].dtype == object:
            frame[column] = frame[column].fillna("").astype(str)
    return frame


def exact_text(value: float) -> str:
    if np.isnan(value):
        return "undefined"
    return "+inf" if value == np.inf else f"{value:.4g}"


def _cell(rows: pd.DataFrame) -> str:
    """`loss / gradient` outcome of most dtypes, then those that differ: `exact / exact (f64: wrong / exact)`."""
    by_dtype = {r["dtype"]: f"{r['loss_outcome']} / {r['grad_outcome']}" for r in rows.to_dict("records")}
    values = list(by_dtype.values())
    usual = max(dict.fromkeys(values), key=values.count)  # the most common, the first of equals
    others = "; ".join(f"{SHORT.get(d, d)}: {v}" for d, v in by_dtype.items() if v != usual)
    return f"{usual} ({others})" if others else usual


def edge_matrix(frame: pd.DataFrame) -> str:
    """Markdown: a row per case (with its exact loss), a column per framework/path."""
    columns = list(dict.fromkeys(frame["framework"] + "/" + frame["path"]))
    rows = []
    for case, of_case in frame.groupby("case", sort=False):
        widest = of_case[of_case["dtype"] == of_case["dtype"].iloc[-1]]
        cells = {f"{f}/{p}": _cell(r) for (f, p), r in of_case.groupby(["framework", "path"], sort=False)}
        exact = exact_text(float(widest["exact_loss"].iloc[0]))
        rows.append([f"`{case}`", exact] + [cells.get(c, "") for c in columns])
    return tables.markdown_table(["case", "exact loss", *columns], rows)


def _who(hits: pd.DataFrame, of_case: pd.DataFrame) -> str:
    """Frameworks whose every path and dtype is in `hits`, or every path in the same dtypes, else their
    paths (with dtypes where not all)."""
    named = []
    for framework, mine in hits.groupby("framework", sort=False):
        if len(mine) == (of_case["framework"] == framework).sum():
            named.append(framework)
            continue
        dtypes = {path: tuple(of_path["dtype"]) for path, of_path in mine.groupby("path", sort=False)}
        paths = set(of_case.loc[of_case["framework"] == framework, "path"])
        if set(dtypes) == paths and len(set(dtypes.values())) == 1:
            named.append(f"{framework} ({', '.join(next(iter(dtypes.values())))})")
            continue
        for path, of_path in mine.groupby("path", sort=False):
            everywhere = len(of_path) == ((of_case["framework"] == framework) & (of_case["path"] == path)).sum()
            dtypes = "" if everywhere else f" ({', '.join(of_path['dtype'])})"
            named.append(f"{framework}/{path}{dtypes}")
    return ", ".join(named)


HARM = (WRONG, NUMBER, INF, NAN, ERROR)  # the most harmful first: a wrong or silent value, then a loud one


def findings(frame: pd.DataFrame, column: str = "loss_outcome", order=tuple(SAID)) -> list[str]:
    """One sentence per outcome that is not `exact`: which frameworks (paths, dtypes) on which cases."""
    sentences = []
    for outcome in order:
        said = SAID[outcome]
        parts = []
        for case, of_case in frame.groupby("case", sort=False):
            hits = of_case[of_case[column] == outcome]
            if not hits.empty:
                shows_value = outcome == NUMBER and column == "loss_outcome"
                example = f" (e.g. {hits['loss_returned'].iloc[0]})" if shows_value else ""
                parts.append(f"`{case}`: {_who(hits, of_case)}{example}")
        if parts:
            sentences.append(f"{said[0].upper()}{said[1:]}: " + "; ".join(parts) + ".")
    return sentences


SPOILED = (WRONG, NAN, INF)  # what an edge row must not do to the other rows of its call


def spill_findings(frame: pd.DataFrame, control: str = "finite") -> list[str]:
    """Where the edge row changes the other rows' loss or gradient (the other_rows_* columns), counted only
    where the control case leaves them exact (MLX's float64, computed in float32, is off in every case)."""
    keys = ["framework", "path", "dtype"]
    parts = []
    for column, what in (("other_rows_loss", "loss"), ("other_rows_grad", "gradient")):
        clean = frame[(frame["case"] == control) & (frame[column] == "exact")][keys]
        every_row = frame["other_rows_loss"] == ""  # a case applied to every row leaves no other rows
        spoiled = frame[(frame["case"] != control) & ~every_row & frame[column].isin(SPOILED)].merge(clean, on=keys)
        for (case, outcome), hits in spoiled.groupby(["case", column], sort=False):
            parts.append(f"`{case}`: {_who(hits, frame[frame['case'] == case])} (their {what}: {outcome})")
    return [f"The edge row changes the other rows of its call: {'; '.join(parts)}."] if parts else []


def cases_list() -> list[str]:
    return [f"- `{c.name}`: {c.change}" + (f"; undefined: {c.undefined}" if c.undefined else "") for c in EDGE_CASES]


def edge_markdown(frame: pd.DataFrame, experiment: str) -> str:
    """edge_cases.md: the matrix, the legend, the cases and which path to use."""
    device = ", ".join(dict.fromkeys(frame["device"]))
    dtypes = ", ".join(dict.fromkeys(frame["dtype"]))
    lines = [
        f"# {experiment}: what each framework returns on edge cases",
        "",
        f"Each cell: loss outcome / gradient outcome of the edge row in most dtypes ({dtypes}), then "
        f"in parentheses the dtypes that differ; on {device}. {OUTCOME_NOTE}",
        "",
        edge_matrix(frame),
        "",
        "Cases (the first row of the input; the other rows stay finite):",
        "",
        *cases_list(),
        "",
        edge_recommendation(frame),
    ]
    return "\n".join(lines) + "\n"


def is_edge_run(run_dir: Path) -> bool:
    """A folder of the edge_cases stage: its table, and no errors table."""
    return (run_dir / f"{EDGE_TABLE}.parquet").is_file() and not (run_dir / "errors.parquet").is_file()


def _defined(frame: pd.DataFrame) -> pd.Series:
    return frame["exact_loss"].notna()


def edge_entry(cells: pd.DataFrame) -> str:
    """A verdict entry: the defined cases whose loss is not exact ('wrong on ...'), the undefined ones
    answered with a number ('silent on ...'), or 'exact or flagged'; then the worst error of an exact loss."""
    wrong = cells[_defined(cells) & (cells["loss_outcome"] != "exact")]["case"]
    silent = cells[~_defined(cells) & (cells["loss_outcome"] == NUMBER)]["case"]
    said = [f"{word} on {', '.join(dict.fromkeys(c))}" for word, c in (("wrong", wrong), ("silent", silent)) if len(c)]
    exact = cells.loc[cells["loss_outcome"] == "exact", "loss_ulp_err"]
    ulp = f"; {exact.max():.3g} ulp" if exact.notna().any() else ""
    return "; ".join(said or ["exact or flagged"]) + ulp


def edge_verdict(frame: pd.DataFrame) -> list[str]:
    """The verdict table of an edge_cases run: framework/path x dtype, marked for the page's colours."""
    from harness.outputs.verdict import VERDICT_MARK

    dtypes = list(dict.fromkeys(frame["dtype"]))
    entries = {key: edge_entry(cells) for key, cells in frame.groupby(["framework", "path", "dtype"], sort=False)}
    rows = list(dict.fromkeys((f, p) for f, p, _ in entries))
    body = [[f"{f}/{p}"] + [entries.get((f, p, d), "") for d in dtypes] for f, p in rows]
    legend = (
        "Each entry: the defined cases whose loss is not exact (wrong), the undefined ones answered with a number "
        'instead of NaN or an error (silent), else "exact or flagged"; then the worst error of an exact loss.'
    )
    return [VERDICT_MARK, tables.markdown_table(["framework/path", *dtypes], body), "", "<!-- legend -->", legend, ""]


def edge_recommendation(frame: pd.DataFrame) -> str:
    """'Use P: ...': the paths with the fewest wrong losses, then bad gradients, then silent numbers."""
    counts = {}
    for path, cells in frame.groupby("path", sort=False):
        defined = _defined(cells)
        wrong = int((defined & (cells["loss_outcome"] != "exact")).sum())
        bad_grad = int((defined & cells["grad_outcome"].isin([NAN, INF, WRONG])).sum())
        silent = cells[~defined & (cells["loss_outcome"] == NUMBER)]
        counts[path] = (wrong, bad_grad, len(silent), list(dict.fromkeys(silent["framework"])), len(cells))
    least = min(c[:3] for c in counts.values())
    best = [p for p, c in counts.items() if c[:3] == least]
    wrong, bad_grad, silent, where, n = counts[best[0]]
    whose = f" (in {', '.join(where)})" if where else ""
    others = "".join(f"; {p}: {c[0]}, {c[1]} and {c[2]}" for p, c in counts.items() if p not in best)
    return (
        f"Use {' or '.join(best)}: of {n} answers (every framework, dtype and edge input), {wrong} are wrong losses "
        f"and {bad_grad} NaN or wrong gradients where the loss is defined, and {silent} are numbers returned "
        f"silently where it is not{whose}{others}."
    )


def edge_headlines(frame: pd.DataFrame, most: int = 6) -> list[str]:
    """The recommendation, where the edge row spoils other rows, then what the frameworks return that is
    not exact, the most harmful first (a raised error, the safest answer, last): loss, then gradient."""
    sentences = [edge_recommendation(frame), *spill_findings(frame)]
    loss = [f"Loss: {s}" for s in findings(frame, order=HARM)]
    gradient = [f"Gradient: {s}" for s in findings(frame, "grad_outcome", order=HARM)]
    return (sentences + loss[:2] + gradient[:2] + loss[2:] + gradient[2:])[:most]


def edge_section(run_dir: Path) -> list[str]:
    """The report's section: findings on the loss and the gradient, then the matrix and the cases."""
    path = run_dir / f"{EDGE_TABLE}.parquet"
    if not path.is_file():
        return []
    frame = pd.read_parquet(path)
    lines = [OUTCOME_NOTE, "", "### Loss", ""]
    lines += [f"- {s}" for s in findings(frame)] or ["- Every loss is exact."]
    lines += ["", "### Gradient", ""]
    lines += [f"- {s}" for s in findings(frame, "grad_outcome")] or ["- Every gradient is exact."]
    spilled = spill_findings(frame)
    lines += ["", *[f"- {s}" for s in spilled]] if spilled else []
    lines += ["", "### The matrix", "", edge_matrix(frame), "", *cases_list(), ""]
    return lines + [f"{EDGE_TABLE}.csv / .parquet has a row per case, framework, path and dtype.", ""]


def write_results(sweep, run_dir: Path, rows: list[dict], names: dict) -> pd.DataFrame:
    """edge_cases.{parquet,csv} and edge_cases.md (printed); harness.pipeline then builds the report."""
    frame = edge_frame(rows, names)
    tables.write_table(frame, run_dir / EDGE_TABLE)
    markdown = edge_markdown(frame, sweep.experiment)
    tables.write_text(markdown, run_dir / f"{EDGE_TABLE}.md")
    print(markdown)
    return frame
