"""Head paths in TensorFlow (see harness.paths.head): gradients by tf.GradientTape.

`linear_chunked` is the loop TensorFlow users write by hand (TF has no fused linear cross-entropy):
a Python loop over vocabulary chunks of `chunk_size` classes, each chunk's logits h @ W_C.T + b_C
in the dtype, a running max m (held out of the gradient, as tf.reduce_logsumexp's is) and a
running sum s in the dtype; the target logit is picked from its chunk. The last chunk may be short.

Where TF's CPU rounds (TF 2.21, measured at 64 x 512 x 1000): a float16/bfloat16 product accumulates
in float32 and rounds once to the dtype (99.8% and 99.99% of entries equal to that, the rest one sum
order away), float32 products equal NumPy's BLAS bit for bit; float16/bfloat16 elementwise ops and
reductions compute in float32 and round once; subnormal float32, float64 and bfloat16 results are
flushed to zero (harness.backends.tensorflow).

`eager` runs op by op (a GradientTape loop without tf.function). `compiled` is
tf.function(jit_compile=True), XLA: what Keras 3's Model.compile(jit_compile='auto') picks for a
TensorFlow model on a CPU-only machine. tf.function without XLA is left out: it gave the same bits
as eager on every logit path (harness.backends.tensorflow). The XLA functions are kept per path,
reduction and chunk for the process; each traces and compiles once per shape and dtype.
"""

from __future__ import annotations

import functools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up notices, not the user's warnings

import tensorflow as tf  # noqa: E402

from harness.paths.options import IGNORE_INDEX  # noqa: E402


def reduce(loss, reduction: str, kept=None):
    """none, mean or sum; with `kept`, 0 at the other rows and the mean over the kept count."""
    if kept is not None:
        loss = tf.where(kept, loss, tf.zeros_like(loss))
        if reduction == "mean":
            return tf.reduce_sum(loss) / tf.reduce_sum(tf.cast(kept, loss.dtype))
    if reduction == "none":
        return loss
    return tf.reduce_mean(loss) if reduction == "mean" else tf.reduce_sum(loss)


def logits(h, W, b, start: int = 0, stop: int | None = None):
    """h @ W[start:stop].T (+ b[start:stop]) in the dtype."""
    z = tf.matmul(h, W[start:stop], transpose_b=True)
    return z if b is None else z + b[start:stop]


def fused_loss(h, W, b, y, reduction: str, chunk_size: int):
    return reduce(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits(h, W, b)), reduction)


def chunked_loss(h, W, b, y, reduction: str, chunk_size: int):
    """m' = max(m, max(z_C)), s' = s exp(m - m') + sum(exp(z_C - m')) over chunks; m + log(s) - z_y."""
    m = s = target = None
    for start in range(0, W.shape[0], chunk_size):
        z = logits(h, W, b, start, start + chunk_size)
        stop = start + z.shape[1]
        top = tf.stop_gradient(tf.reduce_max(z, axis=1))
        new_m = top if m is None else tf.maximum(m, top)
        part = tf.reduce_sum(tf.exp(z - new_m[:, None]), axis=1)
        s = part if s is None else s * tf.exp(m - new_m) + part
        m = new_m
        picked = tf.gather(z, tf.clip_by_value(y - start, 0, z.shape[1] - 1), batch_dims=1)
        target = picked if target is None else tf.where((y >= start) & (y < stop), picked, target)
    return reduce(m + tf.math.log(s) - target, reduction)


LOSSES = {"linear_fused": fused_loss, "linear_chunked": chunked_loss}


@functools.cache
def build(path: str, reduction: str, mode: str, chunk_size: int, ignore: bool = False):
    """(loss(h, W, b, y), gradients(h, W, b, y, u)): the gradients of sum(u * loss) (reduction none)
    or of the reduced loss with respect to h, W and b by tf.GradientTape; both under
    tf.function(jit_compile=True) in compiled mode (a missing bias is a None argument). With
    `ignore`, rows labelled -100 are masked as Keras masks: tf.where(kept, loss, 0), the mean over
    the kept count."""
    fn = LOSSES[path]

    def loss(h, W, b, y):
        if not ignore:
            return fn(h, W, b, y, reduction, chunk_size)
        kept = y != IGNORE_INDEX
        return reduce(fn(h, W, b, tf.where(kept, y, tf.zeros_like(y)), "none", chunk_size), reduction, kept)

    def gradients(h, W, b, y, u):
        wrt = [h, W] if b is None else [h, W, b]
        with tf.GradientTape() as tape:
            tape.watch(wrt)
            out = loss(h, W, b, y)
            objective = tf.reduce_sum(out * u) if reduction == "none" else out
        grads = tape.gradient(objective, wrt)
        return (*grads, None) if b is None else tuple(grads)

    if mode == "compiled":
        return tf.function(loss, jit_compile=True), tf.function(gradients, jit_compile=True)
    return loss, gradients
