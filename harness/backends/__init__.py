"""Backends: everything the harness knows about one framework, one module per framework.

A backend module (`harness.backends.<name>`) holds: the packages it needs and the pip line that
installs them; bit-exact transfer to and from NumPy (`to_native`, `to_numpy`, bfloat16 included);
device placement (`check_device`) and `sync`; compiling (`compile`, `compile_gradient`,
`clear_compile_cache`, `COMPILES`) and autodiff (`autodiff_gradient`); `release_memory`; the scope a
dtype runs in (`dtype_scope`: JAX's x64 only for float64); thread control for timing (`threads`,
`request_threads`); the facts theory uses, measured on the running device (`flushes_subnormals`, its
own `exp`'s range and whether a division flushes); `device_names` and `versions`; and two flags of
the head stage (`RECOMPILES_PER_THREAD_COUNT`: torch.compile; `OPS_ON_ONE_THREAD`: MLX).

This package's own module imports no framework: it only names them, so a missing framework is a
one-line error before any work, never an ImportError mid-sweep. Outside the backends and the
per-framework path implementations (`harness/paths/<name>_paths.py`) no module imports a framework.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from harness.errors import ConfigError
from harness.package import install_line


@dataclass(frozen=True)
class Framework:
    """A framework the harness can sweep: its backend module, the packages it needs, how to install them."""

    name: str
    packages: tuple[str, ...]  # import names that must be present
    install: str  # the pip line that installs what is missing
    order: int  # its place in tables and lists

    @property
    def module(self) -> str:
        return f"harness.backends.{self.name}"


DECLARED = {"PACKAGES": "packages", "INSTALL": "install", "ORDER": "order"}


def declared(path: Path) -> dict:
    """A backend module's PACKAGES, INSTALL and ORDER, read from its source without importing it (importing
    it imports the framework, which may be missing)."""
    found = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in DECLARED:
                found[DECLARED[name]] = ast.literal_eval(node.value)
    missing = sorted(set(DECLARED.values()) - set(found))
    if missing:
        raise RuntimeError(f"backend {path.name} does not declare {', '.join(missing)}")
    return found


def discover() -> dict[str, Framework]:
    """Every backend module beside this file, in ORDER: adding a framework is adding its module."""
    specs = [
        Framework(path.stem, **declared(path))
        for path in Path(__file__).parent.glob("*.py")
        if not path.name.startswith("_")
    ]
    return {spec.name: spec for spec in sorted(specs, key=lambda spec: spec.order)}


FRAMEWORKS: dict[str, Framework] = discover()
DEVICES = ("cpu", "cuda")


def missing_packages(framework: str) -> list[str]:
    return [p for p in FRAMEWORKS[framework].packages if importlib.util.find_spec(p) is None]


def check_available(frameworks) -> None:
    """One line naming an unknown framework or the packages a known one lacks, and how to install them."""
    for name in frameworks:
        if name not in FRAMEWORKS:
            raise ConfigError(f"unknown framework {name!r}; valid choices: {', '.join(FRAMEWORKS)}")
        missing = missing_packages(name)
        if missing:
            raise ConfigError(
                f"framework {name!r} needs {', '.join(missing)}, which is not installed; "
                f"install it with: {install_line(name, FRAMEWORKS[name].install)}"
            )


def load(framework: str) -> ModuleType:
    """The framework's backend module (imports the framework)."""
    return importlib.import_module(FRAMEWORKS[framework].module)


def check_device(device: str, frameworks) -> None:
    """Fail before any work when the device is unknown or absent for a framework that would use it."""
    if device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; valid choices: {', '.join(DEVICES)}")
    if device == "cpu":
        return
    for name in frameworks:  # CPU-only frameworks run their rows on the CPU (row_device)
        backend = load(name)
        if device in backend.DEVICES:
            backend.check_device(device)


def native_arrays(backend, arrays: dict, device: str = "cpu") -> dict:
    """A loss's named input arrays (its entry's `arrays`: cross-entropy's logits and labels, a float
    targets array, two logit matrices) handed to a backend by name, each with the same bits and its
    own kind: floats stay floats in their dtype, integer arrays become the backend's class indices."""
    return {name: backend.transfer(np.asarray(array), device) for name, array in arrays.items()}


def row_device(framework: str, device: str) -> str:
    """The device a framework's rows run on: NumPy (and any CPU-only framework) always the CPU."""
    return device if device in load(framework).DEVICES else "cpu"


def facts(frameworks, device: str, dtypes) -> dict:
    """What environment.json records of each framework: versions, how it compiles, and whether it
    flushes subnormal results to zero per dtype (measured now, on the device it runs on)."""
    record = {}
    for name in frameworks:
        backend = load(name)
        on = row_device(name, device)
        record[name] = {
            "versions": backend.versions(),
            "device": on,
            "compiled": backend.COMPILE_NOTE,
            "flushes_subnormals": {dtype: backend.flushes_subnormals(dtype, on) for dtype in dtypes},
            "exp_dtype": {dtype: exp_dtype(name, dtype, on) for dtype in dtypes},
            "exp_overflow": {dtype: exp_overflow(name, dtype, on) for dtype in dtypes},
            "exp_underflow": {dtype: exp_underflow(name, dtype, on) for dtype in dtypes},
            "quotient_flushes": {dtype: quotient_flushes(name, dtype, on) for dtype in dtypes},
        }
    return record


