"""MLX paths on the CPU (the Linux `mlx-cpu` build), lazy but not compiled; gradients by mx.grad.

``PATHS[name](x, y) -> loss``: per-row loss of logits x (N, C) and labels y (N,), in x's dtype;
``GRADIENTS[name](x, y) -> g``: d(sum of the per-row losses)/dx by mx.grad of the same path.
Everything a backend needs is here too (`to_native`, `to_numpy`, `sync`, `compile`,
`compile_gradient`, `autodiff_gradient`, `flushes_subnormals`, `version`).

MLX is lazy: an op records a graph and nothing runs until `mx.eval`; `sync` and `to_numpy` force it.
Not mx.compile: compiled and plain graphs gave the same bits on every path, gradient and dtype,
and no measurable gain on a (256, 1000) float32 loss on the CPU (about 11 ms either way), while
each new compiled graph costs 2-5 s of a C++ compiler run at first call (MLX's CPU compile builds
its fused kernels with the system compiler, cached under $TMPDIR/mlx).

Where MLX's CPU rounds (MLX 0.32.4, measured; see `ACCUMULATION`):

- mx.exp is a float32 polynomial for every dtype (float16 and bfloat16 are widened, float64 is
  narrowed): float64 exp has float32's accuracy (exp(1.0) = 2.7182817459106445, float32's e) and
  float32's range (inf above 88.72, 0 below about -87.7), so float64 paths that exponentiate are
  float32-accurate in their exponentials. log and log1p are float64-accurate.
- mx.sum and mx.logsumexp accumulate float16 and bfloat16 in float32 and round once (4096 float16
  ones sum to 4096; float16 sequential accumulation would stall at 2048).
- mx.softmax (default precise=False) accumulates in the input dtype: softmax of 4096 float16
  zeros is 1/2048, of 1024 bfloat16 zeros 1/256 (the sum stalls at 2048 and 256).
- mlx.nn.losses.cross_entropy on the CPU is x - max, then mx.logsumexp, minus the shifted target
  (the GPU has a fused float32 kernel; this build has no GPU).

A shift by a running or per-chunk maximum that cancels in exact arithmetic has its gradient
stopped, as mlx.nn.losses.cross_entropy does; in `log1p_lse` the maximum is a term and keeps it.
"""

from __future__ import annotations

import functools

import ml_dtypes
import mlx.core as mx
import mlx.nn as nn
import numpy as np

from harness.errors import ConfigError
from harness.paths import size_or_default

DEVICES = ("cpu",)
COMPILES = False  # lazy graphs, evaluated by mx.eval; mx.compile gave the same bits and no gain (see above)
COMPILE_NOTE = "lazy, not compiled (mx.compile: same bits, no gain on the CPU, seconds of C++ compiler per graph)"
INSTALL = 'pip install "mlx[cpu]==0.32.4"'
_NATIVE = {"float16": mx.float16, "bfloat16": mx.bfloat16, "float32": mx.float32, "float64": mx.float64}

_EXP_F32 = "mx.exp computes in float32 (float64 exp: float32 accuracy and range)"
_SUM = "mx.sum accumulates float16/bfloat16 in float32"
ACCUMULATION = {
    "naive": "exp and the division round to the input dtype; " + _SUM + "; " + _EXP_F32,
    "softmax_log": "mx.softmax (precise=False) sums exp in the input dtype: float16 stalls at 2048, bfloat16 "
    "at 256; " + _EXP_F32,
    "log_softmax_nll": "x - mx.logsumexp(x); mx.logsumexp accumulates float16/bfloat16 in float32, "
    "rounds the result once; " + _EXP_F32,
    "fused": "nn.losses.cross_entropy on the CPU: mx.logsumexp(x - max) - (x[y] - max); mx.logsumexp "
    "accumulates float16/bfloat16 in float32; " + _EXP_F32,
    "upcast_fused": "float32 by definition, whatever the input dtype",
    "log1p_lse": "each op rounds to the input dtype; " + _SUM + "; " + _EXP_F32,
    "online": "each op rounds to the input dtype; " + _SUM + "; " + _EXP_F32,
    "chunked": "mx.logsumexp per chunk (float32 inside for float16/bfloat16), mx.logaddexp in the input "
    "dtype; " + _EXP_F32,
}


def _pick(values, labels):
    return mx.take_along_axis(values, labels[:, None], axis=1)[:, 0]


def naive(x, y):
    e = mx.exp(x)
    p = e / e.sum(axis=1, keepdims=True)
    return -mx.log(_pick(p, y))


def softmax_log(x, y):
    return -mx.log(_pick(mx.softmax(x, axis=1), y))


def log_softmax_nll(x, y):
    """MLX has no log_softmax op; its users write x - logsumexp(x) (as mlx.nn.LogSoftmax does)."""
    return -_pick(x - mx.logsumexp(x, axis=1, keepdims=True), y)


def fused(x, y):
    return nn.losses.cross_entropy(x, y, reduction="none")


def upcast_fused(x, y):
    """Mixed precision: float32 whatever the input; float64 logits are cast down too."""
    return fused(x.astype(mx.float32), y).astype(x.dtype)


