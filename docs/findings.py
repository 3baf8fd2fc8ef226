"""The findings the README and the documentation state, generated from a run of each study.

    python docs/findings.py --run           # run the studies into results/findings/, then write
    python docs/findings.py RUNS_ROOT       # from finished runs: RUNS_ROOT/<experiment>/ per study

It keeps the columns the sentences read under docs/data/ (the run's own tables, cut to those
columns), copies the figure the README shows to docs/pages/assets/, and rewrites every block
between `<!-- findings:NAME -->` and `<!-- /findings:NAME -->` in README.md and the docs pages.
tests/test_docs.py renders the blocks again from docs/data/ and compares them with the text, so
a number in a finding cannot drift from the tables it came from.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loss_findings  # noqa: E402  (docs/loss_findings.py: the binary cross-entropy and KL sentences)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "docs" / "data"
FIGURE = REPO / "docs" / "pages" / "assets" / "error_vs_scale_spread.png"
TARGETS = (
    REPO / "README.md",
    REPO / "docs" / "pages" / "explanation" / "findings.md",
    REPO / "docs" / "pages" / "how-to" / "other-losses.md",
)

# study -> (its table, the columns kept, overrides of its run)
STUDIES = {
    "precision_sweep": (
        "breakdown",
        ("framework", "path", "dtype", "family", "first_fail_status", "theory_cause", "theory_threshold")
        + ("break_quantity_lo", "break_quantity_hi", "matches_theory"),
        [],
    ),
    "precision_errors": (
        "errors",
        ("framework", "path", "dtype", "family", "scale", "status", "max_ulp_err"),
        [],
    ),
    "edge_cases": (
        "edge_cases",
        ("case", "framework", "path", "dtype", "loss", "loss_outcome", "grad_outcome", "other_rows_grad"),
        ["frameworks=[numpy,torch,jax,mlx,tensorflow]"],
    ),
    "training_losses": (
        "errors",
        ("framework", "dtype", "ignore_fraction", "class_weights", "label_smoothing", "z_loss", "softcap", "target")
        + ("status", "max_exact_loss", "max_ulp_err"),
        [],
    ),
    "training_gradients": (
        "grad_errors",
        ("framework", "dtype", "ignore_fraction", "class_weights", "label_smoothing", "z_loss", "softcap", "target")
        + ("status", "max_row_rel_err"),
        [],
    ),
    "token_sweep": (
        "errors",
        ("framework", "dtype", "reduction", "n_rows", "status", "max_ulp_err", "message"),
        ["frameworks=[torch,jax,mlx,tensorflow]"],
    ),
}
STUDIES |= loss_findings.STUDIES
EXPERIMENT = {"precision_errors": "precision_sweep", "training_gradients": "training_losses"}  # another table
EXPERIMENT |= loss_findings.EXPERIMENT
GOOD = ("ok", "exact_overflow", "exact_underflow")
NAMES = {"numpy": "NumPy", "torch": "PyTorch", "jax": "JAX", "mlx": "MLX", "tensorflow": "TensorFlow"}


def g(x: float, digits: int = 4) -> str:
    """A number as the sentences print it: `digits` significant digits, an exponent only outside [1e-3, 1e6)."""
    if x != 0 and not 1e-3 <= abs(x) < 1e6:
        mantissa, exponent = f"{x:.{digits - 1}e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return f"{x:.{digits}g}"


def listing(items) -> str:
    """a, b and c."""
    items = list(items)
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


def load(data: Path = DATA) -> dict[str, pd.DataFrame]:
    # only an empty field is missing: "nan" and "inf" are statuses and outcomes
    return {name: pd.read_csv(data / f"{name}.csv", keep_default_na=False, na_values=[""]) for name in STUDIES}


def _break(b: pd.DataFrame, framework: str, path: str, dtype: str, family: str = "spread") -> pd.Series:
    (row,) = b[(b.framework == framework) & (b.path == path) & (b.dtype == dtype) & (b.family == family)].index
    return b.loc[row]


def _at(row: pd.Series) -> str:
    """Where a break was measured: the bracket of its quantity, at four significant digits."""
    lo, hi = g(row.break_quantity_lo, 5), g(row.break_quantity_hi, 5)
    return lo if lo == hi else f"{lo} to {hi}"


def _worst(e: pd.DataFrame, **where) -> float:
    cells = e[e.status.isin(GOOD)]
    for key, value in where.items():
        cells = cells[cells[key].isin(value if isinstance(value, list | tuple) else [value])]
    return float(cells.max_ulp_err.max())


def precision(t: dict[str, pd.DataFrame]) -> dict[str, str]:
    b, e = t["precision_sweep"], t["precision_errors"]
    stable = b[b.path.isin(["log_softmax_nll", "fused"])]
    never = int((stable.first_fail_status.isna() | stable.first_fail_status.eq("")).sum())
    torch_worst = _worst(e, framework="torch", path=["log_softmax_nll", "fused"])
    naive16, sl16 = _break(b, "torch", "naive", "float16"), _break(b, "torch", "softmax_log", "float16")
    sl32, sl64 = _break(b, "torch", "softmax_log", "float32"), _break(b, "torch", "softmax_log", "float64")
    jax32 = _break(b, "jax", "softmax_log", "float32")
    offset = {
        f: _worst(e, framework=f, path="fused", dtype="float32", family="offset")
        for f in NAMES
        if f in set(e.framework)
    }
    mlx64 = _worst(e, framework="mlx", path=["log_softmax_nll", "fused"], dtype="float64")
    agree = int(b.matches_theory.astype(str).eq("True").sum())
    apart = b[b.matches_theory.astype(str).eq("False")]
    return {
        "use": (
            "**Use `log_softmax_nll` or the framework's fused loss.** In the main sweep they stay finite in "
            + (f"all {never}" if never == len(stable) else f"{never} of their {len(stable)}")
            + " framework/dtype/family combinations (logits up to 10^4 times a "
            f"standard normal, or shifted by 10^4), and PyTorch's `F.cross_entropy` stays within "
            f"{g(torch_worst, 3)} ulp in every dtype."
        ),
        "naive": (
            f"**Softmax, then log, breaks on ordinary logits.** In float16 `naive` returns inf once the "
            f"log-sum-exp reaches {_at(naive16)} ({naive16.theory_cause}; theory: "
            f"{g(naive16.theory_threshold, 5)}), and `softmax_log` once the loss reaches {_at(sl16)} "
            f"({sl16.theory_cause}); in float32 at a loss of {_at(sl32)}, in float64 at {_at(sl64)} (PyTorch)."
        ),
        "flush": (
            f"**JAX flushes subnormals on the CPU**, so its `softmax_log` breaks at a loss of {_at(jax32)} in "
            f"float32 (theory: -ln(smallest normal) = {g(jax32.theory_threshold)}), not at "
            f"{g(sl32.theory_threshold, 5)}."
        ),
        "offset": (
            "**A common shift costs some fused losses a thousand ulps.** With logits near 10^4 (family "
            "`offset`), SciPy's `logsumexp(x) - x[y]` and optax's fused loss are off by "
            + (
                f"{g(offset['numpy'], 4)} ulps each"
                if g(offset["numpy"], 4) == g(offset["jax"], 4)
                else f"{g(offset['numpy'], 4)} and {g(offset['jax'], 4)} ulps"
            )
            + f" in float32 (cancellation in `lse(x) - x[y]`), PyTorch's `F.cross_entropy` by {g(offset['torch'], 3)}."
        ),
        "mlx": (
            f"**MLX computes every `exp` in float32**: its float64 losses are off by up to {g(mlx64, 3)} ulps "
            f"even on `log_softmax_nll` and `fused`."
        ),
        "theory": (
            f"{agree} of the {len(b)} framework/path/dtype/family combinations break where theory puts them (a "
            f"threshold within 1% of the measured break, at the facts each backend measures); the other "
            f"{len(apart)} are "
            + " and ".join(f"{NAMES[r.framework]}'s `{r.path}` in {r.dtype} ({r.family})" for r in apart.itertuples())
            + ", explained by a measured flush of the division."
        ),
    }


def training(t: dict[str, pd.DataFrame]) -> dict[str, str]:
    e = t["training_losses"]
    smooth = e[
        (e.dtype == "float16")
        & (e.label_smoothing == 0.1)
        & (e.ignore_fraction == 0)
        & (e.z_loss == 0)
        & (e.target == "index")
    ]
    broken = smooth[smooth.status == "inf"]
    exact = float(smooth.max_exact_loss.iloc[0])
    worst_ok = _worst(smooth)
    f32 = e[e.dtype == "float32"]
    mlx = f32[f32.framework == "mlx"].max_ulp_err
    grads = t["training_gradients"]
    numpy = grads[grads.framework == "numpy"]
    worst = numpy.groupby("dtype").max_row_rel_err.max()
    dense = numpy[numpy.dtype == "bfloat16"].sort_values("max_row_rel_err").iloc[-1].target == "dense"
    return {
        "mlx32": (
            f"MLX's float32 mean is {g(mlx.min(), 3)} to {g(mlx.max(), 3)} ulps off in every option set (its float32 "
            f"reductions drift), where the other frameworks stay within "
            f"{g(f32[f32.framework != 'mlx'].max_ulp_err.max(), 3)} ulps."
        ),
        "numpy_gradients": (
            f"NumPy's option gradients, written by hand (the reverse sweep of the composed loss), are within "
            f"{g(worst['float32'], 3)} of each row's largest entry in float32 and {g(worst['float16'], 3)} in "
            f"float16 in every option set; in bfloat16 up to {g(worst['bfloat16'], 3)}"
            + (" (with dense targets: SciPy's log_softmax sums 32000 exponentials in bfloat16)." if dense else ".")
        ),
        "smoothing": (
            "**Label smoothing overflows in float16.** On 256 x 32000 logits "
            + listing(f"{NAMES[f]}'s" for f in sorted(broken.framework, key=list(NAMES).index))
            + f" smoothed cross-entropy return inf where the exact mean is {g(exact, 3)}: the smoothing term sums "
            f"-log p_j over 32000 classes in float16, past 65504; the others stay within {g(worst_ok, 2)} ulps."
        ),
    }


def tokens(t: dict[str, pd.DataFrame]) -> dict[str, str]:
    e = t["token_sweep"]
    mean16 = e[(e.dtype == "float16") & (e.reduction == "mean")]
    torch = mean16[mean16.framework == "torch"].sort_values("n_rows")
    bad = torch[~torch.status.isin(GOOD)]
    last_good = torch[torch.n_rows < bad.n_rows.min()].iloc[-1]
    composed = sorted(set(mean16[mean16.n_rows >= bad.n_rows.min()].framework) - {"torch"}, key=list(NAMES).index)
    same = all(
        (~mean16[(mean16.framework == f) & (mean16.n_rows >= bad.n_rows.min())].status.isin(GOOD)).all()
        for f in composed
    )
    bf16 = _worst(e[e.dtype == "bfloat16"])
    f32 = e[(e.dtype == "float32") & (e.reduction == "sum")]
    mlx = f32[f32.framework == "mlx"].set_index("n_rows").max_ulp_err
    others = f32[f32.framework != "mlx"]
    return {
        "mlx_drift": (
            "MLX's float32 sum drifts with the row count: "
            + ", ".join(f"{g(mlx[n], 3)} ulps at {n:,} rows" for n in sorted(mlx.index) if n >= 10_000 and n % 10 == 0)
            + f", where {listing(NAMES[f] for f in sorted(set(others.framework), key=list(NAMES).index))} stay "
            f"within {g(others.max_ulp_err.max(), 3)}."
        ),
        "tokens": (
            f"**A float16 mean over many tokens is not finite.** PyTorch's `F.cross_entropy(reduction='mean')` of "
            f"ordinary losses (about ln 16) is {bad.status.iloc[0].replace('nan', 'NaN')} from "
            f"{int(bad.n_rows.min()):,} rows (at "
            f"{int(last_good.n_rows):,} it is {g(last_good.max_ulp_err, 3)} ulp off)"
            + (
                f", and so is the mean composed as sum / count in float16 (the harness's composition for "
                f"{listing(NAMES[f] for f in composed)})"
                if same and composed
                else ""
            )
            + f"; every bfloat16 mean and sum stays within {g(bf16, 2)} ulps up to {int(e.n_rows.max()):,} rows."
        ),
    }


def edges(t: dict[str, pd.DataFrame]) -> dict[str, str]:
    e = t["edge_cases"]
    mlx = e[(e.case == "label_n_classes") & (e.framework == "mlx") & (e.dtype == "float32")]
    by_path = {r.path: float(r.loss) for r in mlx.itertuples()}
    fused, others = by_path.pop("fused"), sorted(set(g(v, 5) for v in by_path.values()))
    case = e[(e.case == "label_n_classes") & (e.dtype == "float32")]
    outcomes = case.groupby("framework").loss_outcome.agg(lambda o: "/".join(sorted(set(o))))
    named = lambda outcome: listing(NAMES[f] for f in NAMES if outcomes.get(f) == outcome)  # noqa: E731
    tf = case[(case.framework == "tensorflow") & (case.other_rows_grad == "wrong")]
    return {
        "labels": (
            f"**An out-of-range label can pass silently.** For label = n_classes MLX returns a number read from the "
            f"next row ({g(fused, 5)} from `fused`, {', '.join(others)} from the other paths in float32), "
            f"{named('nan')} returns NaN, {named('error')} raise"
            + (
                "; TensorFlow's " + ", ".join(f"`{p}`" for p in sorted(set(tf.path))) + " gradient puts the -1 into "
                "the next row."
                if len(tf)
                else "."
            )
        ),
    }


def render(t: dict[str, pd.DataFrame]) -> dict[str, str]:
    """Every block, by name: `headline` for the README, one per study for the findings page."""
    s = {**precision(t), **training(t), **tokens(t), **edges(t)}
    bullets = lambda keys: "\n".join(f"- {s[k]}" for k in keys)  # noqa: E731
    return {
        "headline": bullets(["use", "naive", "offset", "flush", "mlx", "smoothing", "tokens", "labels"]),
        "precision_sweep": bullets(["use", "naive", "flush", "theory", "offset", "mlx"]),
        "training_losses": bullets(["smoothing", "mlx32", "numpy_gradients"]),
        "token_sweep": bullets(["tokens", "mlx_drift"]),
        "edge_cases": bullets(["labels"]),
    } | loss_findings.render(t, g)


BLOCK = re.compile(r"(<!-- findings:(\w+) -->\n)(.*?)(<!-- /findings:\2 -->)", re.S)


def blocks(text: str) -> dict[str, str]:
    """The findings blocks of a page, by name, as written."""
    return {m.group(2): m.group(3).rstrip("\n") for m in BLOCK.finditer(text)}


def rewrite(text: str, rendered: dict[str, str]) -> str:
    return BLOCK.sub(lambda m: m.group(1) + rendered[m.group(2)] + "\n" + m.group(4), text)


def snapshot(runs: Path) -> None:
    """docs/data/ from the run folders under `runs`, and the figure."""
    DATA.mkdir(parents=True, exist_ok=True)
    for name, (table, columns, _) in STUDIES.items():
        run = runs / EXPERIMENT.get(name, name)
        frame = pd.read_parquet(run / f"{table}.parquet")
        frame[list(columns)].to_csv(DATA / f"{name}.csv", index=False)
    environment = json.loads((runs / "precision_sweep" / "environment.json").read_text())
    facts = {k: environment[k] for k in ("python", "packages", "cpu")}
    (DATA / "environment.json").write_text(json.dumps(facts, indent=1) + "\n")
    shutil.copyfile(runs / "precision_sweep" / "plots" / "error_vs_scale_spread.png", FIGURE)


def run_studies(runs: Path) -> None:
    done = set()
    for name, (_, _, overrides) in STUDIES.items():
        experiment = EXPERIMENT.get(name, name)
        if experiment in done:
            continue
        done.add(experiment)
        shutil.rmtree(runs / experiment, ignore_errors=True)  # a fresh run, not a refused one into an old folder
        command = [sys.executable, "-m", "harness", f"experiment={experiment}", f"hydra.run.dir={runs / experiment}"]
        subprocess.run([*command, "progress=false", *overrides], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="?", type=Path, default=REPO / "results" / "findings")
    parser.add_argument("--run", action="store_true", help="run the studies into RUNS first")
    args = parser.parse_args(argv)
    if args.run:
        run_studies(args.runs)
    snapshot(args.runs)
    rendered = render(load())
    for page in TARGETS:
        page.write_text(rewrite(page.read_text(), rendered))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
