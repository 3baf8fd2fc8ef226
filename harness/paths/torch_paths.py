"""PyTorch paths, run eagerly on the CPU under inference mode."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _pick(values, labels):
    return values.gather(1, labels[:, None])[:, 0]


def naive(x, y):
    e = torch.exp(x)
    p = e / e.sum(dim=1, keepdim=True)
    return -torch.log(_pick(p, y))


def softmax_log(x, y):
    return -torch.log(_pick(torch.softmax(x, dim=1), y))


def log_softmax_nll(x, y):
    return F.nll_loss(F.log_softmax(x, dim=1), y, reduction="none")


def fused(x, y):
    return F.cross_entropy(x, y, reduction="none")


PATHS = {
    "naive": naive,
    "softmax_log": softmax_log,
    "log_softmax_nll": log_softmax_nll,
    "fused": fused,
}


def to_native(logits: np.ndarray, labels: np.ndarray):
    """Same bits as the NumPy array; bfloat16 travels as its 16-bit pattern."""
    if logits.dtype.name == "bfloat16":
        x = torch.from_numpy(logits.view(np.uint16).copy()).view(torch.bfloat16)
    else:
        x = torch.from_numpy(logits.copy())
    return x, torch.from_numpy(np.asarray(labels, dtype=np.int64))


def to_numpy(result) -> tuple[np.ndarray, str]:
    return result.detach().to(torch.float64).cpu().numpy(), str(result.dtype).removeprefix("torch.")


def compile(fn):
    def run(x, y):
        with torch.inference_mode():
            return fn(x, y)

    return run


def version() -> str:
    return f"torch {torch.__version__}"
