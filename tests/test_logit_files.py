"""Real logits from files: every format reads back exactly, every bad input fails in one clear line."""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from conftest import SEED_ROW

from harness.sweep.config import ConfigError
from harness.sweep.logit_files import as_labels, as_logits, file_digest, load_logits

BLANCHARD = Path(__file__).resolve().parents[2] / "shared" / "data" / "blanchard2021" / "data_presoftmax.mat"
BLANCHARD_SHA256 = "95aca71534ce593f808b5fa122fc201ad032e538a70bbdd34339ec2905c261d6"

LOGITS = np.array([SEED_ROW, [0.5, 0.25, -1.0], [1e3, -1e3, 0.0], [-7.0, 2.0, 2.0]])
LABELS = np.array([0, 1, 2, 1])


def _npy(tmp_path, name, array, **kwargs) -> Path:
    path = tmp_path / name
    np.save(path, array, **kwargs)
    return path


def _npz(tmp_path, **arrays) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


@contextmanager
def _raises(*words):
    """pytest.raises(ConfigError) whose one-line message holds every word (case-insensitive)."""
    with pytest.raises(ConfigError) as info:
        yield
    message = str(info.value)
    assert "\n" not in message, message
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"


# --- good inputs, every format ---


def test_npy_with_labels_from_a_second_npy(tmp_path):
    logits, labels = load_logits(
        _npy(tmp_path, "x.npy", LOGITS.astype(np.float32)), labels_path=_npy(tmp_path, "y.npy", LABELS)
    )
    assert logits.dtype == np.float64 and labels.dtype == np.int64
    np.testing.assert_array_equal(logits, LOGITS.astype(np.float32).astype(np.float64))
    np.testing.assert_array_equal(labels, LABELS)


def test_npz_with_keys(tmp_path):
    path = _npz(tmp_path, logits=LOGITS, targets=LABELS.astype(np.uint8), other=np.zeros(2))
    logits, labels = load_logits(path, logits_key="logits", labels_key="targets")
    np.testing.assert_array_equal(logits, LOGITS)
    np.testing.assert_array_equal(labels, LABELS)
    assert logits.flags.c_contiguous


def test_pt_dict_of_tensors_with_bfloat16_logits(tmp_path):
    path = tmp_path / "data.pt"
    torch.save({"logits": torch.tensor(LOGITS, dtype=torch.bfloat16), "labels": torch.tensor(LABELS)}, path)
    logits, labels = load_logits(path, logits_key="logits", labels_key="labels")
    expected = torch.tensor(LOGITS, dtype=torch.bfloat16).double().numpy()
    np.testing.assert_array_equal(logits, expected)
    np.testing.assert_array_equal(labels, LABELS)


def test_pt_bare_tensor_with_labels_path(tmp_path):
    path = tmp_path / "logits.pt"
    torch.save(torch.tensor(LOGITS), path)
    logits, labels = load_logits(path, labels_path=_npy(tmp_path, "y.npy", LABELS))
    np.testing.assert_array_equal(logits, LOGITS)
    np.testing.assert_array_equal(labels, LABELS)


def test_mat_column_layout_and_one_based_labels(tmp_path):
    """As in Blanchard et al.: one logit vector per column, labels 1-based in an (n, 1) int8 column."""
    path = tmp_path / "data.mat"
    scipy.io.savemat(path, {"softmat": LOGITS.T, "val_labs": (LABELS + 1).astype(np.int8)[:, None]})
    logits, labels = load_logits(path, logits_key="softmat", labels_key="val_labs", class_axis=0, label_base=1)
    assert logits.shape == (4, 3) and labels.shape == (4,)
    np.testing.assert_array_equal(logits, LOGITS)
    np.testing.assert_array_equal(labels, LABELS)


def test_whole_float_labels_and_a_row_of_labels_are_accepted():
    labels = as_labels(np.array([[1.0, 3.0, 2.0]]), n_rows=3, n_classes=3, label_base=1)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, [0, 2, 1])


def test_digest_is_sha256_of_the_bytes(tmp_path):
    path = _npy(tmp_path, "x.npy", LOGITS)
    assert file_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()


# --- bad inputs: one line naming the problem ---


def test_missing_file(tmp_path):
    with _raises("not found", "nope.npz"):
        load_logits(tmp_path / "nope.npz", logits_key="logits", labels_key="labels")
    with _raises("labels file not found", "y.npy"):
        load_logits(_npy(tmp_path, "x.npy", LOGITS), labels_path=tmp_path / "y.npy")


def test_unknown_extension_names_the_valid_ones(tmp_path):
    path = tmp_path / "logits.csv"
    path.write_text("1,2\n")
    with _raises("unknown", ".csv", ".npy", ".npz", ".pt", ".mat"):
        load_logits(path)


def test_missing_key_names_the_keys_present(tmp_path):
    path = _npz(tmp_path, logits=LOGITS, labels=LABELS)
    with _raises("'logit'", "logits_key", "labels, logits"):
        load_logits(path, logits_key="logit", labels_key="labels")
    with _raises("labels_key is not set", "labels, logits"):
        load_logits(path, logits_key="logits")


def test_mat_missing_key_lists_its_variables(tmp_path):
    path = tmp_path / "data.mat"
    scipy.io.savemat(path, {"softmat": LOGITS.T, "val_labs": LABELS[:, None]})
    with _raises("'labels'", "softmat, val_labs"):
        load_logits(path, logits_key="softmat", labels_key="labels", class_axis=0)


