"""TensorFlow with the loss options: Keras's own for `fused`, by hand for every other path.

`fused` is keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-100)
per row; with label smoothing or target=dense, CategoricalCrossentropy(from_logits=True,
label_smoothing=) on one-hot targets (the sparse loss has no smoothing). Keras's reductions divide
by the batch, so weights (w[y]), the mask and the reductions are by hand, as are the soft-cap and
the z-loss. Keras computes in its floatx (float32) whatever the logits' dtype; its per-row
losses are rounded to the input dtype before the reduction.
"""

from __future__ import annotations

from types import SimpleNamespace

import keras
import tensorflow as tf

from harness.paths import options as opt
from harness.paths.tensorflow_paths import PATHS

BUILTIN_PATHS = tuple(PATHS)

OPS = SimpleNamespace(
    scalar=lambda x, v: tf.constant(v, dtype=x.dtype),
    tanh=tf.tanh,
    log=tf.math.log,
    softmax=lambda x: tf.nn.softmax(x, axis=1),
    log_softmax=lambda x: tf.nn.log_softmax(x, axis=1),
    logsumexp=lambda x: tf.reduce_logsumexp(x, axis=1),
    pick=lambda v, y: tf.gather(v, y, batch_dims=1),
    mean_rows=lambda x: tf.reduce_mean(x, axis=1),
    sum_rows=lambda x: tf.reduce_sum(x, axis=1),
    take=lambda w, y: tf.gather(w, y),
    where=tf.where,
    total=tf.reduce_sum,
    cast_like=lambda mask, like: tf.cast(mask, like.dtype),
)


def fused(x, arrays: opt.NativeArrays, options: opt.CellOptions):
    xc = opt.softcapped(OPS, x, options)
    if options.label_smoothing or options.target == "dense":
        loss = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=options.label_smoothing, reduction=None
        )
        rows = loss(tf.one_hot(arrays.safe_labels, x.shape[1], dtype=x.dtype), xc)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=opt.IGNORE_INDEX, reduction=None
        )
        rows = loss(arrays.ignore_labels, xc)
    rows = tf.cast(rows, x.dtype)  # Keras's float32, rounded to the input dtype
    rows = rows + opt.z_term(OPS, xc, tf.reduce_logsumexp(xc, axis=1), options)
    return opt.reduced(OPS, rows, arrays, options)


def loss_with_options(path, path_fn, x, y, arrays: opt.NativeArrays, options: opt.CellOptions, own=()):
    if path == "fused":
        return fused(x, arrays, options)
    return opt.compose(OPS, path, path_fn, x, arrays, options, own)
