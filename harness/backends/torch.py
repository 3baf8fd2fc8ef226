"""PyTorch: eager on the CPU or a CUDA device; losses under inference mode, gradients by autograd."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import numpy as np
import torch

from harness.errors import ConfigError

# What the harness needs to know before importing this module (read by harness.backends.discover).
PACKAGES = ("torch",)  # import names that must be present
INSTALL = "pip install torch==2.13.0"
ORDER = 1  # place in tables and lists

DEVICES = ("cpu", "cuda")
COMPILES = False  # eager; `torch.compile` is not used by the accuracy or timing stages
COMPILE_NOTE = "eager, losses under torch.inference_mode"
# torch.compile (the head's compiled mode) builds its graph again for another thread count
RECOMPILES_PER_THREAD_COUNT = True


def versions() -> dict[str, str]:
    return {"torch": torch.__version__}


def device_names() -> list[str]:
    """The devices the framework sees, by name (environment.json's `devices`)."""
    return ["cpu"] + [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def check_device(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device=cuda but PyTorch sees no CUDA device (torch.cuda.is_available() is False); "
            "install a CUDA build of torch (see README) or use device=cpu"
        )


def transfer(array: np.ndarray, device: str = "cpu"):
    """One array with the same bits, on `device`: bfloat16 travels as its 16-bit pattern, integers
    (class indices) as int64."""
    if np.issubdtype(array.dtype, np.integer):
        return torch.from_numpy(np.asarray(array, dtype=np.int64)).to(device)
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.uint16).copy()).view(torch.bfloat16).to(device)
    return torch.from_numpy(np.ascontiguousarray(array).copy()).to(device)


def to_native(logits: np.ndarray, labels: np.ndarray, device: str = "cpu"):
    """Same bits as the NumPy arrays, on `device`; the labels as int64."""
    return transfer(logits, device), transfer(np.asarray(labels, dtype=np.int64), device)


def to_numpy(result) -> tuple[np.ndarray, str]:
    return result.detach().to(torch.float64).cpu().numpy(), str(result.dtype).removeprefix("torch.")


def sync(result):
    """Wait for a CUDA result; CPU results are ready when the call returns."""
    if isinstance(result, torch.Tensor) and result.device.type == "cuda":
        torch.cuda.synchronize(result.device)
    return result


def compile(fn):
    def run(x, y):
        with torch.inference_mode():
            return fn(x, y)

    return functools.wraps(fn)(run)


def compile_gradient(fn):
    return fn


def clear_compile_cache() -> None:
    return None


def release_memory() -> None:
    """Hand back memory the framework keeps after its cells (peak memory of long sweeps)."""
    return None


def autodiff_gradient(path):
    """(x, y) -> d(sum of path(x, y))/dx by torch.autograd, in x's dtype (never under inference mode)."""

    @functools.wraps(path)
    def gradient(x, y, **sizes):
        with torch.inference_mode(False), torch.enable_grad():
            x = (x.clone() if x.is_inference() else x).detach().requires_grad_(True)
            (g,) = torch.autograd.grad(path(x, y, **sizes).sum(), x)
        return g

    return gradient


def dtype_scope(dtype: str):
    return contextlib.nullcontext()


@contextlib.contextmanager
def threads(n: int):
    """torch's intra-op pool at n threads inside the block, restored after; yields (threads in force, "")."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield torch.get_num_threads(), ""
    finally:
        torch.set_num_threads(before)


@functools.cache
def flushes_subnormals(dtype: str, device: str = "cpu") -> bool:
    """Whether a computed subnormal comes back as zero: smallest_normal / 4 and exp(ln of it)."""
    from harness.dtypes import DTYPES

    fmt = DTYPES[dtype]
    x = torch.tensor([fmt.smallest_normal], dtype=getattr(torch, dtype), device=device)
    quarter = x / 4
    via_exp = torch.exp(torch.log(x.to(torch.float64) / 4).to(x.dtype))
    return bool(quarter.item() == 0 or via_exp.item() == 0)


def read_pt(path: Path):
    """A `.pt` file's tensor or dict of tensors, loaded without pickle (weights_only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def tensor_to_numpy(tensor) -> np.ndarray:
    """A loaded tensor as float64 NumPy (dense, on the CPU)."""
    tensor = tensor.detach().cpu()
    if tensor.layout != torch.strided:
        tensor = tensor.to_dense()
    if tensor.is_floating_point():
        tensor = tensor.to(torch.float64)
    return tensor.numpy()


def is_tensor(value) -> bool:
    return isinstance(value, torch.Tensor)


def device_peak_bytes(call) -> int | None:
    """Peak CUDA memory one call allocates beyond what was allocated before it (the caching
    allocator's statistics); None when no CUDA device is in use."""
    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    result = call()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    del result
    return peak


def exp(x):
    """The framework's own elementwise exp (for measured facts such as `harness.backends.exp_dtype`)."""
    return torch.exp(x)
