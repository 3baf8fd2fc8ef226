"""Real logits and labels read from a file: .npy, .npz, .pt/.pth or .mat, never through pickle.

A file holds either one unnamed array (.npy, or a .pt of a bare tensor) or named arrays (.npz, a .pt
dict of tensors, .mat variables). Named arrays are picked by `logits_key` and `labels_key`. A file of
one array can only hold the logits, so its labels come from a second file, `labels_path` (any of the
same formats; `labels_key` then names the array in that file). Labels are required: a loss needs a
target, and a guessed default would hide a misconfigured run.

`class_axis` says which axis of the stored logits runs over classes (0 where each column is one
logit vector, as in Blanchard, Higham & Higham 2021), and `label_base` what the first class is
called (1 for MATLAB-style labels). Every problem is a `ConfigError` with one line naming it.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from harness.errors import ConfigError

SUFFIXES = (".mat", ".npy", ".npz", ".pt", ".pth")

Contents = np.ndarray | Mapping  # one unnamed array, or arrays by name
PathLike = str | os.PathLike


def _error(message: str) -> ConfigError:
    return ConfigError(message)


def _refused(path) -> ValueError:
    return _error(f"refused: {path} needs pickle to load; save plain arrays (np.save / torch.save of tensors)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _checked_path(path: PathLike, role: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise _error(f"{role} file not found: {path}")
    if not p.is_file():
        raise _error(f"{role} path is not a file: {path}")
    if p.suffix.lower() not in SUFFIXES:
        raise _error(f"unknown {role} file type {p.suffix or '(none)'!r} for {path}; valid: {', '.join(SUFFIXES)}")
    return p


def file_digest(path: PathLike) -> str:
    """sha256 (hex) of a file's bytes, so a run records exactly which file it read."""
    p = Path(path)
    if not p.is_file():
        raise _error(f"file not found: {path}")
    digest = hashlib.sha256()
    with p.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_numpy(path: Path) -> Contents:
    """An array (.npy) or the arrays by name (.npz); no file handle stays open."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return loaded
        with loaded:
            return _LazyNpz(path, loaded.files)
    except ValueError as exc:
        if "pickle" in str(exc):
            raise _refused(path) from exc
        raise _error(f"cannot read {path} as a NumPy file: {_first_line(exc)}") from exc
    except (OSError, EOFError) as exc:
        raise _error(f"cannot read {path} as a NumPy file: {_first_line(exc)}") from exc


class _LazyNpz(Mapping):
    """Arrays of an .npz by name, each read on access, so an unused array (even a pickled one) is never read."""

    def __init__(self, path: Path, names: list[str]):
        self._path, self._names = path, list(names)

    def __getitem__(self, name):
        if name not in self._names:
            raise KeyError(name)
        try:
            with np.load(self._path, allow_pickle=False) as npz:
                return npz[name]
        except ValueError as exc:
            if "pickle" in str(exc):
                raise _refused(self._path) from exc
            raise _error(f"cannot read {self._path} as a NumPy file: {_first_line(exc)}") from exc

    def __iter__(self):
        return iter(self._names)

    def __len__(self):
        return len(self._names)


def _read_torch(path: Path) -> Contents:
    """A .pt file through the torch backend (weights_only: never pickle)."""
    from harness.backends import torch as torch_backend

    try:
        loaded = torch_backend.read_pt(path)
    except pickle.UnpicklingError as exc:
        raise _refused(path) from exc
    except Exception as exc:  # torch raises many types for a file that is not a torch.save archive
        raise _error(f"cannot read {path} as a PyTorch file: {_first_line(exc)}") from exc
    if torch_backend.is_tensor(loaded):
        return torch_backend.tensor_to_numpy(loaded)
    if isinstance(loaded, dict):
        return loaded  # values are checked when picked
    raise _error(
        f"refused: {path} holds a {type(loaded).__name__}, not a tensor or a dict of tensors; "
        "save plain arrays (np.save / torch.save of tensors)"
    )


def _read_matlab(path: Path) -> Contents:
    import scipy.io
    from scipy.io.matlab import MatReadWarning

    try:
        with warnings.catch_warnings():
            # Blanchard et al.'s file holds several workspace objects named "None"; harmless.
            warnings.filterwarnings("ignore", message="Duplicate variable name", category=MatReadWarning)
            loaded = scipy.io.loadmat(path)
    except NotImplementedError as exc:  # MATLAB v7.3 files are HDF5
        raise _error(f"cannot read {path}: MATLAB v7.3 (HDF5) files are not supported; save with -v7") from exc
    except Exception as exc:
        raise _error(f"cannot read {path} as a MATLAB file: {_first_line(exc)}") from exc
    return {name: value for name, value in loaded.items() if not name.startswith("__")}


def read_contents(path: PathLike, role: str = "logits") -> Contents:
    """What a file holds, read safely: one unnamed array, or a mapping of arrays by name."""
    p = _checked_path(path, role)
    suffix = p.suffix.lower()
    if suffix in (".npy", ".npz"):
        return _read_numpy(p)
    if suffix in (".pt", ".pth"):
        return _read_torch(p)
    return _read_matlab(p)


def _describe(path, key) -> str:
    return str(path) if key is None else f"{path}[{key!r}]"


def pick_array(contents: Contents, key: str | None, setting: str, path: PathLike) -> np.ndarray:
    """The array named `key` (the value of `setting`) from a file's contents, as a NumPy array."""
    if isinstance(contents, np.ndarray):
        if key is not None:
            raise _error(f"{setting}={key!r} does not apply: {path} holds one unnamed array; leave {setting} unset")
        return contents
    names = ", ".join(sorted(str(name) for name in contents)) or "(nothing)"
    if key is None:
        raise _error(f"{setting} is not set; {path} holds named arrays, set it to one of: {names}")
    if key not in contents:
        raise _error(f"no array {key!r} ({setting}) in {path}; it holds: {names}")
    value = contents[key]
    if not isinstance(value, np.ndarray):
        from harness.backends import torch as torch_backend  # only a .pt file holds non-NumPy values

        if not torch_backend.is_tensor(value):
            raise _error(f"{_describe(path, key)} is a {type(value).__name__}, not an array")
        value = torch_backend.tensor_to_numpy(value)
    return value


