"""Run one experiment under several versions of one or more packages and lay the results side by side.

    python -m harness.tools.matrix experiment=precision_sweep frameworks=[jax] --versions optax==0.2.5,0.2.8
    python -m harness.tools.matrix --resume results/matrix_2026-12-07_03-40-00

Each --versions NAME==V1,V2,... gives one version set per version; several specs are zipped (as many
versions each), and a spec with one version holds in every set (e.g. --versions scipy==1.14.1,1.15.3
numpy==2.2.6). A companion released with the same number is named with its package unless named itself
(jaxlib with jax). Every other package keeps the version of the environment running the matrix.

The sets are checked first (harness.tools.matrix_sets). Each set then gets a cached environment
(harness.tools.matrix_envs) and one run of the experiment with the same overrides into
OUT/<version set>/, one set after another, so timings never share cores. A framework
that does not import in a set's environment is left out of that run; its cells are rows with status
unsupported and the import error. An interrupted matrix resumes with --resume OUT: finished sets are
kept, an unfinished run resumes as a run does (resume=true), the rest run.

Writes into OUT (default results/matrix_<timestamp>): matrix.parquet/.csv (one row per cell and version
set: status, max and median ulp error, non-finite rows, the breakdown's break scales), changes.csv and
changes.md (cells whose status changed or whose error moved beyond harness.tools.compare's tolerances
between consecutive sets, regressions first, largest first), plots/error_vs_scale_<framework>_<path>_
<dtype>.png per changed combination, sets.csv (each set's versions as imported, its environment and
cost) and report.md, which leads with the changes.

Bad input fails before any environment is built, in one line on stderr, exit status 2: a malformed
--versions, a bad experiment override, an unknown package, a package the experiment does not use, a
version the index does not have, a set that does not resolve. Exit status otherwise as compare's: 0
when nothing regressed, 1 when something did.
"""

from __future__ import annotations

import argparse
import codecs
import datetime
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from harness.cli import OneLineParser, non_negative
from harness.errors import ConfigError
from harness.files import write_text
from harness.tools import compare, matrix_envs, matrix_sets, matrix_tables
from harness.tools.matrix_sets import BadInput, Sources, VersionSet

REQUEST = "matrix.json"
RUN_STDERR = "matrix_run_stderr.txt"  # a failed run's stderr, in its folder
FRAMEWORKS_KEY = "frameworks="


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m harness.tools.matrix", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="the experiment, as for python -m harness")
    p.add_argument("--versions", nargs="+", action="extend", default=[], metavar="NAME==V1,V2", help="version sets")
    p.add_argument("--out", type=Path, metavar="DIR", help="matrix folder (default results/matrix_<timestamp>)")
    p.add_argument("--resume", type=Path, metavar="DIR", help="finish the matrix in DIR (its request is stored there)")
    p.add_argument("--env-cache", type=Path, metavar="DIR", help="environment cache (default ~/.cache/harness/envs)")
    p.add_argument("--index-url", metavar="URL", help="package index, passed to pip and uv (e.g. PyTorch's CPU index)")
    p.add_argument("--extra-index-url", action="append", default=[], metavar="URL", help="another index")
    p.add_argument("--find-links", action="append", default=[], metavar="DIR_OR_URL", help="a folder of wheels")
    p.add_argument("--installer", choices=("auto", "uv", "pip"), default="auto", help="auto: uv where on PATH")
    p.add_argument(
        "--ulp-tolerance", type=non_negative, default=compare.DEFAULT_ULP_TOLERANCE, metavar="X", help="as compare's"
    )
    p.add_argument(
        "--rel-tolerance", type=non_negative, default=compare.DEFAULT_REL_TOLERANCE, metavar="R", help="as compare's"
    )
    return p


def request_of(args: argparse.Namespace) -> dict:
    """What the matrix is: stored in OUT/matrix.json, so --resume needs nothing else."""
    return {
        "overrides": list(args.overrides),
        "versions": list(args.versions),
        "index_url": args.index_url,
        "extra_index_urls": list(args.extra_index_url),
        "find_links": list(args.find_links),
        "rel_tolerance": args.rel_tolerance,
        "ulp_tolerance": args.ulp_tolerance,
    }


