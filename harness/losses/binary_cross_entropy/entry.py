"""Everything the harness knows about the binary cross-entropy over logits, in one place: its name
and formula, its inputs by name and how each family makes them, its options, its exact reference
for the loss and the gradient, theory's mechanisms and thresholds, and its path entries (the
implementations, one module per framework beside this file, are found through `paths`).

Per element: loss = -(w t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))), w = pos_weight (1 by default);
the gradient with respect to the logits is (1 - t) sigmoid(x) - w t sigmoid(-x), sigmoid(x) - t for w = 1.
"""

from __future__ import annotations

from harness.losses.binary_cross_entropy import inputs, paths, theory
from harness.losses.binary_cross_entropy.exact import (
    exact_binary_cross_entropy,
    exact_binary_cross_entropy_gradient,
)

NAME = "binary_cross_entropy"
TITLE = "binary cross-entropy"
FORMULA = "-(w t log sigmoid(x) + (1 - t) log(1 - sigmoid(x)))"
GRADIENT_FORMULA = "(1 - t) sigmoid(x) - w t sigmoid(-x)"
INPUTS = ("logits", "targets")  # float64 named arrays of one shape, one value per label
DIFFERENTIATED = "logits"  # the gradient is taken with respect to this input
PER = "element"  # one loss per logit (cross-entropy: one per row)
OPTIONS = {paths.POS_WEIGHT: None}  # PyTorch's and TensorFlow's pos_weight: None or w >= 0, broadcast
FAMILIES = inputs.FAMILIES
TARGET_KINDS = inputs.TARGET_KINDS
draw = inputs.draw
check_inputs = inputs.check_inputs
exact_loss = exact_binary_cross_entropy  # (logits, targets, output_precision=53, *, pos_weight=None) -> ExactValue
exact_gradient = exact_binary_cross_entropy_gradient
MECHANISMS = theory.MECHANISMS
thresholds = theory.thresholds
PATH_ENTRIES = paths.ENTRIES
PATH_NAMES = paths.PATH_NAMES
implementation = paths.implementation
unsupported_reason = paths.unsupported_reason
