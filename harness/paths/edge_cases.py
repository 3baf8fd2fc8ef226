"""What the harness knows about frameworks on invalid inputs before calling them (experiment edge_cases).

Most edge cases are simply run and their outcome recorded: an exception is a row, never a crash.
Two facts are known beforehand:

- Where an edge case sits. MLX checks no gather index: a label of n_classes at row i reads past
  the row, into row i + 1 (`softmax_log` returns -log of row i + 1's first probability), and its
  gradient is scattered there; past the last row it would read and write outside the array. The
  edge case is therefore put in the first row (`EDGE_ROW`) of an input of at least two rows, so
  every out-of-range read stays inside the array (JAX clamps or fills; NumPy, PyTorch and
  TensorFlow check).
- What may not be called at all. PyTorch on a CUDA device checks class indices with a device-side
  assert, which leaves the CUDA context unusable for the rest of the process: every later call
  would fail. Those cells are not called and read `unsupported` with the reason (`not_called`).
"""

from __future__ import annotations

EDGE_ROW = 0  # the row of the input that carries the edge case (see above: MLX's unchecked gathers)
OUT_OF_RANGE_LABELS = ("label_n_classes", "label_minus_one")
CUDA_DEVICE_ASSERT = (
    "not called: PyTorch on CUDA checks class indices with a device-side assert, which leaves the CUDA "
    "context unusable for the rest of the process"
)


def not_called(framework: str, device: str, case: str) -> str:
    """Why (framework, device) must not be called on an edge case ('' where it may)."""
    if framework == "torch" and device == "cuda" and case in OUT_OF_RANGE_LABELS:
        return CUDA_DEVICE_ASSERT
    return ""
