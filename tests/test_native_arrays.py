"""A loss's inputs travel to every backend by name, each with its own kind (harness.backends.native_arrays):
float arrays keep their bits and dtype (binary cross-entropy's soft targets are not class indices),
integer arrays become the backend's class indices, and cross-entropy's to_native is the same
transfer of (logits, labels)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from harness import backends

INSTALLED = [f for f in backends.FRAMEWORKS if not backends.missing_packages(f)]


@pytest.mark.parametrize("framework", INSTALLED)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
def test_named_arrays_keep_their_bits_and_their_kind(framework, dtype):
    backend = backends.load(framework)
    logits = np.array([[0.1, -3.5e4, 7.0]]).astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    targets = np.array([[0.25, 0.75, 1.0]]).astype(logits.dtype)  # soft targets: 0.25 must not become 0
    labels = np.array([2])
    with backend.dtype_scope(dtype):
        native = backends.native_arrays(backend, {"logits": logits, "targets": targets, "labels": labels})
        back = {name: backend.to_numpy(value) for name, value in native.items()}
        x, y = backend.to_native(logits, labels)
        old = backend.to_numpy(x), backend.to_numpy(y)
    assert list(native) == ["logits", "targets", "labels"]
    np.testing.assert_array_equal(back["logits"][0], logits.astype(np.float64))
    np.testing.assert_array_equal(back["targets"][0], [[0.25, 0.75, 1.0]])
    assert back["logits"][1] == back["targets"][1] == dtype
    assert back["labels"][0].tolist() == [2.0] and "int" in back["labels"][1]
    assert (old[0][1], old[1][1]) == (back["logits"][1], back["labels"][1])  # to_native: the same transfer
    np.testing.assert_array_equal(old[0][0], back["logits"][0])
