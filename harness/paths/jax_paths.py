"""JAX paths, jitted, with float64 enabled (jax_enable_x64) so all four dtypes run."""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402


def _pick(values, labels):
    return jnp.take_along_axis(values, labels[:, None], axis=1)[:, 0]


def naive(x, y):
    e = jnp.exp(x)
    p = e / e.sum(axis=1, keepdims=True)
    return -jnp.log(_pick(p, y))


def softmax_log(x, y):
    return -jnp.log(_pick(jax.nn.softmax(x, axis=1), y))


def log_softmax_nll(x, y):
    return -_pick(jax.nn.log_softmax(x, axis=1), y)


def fused(x, y):
    return optax.softmax_cross_entropy_with_integer_labels(x, y)


PATHS = {
    "naive": naive,
    "softmax_log": softmax_log,
    "log_softmax_nll": log_softmax_nll,
    "fused": fused,
}


def to_native(logits: np.ndarray, labels: np.ndarray):
    return jnp.asarray(logits), jnp.asarray(labels, dtype=jnp.int32)


def to_numpy(result) -> tuple[np.ndarray, str]:
    result = np.asarray(jax.block_until_ready(result))
    return result.astype(np.float64), str(result.dtype)


def compile(fn):
    return jax.jit(fn)


def version() -> str:
    return f"jax {jax.__version__}, jaxlib {jax.lib.__version__}, optax {optax.__version__}"