def stored_request(args: argparse.Namespace) -> dict:
    """The resumed matrix's request; the command may repeat it, but not change it."""
    path = args.resume / REQUEST
    if not path.is_file():
        raise BadInput(f"--resume {args.resume}: no {REQUEST} there (not a matrix folder)")
    stored = json.loads(path.read_text())
    given = request_of(args)
    defaults = request_of(parser().parse_args([]))
    changed = [k for k in given if given[k] != defaults[k] and given[k] != stored.get(k)]
    if changed:
        raise BadInput(f"--resume {args.resume}: the command changes the stored matrix's {', '.join(changed)}")
    return stored


RESERVED = ("hydra.run.dir", "hydra.sweep", "resume")  # the matrix sets these for each run


def experiment_settings(overrides: list[str]):
    """The validated settings of the experiment (ConfigError for a bad override), and its name."""
    from harness import api

    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if key.startswith(RESERVED) or override.startswith("-"):
            raise BadInput(
                f"{override!r}: the matrix runs each set into OUT/<version set>/ and resumes it itself; "
                "give the experiment's settings only (resume a matrix with --resume OUT)"
            )

    job, experiment = api.settings_of(api.compose_config(overrides))
    sweep, _ = api.prepare(job, experiment)
    return sweep, experiment


def run_overrides(overrides: list[str], frameworks: list[str], all_frameworks) -> list[str]:
    """The experiment's overrides, with frameworks= narrowed where some did not import."""
    if list(frameworks) == list(all_frameworks):
        return list(overrides)
    kept = [o for o in overrides if not o.lstrip("+~").startswith(FRAMEWORKS_KEY)]
    return kept + [f"frameworks=[{','.join(frameworks)}]"]


def run_set(env: matrix_envs.Environment, overrides: list[str], run_dir: Path) -> tuple[str, float]:
    """The experiment in the environment into run_dir: fresh, resumed, or kept when it finished."""
    if (run_dir / compare.ERRORS_FILE).is_file():
        return "kept", 0.0
    from harness.sweep.run_dir import holds_run

    resume = ["resume=true"] if holds_run(run_dir) else []
    command = [str(env.python), "-m", "harness", *overrides, f"hydra.run.dir={run_dir.resolve()}", *resume]
    start = time.perf_counter()
    returncode, stderr = run_showing_stderr(command)
    seconds = time.perf_counter() - start
    if returncode == 130:
        raise KeyboardInterrupt
    if returncode != 0:
        write_text(stderr, run_dir / RUN_STDERR)
        return f"failed: {failure_line(stderr)}", seconds
    return ("resumed" if resume else "ran"), seconds


def run_showing_stderr(command: list[str], kept: int = 1 << 16) -> tuple[int, str]:
    """Run, passing the run's stderr (its progress bar, its errors) through as it comes; (exit status, the
    last `kept` characters of that stderr). Its stdout, the summary also in its folder, is not shown."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    tail = ""
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as process:
        for chunk in iter(lambda: process.stderr.read1(1 << 16), b""):
            text = decoder.decode(chunk)
            sys.stderr.write(text)
            sys.stderr.flush()
            tail = (tail + text)[-kept:]
    return process.returncode, tail


def failure_line(stderr: str) -> str:
    """The line of a failed run's stderr that says why: its error line, else its last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith("Set the environ")]
    told = [line for line in lines if line.startswith("error: ") or re.match(r"^[A-Za-z_.]*(Error|Exception)\b", line)]
    return (told or lines or ["no message"])[-1][:300]


def prepare_sets(request: dict, tool: str) -> tuple[list[VersionSet], Sources, object, str]:
    """Every check before any environment is built, in the order a user fixes them."""
    sets = matrix_sets.parse_versions(request["versions"]) if request["versions"] else None
    if sets is None:
        raise BadInput("no --versions given: name a package and its versions, e.g. --versions optax==0.2.5,0.2.8")
    try:
        sweep, experiment = experiment_settings(request["overrides"])
    except ConfigError as exc:
        raise BadInput(str(exc)) from None
    links = tuple(request["find_links"]) + (matrix_sets.pip_find_links() if tool == "uv" else ())
    sources = Sources(request["index_url"], tuple(request["extra_index_urls"]), tuple(dict.fromkeys(links)))
    matrix_sets.check_used(sets, matrix_sets.used_packages(sweep.frameworks), sources, experiment)
    matrix_sets.check_on_index(sets, sources)
    return sets, sources, sweep, experiment