def log1p_lse(x, y):
    """Blanchard, Higham & Higham (2021): lse = m + log1p(s); the loss is log1p(s) - (x[y] - m)."""
    top = mx.stop_gradient(mx.argmax(x, axis=1, keepdims=True))  # mx.grad needs integer indices stopped
    shifted = x - mx.take_along_axis(x, top, axis=1)
    is_top = mx.arange(x.shape[1])[None, :] == top
    s = mx.where(is_top, mx.zeros((), x.dtype), mx.exp(shifted)).sum(axis=1)  # argmax's 1 is the "1 +"
    return mx.log1p(s) - _pick(shifted, y)


def _column_blocks(n_classes: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, n_classes)) for start in range(0, n_classes, size)]


def online(x, y, block_size=None):
    """Milakov & Gimelshein (2018): m = -inf, d = 0; per block m' = max(m, max(block)),
    d' = d exp(m - m') + sum(exp(block - m')); lse = m + log(d)."""
    m = mx.full((x.shape[0], 1), -mx.inf, dtype=x.dtype)
    d = mx.zeros((x.shape[0], 1), dtype=x.dtype)
    for columns in _column_blocks(x.shape[1], size_or_default("block_size", block_size)):
        block = x[:, columns]
        m_new = mx.maximum(m, mx.stop_gradient(block.max(axis=1, keepdims=True)))
        d = d * mx.exp(m - m_new) + mx.exp(block - m_new).sum(axis=1, keepdims=True)
        m = m_new
    return (m + mx.log(d))[:, 0] - _pick(x, y)


def chunked(x, y, chunk_size=None):
    """mx.logsumexp per vocabulary chunk, merged left to right with mx.logaddexp."""
    lse = None
    for columns in _column_blocks(x.shape[1], size_or_default("chunk_size", chunk_size)):
        lse_c = mx.logsumexp(x[:, columns], axis=1)
        lse = lse_c if lse is None else mx.logaddexp(lse, lse_c)
    return lse - _pick(x, y)


PATHS = {
    "naive": naive,
    "softmax_log": softmax_log,
    "log_softmax_nll": log_softmax_nll,
    "fused": fused,
    "upcast_fused": upcast_fused,
    "log1p_lse": log1p_lse,
    "online": online,
    "chunked": chunked,
}


def autodiff_gradient(path):
    """(x, y) -> d(sum of path(x, y))/dx by mx.grad, in x's dtype."""

    @functools.wraps(path)
    def gradient(x, y, **sizes):
        return mx.grad(lambda logits: path(logits, y, **sizes).sum())(x)

    return gradient


GRADIENTS = {name: autodiff_gradient(path) for name, path in PATHS.items()}


def version() -> str:
    return mx.__version__


def versions() -> dict[str, str]:
    return {"mlx": mx.__version__}


def check_device(device: str) -> None:
    if device != "cpu":
        raise ConfigError(f"device={device} but MLX runs on the CPU only here (the mlx-cpu build); use device=cpu")


def to_native(logits: np.ndarray, labels: np.ndarray, device: str = "cpu"):
    """Same bits as the NumPy array. bfloat16 travels as its 16-bit pattern; the dtype is always
    given, because mx.array turns float64 NumPy arrays into float32 by default."""
    check_device(device)
    if logits.dtype.name == "bfloat16":
        x = mx.array(np.ascontiguousarray(logits).view(np.uint16)).view(mx.bfloat16)
    else:
        x = mx.array(np.ascontiguousarray(logits), dtype=_NATIVE[logits.dtype.name])
    return x, mx.array(np.asarray(labels, dtype=np.int32))


def to_numpy(result) -> tuple[np.ndarray, str]:
    """(values as float64, the dtype's name); bfloat16 comes back through its bits (NumPy cannot read it)."""
    mx.eval(result)
    name = str(result.dtype).removeprefix("mlx.core.")
    if name == "bfloat16":
        values = np.array(result.view(mx.uint16)).view(ml_dtypes.bfloat16)
    else:
        values = np.array(result)
    with np.errstate(invalid="ignore"):  # ml_dtypes warns on casting a bfloat16 NaN; it stays NaN
        return values.astype(np.float64), name


def sync(result):
    """Run the recorded graph (MLX is lazy); the result is ready when this returns."""
    mx.eval(result)
    return result


def compile(fn):
    return fn


def compile_gradient(fn):
    return fn


def clear_compile_cache() -> None:
    return None


@functools.cache
def flushes_subnormals(dtype: str, device: str = "cpu") -> bool:
    """Whether a subnormal result comes back as zero, measured: smallest_normal * 0.25 by a multiply
    and exp(ln(smallest_normal / 4)). MLX's multiply keeps subnormals, but its float32-polynomial exp
    returns 0 below about -87.7, so float32, bfloat16 and float64 exp results flush; float16's
    smallest normal, 2**-14, is far above that."""
    from harness.dtypes import DTYPES

    check_device(device)
    fmt = DTYPES[dtype]
    normal = np.array([fmt.smallest_normal], dtype=fmt.numpy_type)
    log_quarter = np.array([np.log(fmt.smallest_normal / 4)], dtype=fmt.numpy_type)
    quarter, _ = to_numpy(to_native(normal, np.zeros(1))[0] * 0.25)
    via_exp, _ = to_numpy(mx.exp(to_native(log_quarter, np.zeros(1))[0]))
    return bool(quarter[0] == 0 or via_exp[0] == 0)
