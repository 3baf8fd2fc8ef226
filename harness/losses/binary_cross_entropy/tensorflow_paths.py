"""TensorFlow paths of the binary cross-entropy over logits (Keras 3), under tf.function by the
backend; gradients by tf.GradientTape.

``PATHS[name](logits, targets, *, pos_weight=None) -> loss``: per-element loss in the logits' dtype.
`with_logits` is tf.nn.sigmoid_cross_entropy_with_logits, max(x, 0) - x t + log1p(exp(-|x|)), or
with a pos_weight tf.nn.weighted_cross_entropy_with_logits, (1 - t) x + (1 + (w - 1) t)
(log1p(exp(-|x|)) + max(-x, 0)). `probs` is Keras's probability route (keras.ops.binary_crossentropy,
from_logits=False), which clips the probabilities to [1e-7, 1 - 1e-7] in the input dtype; the
sigmoid is passed through tf.identity so that Keras does not recognise it and use its logits.
tf.math.softplus returns x itself above -(ln(machine epsilon) + 2): 13.94 in float32, 34.04 in float64.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from harness.backends.tensorflow import autodiff_gradient  # noqa: E402


def _weighted(targets, pos_weight):
    return targets if pos_weight is None else pos_weight * targets


def naive(logits, targets, *, pos_weight=None):
    s = tf.sigmoid(logits)
    return -(_weighted(targets, pos_weight) * tf.math.log(s) + (1 - targets) * tf.math.log(1 - s))


def probs(logits, targets):
    return keras.ops.binary_crossentropy(targets, tf.identity(tf.sigmoid(logits)), from_logits=False)


def with_logits(logits, targets, *, pos_weight=None):
    if pos_weight is None:
        return tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
    return tf.nn.weighted_cross_entropy_with_logits(labels=targets, logits=logits, pos_weight=pos_weight)


def log_sigmoid(logits, targets, *, pos_weight=None):
    return -(
        _weighted(targets, pos_weight) * tf.math.log_sigmoid(logits) + (1 - targets) * tf.math.log_sigmoid(-logits)
    )


def softplus(logits, targets, *, pos_weight=None):
    weighted = _weighted(targets, pos_weight)
    return (1 - targets + weighted) * tf.math.softplus(logits) - weighted * logits


PATHS = {
    "naive": naive,
    "probs": probs,
    "with_logits": with_logits,
    "log_sigmoid": log_sigmoid,
    "softplus": softplus,
}

GRADIENTS = {name: autodiff_gradient(path) for name, path in PATHS.items()}
