"""Where a framework runs: `device=cpu` (default) or `device=cuda` for PyTorch and JAX.

NumPy always runs on the CPU, and its rows say so. On `cuda` the same bits are copied to the GPU
before the call, and results come back to the host for scoring.
"""

from __future__ import annotations

from harness.errors import ConfigError

DEVICES = ("cpu", "cuda")
GPU_FRAMEWORKS = ("torch", "jax")


def check_device(device: str, frameworks) -> None:
    """Fail before any work when the device is unknown or absent for a framework that would use it."""
    if device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; valid choices: {', '.join(DEVICES)}")
    if device == "cpu":
        return
    if "torch" in frameworks:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                "device=cuda but PyTorch sees no CUDA device (torch.cuda.is_available() is False); "
                "install a CUDA build of torch (see README) or use device=cpu"
            )
    if "jax" in frameworks:
        import jax

        try:
            jax.devices("gpu")
        except RuntimeError:
            raise ConfigError(
                "device=cuda but JAX finds no GPU backend; install jax[cuda12] (see README) or use device=cpu"
            ) from None


def row_device(framework: str, device: str) -> str:
    return device if framework in GPU_FRAMEWORKS else "cpu"


def on_device(framework: str, native: tuple, device: str) -> tuple:
    """The framework's inputs moved to `device` (no copy on the CPU)."""
    if row_device(framework, device) == "cpu":
        return native
    if framework == "torch":
        return tuple(t.to(device) for t in native)
    import jax

    gpu = jax.devices("gpu")[0]
    return tuple(jax.device_put(a, gpu) for a in native)
