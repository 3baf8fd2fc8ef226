"""TensorFlow paths of the distillation loss T**2 KL(softmax(t / T) || softmax(s / T)) (Keras 3).

``PATHS[name](teacher, student, *, temperature=1.0) -> loss``: per-row loss in the logits' dtype;
``GRADIENTS[name]``: d(sum of the losses) / d student by tf.GradientTape. `kl_div` is
keras.losses.kl_divergence(p, q), which clips both to [1e-7, 1] before p log(p / q); TensorFlow
has no KL on log-probabilities (no `kl_div_log_target`: declared in the entries).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from harness.backends.tensorflow import autodiff_gradient  # noqa: E402
from harness.losses.kl_divergence.gradients import with_respect_to_student  # noqa: E402


def naive(teacher, student, *, temperature=1.0):
    p = tf.nn.softmax(teacher / temperature, axis=1)
    q = tf.nn.softmax(student / temperature, axis=1)
    return temperature**2 * tf.reduce_sum(p * (tf.math.log(p) - tf.math.log(q)), axis=1)


def kl_div(teacher, student, *, temperature=1.0):
    """keras.losses.kl_divergence(softmax(t / T), softmax(s / T)): both clipped to [1e-7, 1]."""
    p = tf.identity(tf.nn.softmax(teacher / temperature, axis=1))
    q = tf.identity(tf.nn.softmax(student / temperature, axis=1))
    return temperature**2 * keras.losses.kl_divergence(p, q)


def ce_minus_entropy(teacher, student, *, temperature=1.0):
    """tf.nn.softmax_cross_entropy_with_logits(p, s / T) minus the same with t / T."""
    p = tf.nn.softmax(teacher / temperature, axis=1)
    cross = tf.nn.softmax_cross_entropy_with_logits(labels=p, logits=student / temperature)
    entropy = tf.nn.softmax_cross_entropy_with_logits(labels=p, logits=teacher / temperature)
    return temperature**2 * (cross - entropy)


PATHS = {
    "naive": naive,
    "kl_div": kl_div,
    "ce_minus_entropy": ce_minus_entropy,
}

GRADIENTS = {name: with_respect_to_student(autodiff_gradient, path) for name, path in PATHS.items()}