def run_one(vset: VersionSet, request: dict, pins: list[str], sweep, out: Path, setup) -> tuple[dict, dict]:
    """One version set: its environment, what imports there, its run. (its row of sets.csv, the frameworks
    that did not import with why)."""
    sources, cache, tool = setup
    env = matrix_envs.build(vset, pins, sources, cache, tool)
    print(f"{vset.label}: environment {env.path} ({'built' if env.created else 'cached'}, {env.seconds:.1f} s)")
    start = time.perf_counter()
    found = matrix_envs.probe(env, vset, sweep.frameworks, Path.cwd())
    probe_seconds = time.perf_counter() - start
    failed = {f: why for f, why in found["frameworks"].items() if why}
    named = " ".join(vset.requirement_lines())
    runnable = [f for f in sweep.frameworks if f not in failed]
    outcome, seconds = "not run (no framework imports)", 0.0
    if runnable:
        overrides = run_overrides(request["overrides"], runnable, sweep.frameworks)
        outcome, seconds = run_set(env, overrides, out / vset.label)
    print(f"{vset.label}: run {outcome} ({seconds:.1f} s)")
    row = dict(
        version_set=vset.label,
        named=named,
        imports=", ".join(f"{n} {v['version']}" for n, v in found["packages"].items()),
        env=env.path.name,
        env_pins=" ".join(env.pins),
        env_created=env.created,
        env_seconds=round(env.seconds, 2),
        installer=tool,
        probe_seconds=round(probe_seconds, 2),
        outcome=outcome,
        run_seconds=round(seconds, 2),
        unsupported_frameworks=", ".join(failed) or "-",
    )
    reasons = {f: f"does not import with {named}: {why}" for f, why in failed.items()}
    if outcome.startswith("failed"):
        reasons[matrix_tables.RUN_FAILED] = outcome.removeprefix("failed: ")
    return row, reasons


def command_line(request: dict) -> str:
    words = request["overrides"] + ["--versions", *request["versions"]]
    if request["index_url"]:
        words += ["--index-url", request["index_url"]]
    for option, key in (("--extra-index-url", "extra_index_urls"), ("--find-links", "find_links")):
        for value in request[key]:
            words += [option, value]
    return "python -m harness.tools.matrix " + shlex.join(words)


def run_matrix(request: dict, out: Path, cache: Path, tool: str) -> int:
    start = time.perf_counter()
    sets, sources, sweep, _ = prepare_sets(request, tool)
    checked = time.perf_counter()
    resolved = {vset.label: matrix_envs.resolve(vset, sources, tool, cache) for vset in sets}
    pins = {vset.label: matrix_envs.overlay_pins(resolved[vset.label], vset) for vset in sets}
    print(f"checks {checked - start:.1f} s, resolution {time.perf_counter() - checked:.1f} s ({tool})")
    out.mkdir(parents=True, exist_ok=True)
    write_text(json.dumps(request, indent=1) + "\n", out / REQUEST)
    rows, reasons = [], {}
    for vset in sets:
        row, reasons[vset.label] = run_one(vset, request, pins[vset.label], sweep, out, (sources, cache, tool))
        rows.append(row)
    tolerances = (request["rel_tolerance"], request["ulp_tolerance"])
    labels = [vset.label for vset in sets]
    regressed = matrix_tables.write_outputs(out, labels, reasons, pd.DataFrame(rows), tolerances, command_line(request))
    print((out / "changes.md").read_text() + f"\nresults in {out} ({time.perf_counter() - start:.0f} s in all)")
    return 1 if regressed else 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_intermixed_args(argv)
    tool = matrix_envs.installer() if args.installer == "auto" else args.installer
    out = args.resume or args.out or Path("results") / datetime.datetime.now().strftime("matrix_%Y-%m-%d_%H-%M-%S")
    try:
        if args.resume:
            request = stored_request(args)
        elif (out / REQUEST).is_file():
            raise BadInput(f"{out} already holds a matrix; finish it with --resume {out}, or choose another --out")
        else:
            request = request_of(args)
        return run_matrix(request, out, args.env_cache or matrix_envs.default_cache(), tool)
    except (BadInput, compare.BadInput) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: finished version sets are kept; resume with --resume {out}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