def test_a_single_array_file_has_no_keys_and_no_labels(tmp_path):
    path = _npy(tmp_path, "x.npy", LOGITS)
    with _raises("logits_key='logits'", "one unnamed array"):
        load_logits(path, logits_key="logits", labels_path=_npy(tmp_path, "y.npy", LABELS))
    with _raises("no labels", "labels_path"):
        load_logits(path)


@pytest.mark.parametrize(
    ("logits", "words"),
    [
        (np.zeros(5), ("2-D", "(5,)")),
        (np.zeros((2, 3, 4)), ("2-D", "(2, 3, 4)")),
        (np.zeros((4, 1)), ("at least 2", "class_axis")),
        (np.zeros((0, 3)), ("no rows",)),
        (np.array([["a", "b"], ["c", "d"]]), ("real numbers", "<U1")),
    ],
)
def test_bad_logits_shape_or_type(logits, words):
    with _raises(*words):
        as_logits(logits)


def test_bad_class_axis():
    with _raises("class_axis", "got 2"):
        as_logits(LOGITS, class_axis=2)


def test_non_finite_logits_say_how_many_and_where(tmp_path):
    logits = LOGITS.copy()
    logits[1, 2] = np.nan
    logits[3, 0] = np.inf
    path = _npz(tmp_path, logits=logits, labels=LABELS)
    with _raises("2 non-finite", "nan at row 1, class 2"):
        load_logits(path, logits_key="logits", labels_key="labels")


def test_labels_count_must_match_rows(tmp_path):
    path = _npz(tmp_path, logits=LOGITS, labels=LABELS[:3])
    with _raises("3 labels for 4 rows", "is class_axis right"):
        load_logits(path, logits_key="logits", labels_key="labels")


@pytest.mark.parametrize(
    ("labels", "words"),
    [
        (np.array([0, 1.5, 2, 1]), ("whole numbers", "1.5 at row 1")),
        (np.array([0, 1, np.nan, 1]), ("whole numbers", "nan at row 2")),
        (np.array(["0", "1", "2", "1"]), ("integers", "<U1")),
        (np.array([[0, 1], [2, 1]]), ("1-D", "(2, 2)")),
    ],
)
def test_non_integer_labels(labels, words):
    with _raises(*words):
        as_labels(labels, n_rows=4, n_classes=3)


def test_out_of_range_labels_name_the_value_and_range_and_never_wrap(tmp_path):
    path = _npz(tmp_path, logits=LOGITS, labels=np.array([1, 3, 2, 4], dtype=np.int8))
    with _raises("label 4 at row 3", "label_base=1", "1..3"):
        load_logits(path, logits_key="logits", labels_key="labels", label_base=1)
    with _raises("label 3 at row 1", "0..2"):
        load_logits(path, logits_key="logits", labels_key="labels", label_base=0)
    with _raises("label -1 at row 0", "0..2"):
        as_labels(np.array([-1, 0, 1, 2]), n_rows=4, n_classes=3)


def test_bad_label_base():
    with _raises("label_base", "0.5"):
        as_labels(LABELS, n_rows=4, n_classes=3, label_base=0.5)


# --- pickled files are refused ---


class _Pickled:
    """A plain Python object: torch.save can only store it through pickle."""

    def __init__(self):
        self.logits = LOGITS


def test_pickled_npy_is_refused(tmp_path):
    path = _npy(tmp_path, "x.npy", np.array([LOGITS, "x"], dtype=object), allow_pickle=True)
    with _raises("refused", "needs pickle", "x.npy"):
        load_logits(path, labels_path=_npy(tmp_path, "y.npy", LABELS))


def test_pickled_array_in_npz_is_refused(tmp_path):
    path = _npz(tmp_path, logits=np.array([LOGITS, "x"], dtype=object), labels=LABELS)
    with _raises("refused", "needs pickle"):
        load_logits(path, logits_key="logits", labels_key="labels")


def test_pickled_pt_object_is_refused(tmp_path):
    path = tmp_path / "x.pt"
    torch.save(_Pickled(), path)
    with _raises("refused", "needs pickle", "x.pt"):
        load_logits(path, labels_path=_npy(tmp_path, "y.npy", LABELS))


def test_pt_of_a_set_is_refused(tmp_path):
    """weights_only lets a set through; it is still not arrays, so the loader refuses it."""
    path = tmp_path / "x.pt"
    torch.save({1.0, 2.0}, path)
    with _raises("refused", "set", "tensor"):
        load_logits(path, labels_path=_npy(tmp_path, "y.npy", LABELS))


# --- the real data of Blanchard, Higham & Higham (2021) ---


@pytest.mark.filterwarnings("ignore:Duplicate variable name")
def test_blanchard2021_file():
    if not BLANCHARD.is_file():
        pytest.skip(f"Blanchard et al. (2021) data absent: {BLANCHARD}")
    assert file_digest(BLANCHARD) == BLANCHARD_SHA256
    logits, labels = load_logits(BLANCHARD, logits_key="softmat", labels_key="val_labs", class_axis=0, label_base=1)
    assert logits.shape == (2500, 10) and logits.dtype == np.float64
    assert labels.shape == (2500,) and labels.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), np.full(10, 250))
    raw = scipy.io.loadmat(BLANCHARD, variable_names=["softmat"])["softmat"]
    np.testing.assert_array_equal(logits, raw.T)