def as_logits(array: np.ndarray, class_axis: int = -1, source: str = "the file") -> np.ndarray:
    """Stored logits as float64 (rows, classes): checked for type, shape and finiteness."""
    if (
        isinstance(class_axis, bool)
        or not isinstance(class_axis, (int, np.integer))
        or class_axis not in (0, 1, -1, -2)
    ):
        raise _error(f"class_axis must be 0 or 1 (-1 and -2 count from the end), got {class_axis!r}")
    if array.dtype.kind not in "iuf":
        raise _error(f"logits in {source} must be real numbers, got dtype {array.dtype}")
    if array.ndim != 2:
        raise _error(f"logits in {source} must be 2-D (rows, classes), got shape {array.shape}")
    logits = np.ascontiguousarray(np.moveaxis(array, class_axis, -1), dtype=np.float64)
    n_rows, n_classes = logits.shape
    if n_classes < 2:
        raise _error(
            f"logits in {source} have {n_classes} class(es) along class_axis={class_axis} "
            f"(stored shape {array.shape}); need at least 2; is class_axis right?"
        )
    if n_rows == 0:
        raise _error(f"logits in {source} have no rows (stored shape {array.shape})")
    bad = ~np.isfinite(logits)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise _error(
            f"logits in {source} have {int(bad.sum())} non-finite value(s); "
            f"the first is {logits[row, col]} at row {row}, class {col}"
        )
    return logits


def as_labels(
    array: np.ndarray, n_rows: int, n_classes: int, label_base: int = 0, source: str = "the file"
) -> np.ndarray:
    """Stored labels as 0-based int64 (rows,): squeezed to 1-D, whole, in range; never wrapped."""
    if isinstance(label_base, bool) or not isinstance(label_base, (int, np.integer)):
        raise _error(f"label_base must be an integer (0, or 1 for MATLAB-style labels), got {label_base!r}")
    if array.dtype.kind not in "iuf":
        raise _error(f"labels in {source} must be integers, got dtype {array.dtype}")
    if sum(size != 1 for size in array.shape) > 1:
        raise _error(f"labels in {source} must be 1-D, one per row, got shape {array.shape}")
    labels = array.reshape(-1)
    if labels.size != n_rows:
        hint = "; is class_axis right?" if labels.size == n_classes else ""
        raise _error(f"labels in {source}: {labels.size} labels for {n_rows} rows of logits{hint}")
    if labels.dtype.kind == "f":
        not_whole = ~np.isfinite(labels) | (labels != np.round(labels))
        if not_whole.any():
            row = int(np.argmax(not_whole))
            raise _error(
                f"labels in {source} must be whole numbers; the first that is not is {labels[row]} at row {row}"
            )
    low, high = int(label_base), int(label_base) + n_classes - 1
    outside = (labels < low) | (labels > high)
    if outside.any():
        row = int(np.argmax(outside))
        value = labels[row].item()
        value = int(value) if isinstance(value, float) else value
        raise _error(
            f"label {value} at row {row} in {source} is out of range: with label_base={label_base} "
            f"and {n_classes} classes, labels must be in {low}..{high}"
        )
    return labels.astype(np.int64) - low


def load_logits(
    path: PathLike,
    logits_key: str | None = None,
    labels_key: str | None = None,
    class_axis: int = -1,
    label_base: int = 0,
    labels_path: PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Logits float64 (rows, classes) and 0-based labels int64 (rows,) from `path` (and `labels_path`).

    Keys name arrays in files of named arrays and must be unset for a file of one array. Labels come
    from `labels_path` when given, otherwise from `path`, which then must hold named arrays.
    """
    contents = read_contents(path, "logits")
    logits_array = pick_array(contents, logits_key, "logits_key", path)
    logits = as_logits(logits_array, class_axis, _describe(path, logits_key))
    if labels_path is None:
        if isinstance(contents, np.ndarray):
            raise _error(f"no labels: {path} holds only the logits; set labels_path to a file that holds the labels")
        labels_path, labels_contents = path, contents
    else:
        labels_contents = read_contents(labels_path, "labels")
    labels_array = pick_array(labels_contents, labels_key, "labels_key", labels_path)
    labels = as_labels(labels_array, *logits.shape, label_base, _describe(labels_path, labels_key))
    return logits, labels


__all__ = ["SUFFIXES", "as_labels", "as_logits", "file_digest", "load_logits", "pick_array", "read_contents"]