@functools.cache
def _exp_sample(framework: str, dtype: str, device: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points, the framework's exp of them, exact exp) for 64 points in [-10, 10] rounded to dtype,
    plus ln(float32's largest finite) + 1 = 89.72 for float32 and float64, where a float32 exp overflows.
    Exact values by mpmath at 80 bits."""
    import mpmath

    points = np.linspace(-10.0, 10.0, 64)
    if dtype in ("float32", "float64"):
        points = np.append(points, 89.72)
    rounded, values = _exp_of(framework, dtype, device, points)
    with mpmath.workprec(80):
        exact = np.array([float(mpmath.exp(mpmath.mpf(float(v)))) for v in rounded])
    return rounded, values, exact


@functools.cache
def exp_dtype(framework: str, dtype: str, device: str = "cpu") -> str:
    """The dtype whose accuracy and range the framework's exp has for `dtype` inputs, measured: `dtype`
    itself where exp is accurate to 16 of its ulps and overflows where it should, else float32 where
    that explains both (MLX computes every exp in float32: float64 exp has float32's accuracy and
    range, overflowing past 88.72)."""
    from harness.dtypes import DTYPES

    _, values, exact = _exp_sample(framework, dtype, device)
    for name in dict.fromkeys((dtype, "float32")):  # the dtype itself, else float32 (a common internal type)
        fmt = DTYPES[name]
        within_range = exact <= fmt.max_finite
        relative = np.abs(values[within_range] - exact[within_range]) / exact[within_range]
        overflows_like_it = np.array_equal(np.isinf(values), ~within_range)
        if overflows_like_it and np.all(relative <= 16 * fmt.unit_roundoff):
            return name
    return dtype  # float32 does not explain it either: report the dtype itself


@functools.cache
def exp_error_ulps(framework: str, dtype: str, device: str = "cpu") -> float:
    """The framework's largest exp error on the sample, in ulps of `exp_dtype` at the exact value."""
    from harness.dtypes import DTYPES, round_to

    fmt = DTYPES[exp_dtype(framework, dtype, device)]
    _, values, exact = _exp_sample(framework, dtype, device)
    finite = np.isfinite(values) & (exact <= fmt.max_finite)
    spacing = np.abs(np.spacing(round_to(exact[finite], fmt.name).astype(fmt.numpy_type)).astype(np.float64))
    return float((np.abs(values[finite] - exact[finite]) / spacing).max())


def _exp_of(framework: str, dtype: str, device: str, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(points rounded to dtype, as float64; the framework's exp of them, as float64)."""
    from harness.dtypes import round_to

    rounded = round_to(np.asarray(points, dtype=np.float64), dtype)  # in the dtype's NumPy type
    backend = load(framework)
    with backend.dtype_scope(dtype):
        native = backend.transfer(rounded[None, :], device)
        with np.errstate(over="ignore", under="ignore"):  # float64 inputs reach JAX only in float64's scope
            values, _ = backend.to_numpy(backend.exp(native))
    return rounded.astype(np.float64), np.asarray(values[0], dtype=np.float64)


def _edge(framework: str, dtype: str, device: str, sign: float, broken) -> float:
    """The input of largest magnitude on the `sign` side whose exp is not `broken` (inf, or 0), found on
    a geometric grid out to 1.05 times the dtype's own threshold, then narrowed on linear grids."""
    from harness.dtypes import DTYPES

    fmt = DTYPES[dtype]
    far = 1.05 * (fmt.exp_overflow_threshold if sign > 0 else fmt.exp_underflow_threshold)
    points = sign * np.geomspace(1.0, far, 4096)
    for _ in range(3):
        x, values = _exp_of(framework, dtype, device, points)
        bad = broken(values)
        if not bad.any():
            return float(x[-1])  # never breaks within the dtype's range: its last point
        first = int(np.argmax(bad))
        if first == 0:
            return float("nan")
        points = np.linspace(x[first - 1], x[first], 4096)
    return float(x[first - 1])


@functools.cache
def exp_overflow(framework: str, dtype: str, device: str = "cpu") -> float:
    """The largest input (in the dtype) whose exp the framework returns finite, measured: exp(x) is inf
    for x above it. ln(largest finite + half an ulp) rounded down where exp is correctly rounded
    (88.7228 for float32); 88.0 for every MLX dtype wider than float16, whose exp is a float32
    polynomial that returns inf from x = 88.0 on (float64 included)."""
    return _edge(framework, dtype, device, 1.0, np.isinf)


@functools.cache
def exp_underflow(framework: str, dtype: str, device: str = "cpu") -> float:
    """-x for the most negative input x (in the dtype) whose exp the framework returns nonzero, measured:
    exp(-t) is 0 for t above it, so a probability exp(-loss) made by the exp is 0 past this loss.
    -ln(smallest subnormal / 2) where exp keeps subnormals (103.97 for float32), -ln(smallest normal)
    where it flushes them (87.34), 87.683 for MLX's float32-polynomial exp in float32 and float64."""
    return -_edge(framework, dtype, device, -1.0, lambda v: v == 0)


@functools.cache
def quotient_flushes(framework: str, dtype: str, device: str = "cpu") -> bool:
    """Whether the framework's division returns 0 for a subnormal quotient, measured: smallest normal / 4.
    A probability made as a quotient exp(x_y) / sum(exp(x)) underflows at -ln(smallest normal) if so,
    else at gradual underflow's -ln(smallest subnormal / 2), whatever its exp does (MLX's exp returns 0
    below -87.683 in float32, its division keeps subnormals)."""
    from harness.dtypes import DTYPES

    fmt = DTYPES[dtype]
    backend = load(framework)
    with backend.dtype_scope(dtype):
        normal = backend.transfer(np.array([[fmt.smallest_normal]], dtype=fmt.numpy_type), device)
        four = backend.transfer(np.array([[4.0]], dtype=fmt.numpy_type), device)
        quarter, _ = backend.to_numpy(normal / four)
    return bool(np.asarray(quarter, dtype=np.float64).ravel()[0] == 0)
