"""TensorFlow paths (tensorflow-cpu with Keras 3) on the CPU, under tf.function; gradients by tf.GradientTape.

``PATHS[name](x, y) -> loss``: per-row loss of logits x (N, C) and labels y (N,), in x's dtype;
``GRADIENTS[name](x, y) -> g``: d(sum of the per-row losses)/dx by tf.GradientTape of the same path.
Compiled with tf.function (as Keras's fit and custom training loops run), without XLA: every path
gave the same bits as eager. Inside tf.function Keras recognises a Softmax op that feeds its loss
and quietly uses its logits, so `keras_probs` passes its probabilities through tf.identity to keep
the probability route it exists to measure.

Where TF's CPU kernels round (TF 2.21, measured): float16 and bfloat16 ops compute in float32 and
round once, reductions and the softmax, log-softmax and sparse cross-entropy kernels accumulate them
in float32; subnormal float32, float64 and bfloat16 results and inputs are flushed to zero. A shift
by a running or per-chunk maximum that cancels in exact arithmetic has its gradient stopped, as
tf.reduce_logsumexp does; in `log1p_lse` the maximum is a term and keeps it.
"""

from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up notices, not the user's warnings

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from harness.backends.tensorflow import autodiff_gradient  # noqa: E402
from harness.paths import size_or_default  # noqa: E402

KERAS_EPSILON = keras.config.epsilon()  # 1e-7: Keras clips probabilities to [epsilon, 1 - epsilon]


def _pick(values, labels):
    return tf.gather(values, labels, batch_dims=1)


def naive(x, y):
    e = tf.exp(x)
    p = e / tf.reduce_sum(e, axis=1, keepdims=True)
    return -tf.math.log(_pick(p, y))


def softmax_log(x, y):
    return -tf.math.log(_pick(tf.nn.softmax(x, axis=1), y))


def log_softmax_nll(x, y):
    return -_pick(tf.nn.log_softmax(x, axis=1), y)


def fused(x, y):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=x)


def upcast_fused(x, y):
    """Mixed precision: float32 whatever the input; float64 logits are cast down too."""
    return tf.cast(fused(tf.cast(x, tf.float32), y), x.dtype)


def log1p_lse(x, y):
    """Blanchard, Higham & Higham (2021): lse = m + log1p(s); the loss is log1p(s) - (x[y] - m)."""
    top = tf.argmax(x, axis=1, output_type=tf.int32)
    shifted = x - _pick(x, top)[:, None]
    is_top = tf.range(tf.shape(x)[1])[None, :] == top[:, None]
    s = tf.reduce_sum(tf.where(is_top, tf.zeros_like(x), tf.exp(shifted)), axis=1)  # argmax's 1 is the "1 +"
    return tf.math.log1p(s) - _pick(shifted, y)


def _column_blocks(n_classes: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, n_classes)) for start in range(0, n_classes, size)]


def online(x, y, block_size=None):
    """Milakov & Gimelshein (2018): m = -inf, d = 0; per block m' = max(m, max(block)),
    d' = d exp(m - m') + sum(exp(block - m')); lse = m + log(d)."""
    m = tf.fill((x.shape[0], 1), tf.constant(-np.inf, x.dtype))
    d = tf.zeros((x.shape[0], 1), x.dtype)
    for columns in _column_blocks(x.shape[1], size_or_default("block_size", block_size)):
        block = x[:, columns]
        m_new = tf.maximum(m, tf.stop_gradient(tf.reduce_max(block, axis=1, keepdims=True)))
        d = d * tf.exp(m - m_new) + tf.reduce_sum(tf.exp(block - m_new), axis=1, keepdims=True)
        m = m_new
    return (m + tf.math.log(d))[:, 0] - _pick(x, y)


def _logaddexp(a, b):
    """max + log1p(exp(-|a - b|)), as tf.experimental.numpy.logaddexp (which cannot take bfloat16)."""
    big = tf.maximum(a, b)
    return big + tf.math.log1p(tf.exp(-tf.abs(a - b)))


def chunked(x, y, chunk_size=None):
    """tf.reduce_logsumexp per vocabulary chunk, merged left to right with logaddexp."""
    lse = None
    for columns in _column_blocks(x.shape[1], size_or_default("chunk_size", chunk_size)):
        lse_c = tf.reduce_logsumexp(x[:, columns], axis=1)
        lse = lse_c if lse is None else _logaddexp(lse, lse_c)
    return lse - _pick(x, y)


def keras_probs(x, y):
    """Keras's probability route: sparse categorical cross-entropy with from_logits=False on softmax outputs.

    Keras clips the probabilities to [epsilon, 1 - epsilon] (epsilon = 1e-7) before the log, so a
    loss is at most -log(1e-7) = 16.12 and at least -log(1 - 1e-7) as rounded. Keras takes this
    route for probabilities that do not carry their logits: an eager tf.nn.softmax output, or
    probabilities that pass through any op (a cast, an average; here tf.identity) on their way to
    the loss; a Keras softmax output, or a Softmax op feeding the loss directly inside tf.function,
    is traced back to its logits instead (the path would then equal `fused`).

    The function `keras.losses.sparse_categorical_crossentropy` runs in the input dtype. The class
    SparseCategoricalCrossentropy casts logits and labels to its dtype first: float32 by default,
    and with dtype=float16 or bfloat16 it rounds the integer labels too (bfloat16 turns 999 into 1000).
    """
    probabilities = tf.identity(tf.nn.softmax(x, axis=1))  # any op between softmax and loss, as under tf.function
    return keras.losses.sparse_categorical_crossentropy(y, probabilities, from_logits=False)


NEEDS = {  # the library functions each path calls: a release that lacks one runs it as unsupported
    "softmax_log": ("tensorflow.nn.softmax",),
    "log_softmax_nll": ("tensorflow.nn.log_softmax",),
    "fused": ("tensorflow.nn.sparse_softmax_cross_entropy_with_logits",),
    "upcast_fused": ("tensorflow.nn.sparse_softmax_cross_entropy_with_logits",),
    "keras_probs": ("keras.losses.sparse_categorical_crossentropy",),
}

PATHS = {
    "naive": naive,
    "softmax_log": softmax_log,
    "log_softmax_nll": log_softmax_nll,
    "fused": fused,
    "upcast_fused": upcast_fused,
    "log1p_lse": log1p_lse,
    "online": online,
    "chunked": chunked,
    "keras_probs": keras_probs,
}


GRADIENTS = {name: autodiff_gradient(path) for name, path in PATHS.items()}
