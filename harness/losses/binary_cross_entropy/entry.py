"""The entry of the binary cross-entropy over logits (a `harness.losses.LossEntry`): its name,
formula and named arrays, and where its references, path entries and theory live, by module path,
so that reading it imports no framework and no reference.

Per element: loss = -(w t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))) with w = pos_weight (1 by
default); the gradient with respect to the logits is (1 - t) sigmoid(x) - w t sigmoid(-x).
"""

from __future__ import annotations

from harness.losses import LossEntry
from harness.losses.binary_cross_entropy.theory import MECHANISMS

_HERE = "harness.losses.binary_cross_entropy"

ENTRY = LossEntry(
    name="binary_cross_entropy",
    title="binary cross-entropy",
    formula="-(w t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))), per element; w = pos_weight",
    arrays=("logits", "targets"),
    gradient_formula="(1 - t) sigmoid(x) - w t sigmoid(-x)",
    exact_at=f"{_HERE}.exact:exact_binary_cross_entropy",
    exact_gradient_at=f"{_HERE}.exact:exact_binary_cross_entropy_gradient",
    paths_at=f"{_HERE}.paths",
    quantities_at=f"{_HERE}.inputs:quantities",
    mechanisms=MECHANISMS,
    families=("spread", "offset", "file", "inline"),
    default_families=("spread", "offset"),
    inputs_at=f"{_HERE}.inputs",
    theory_at=f"{_HERE}.theory",
    # targets: hard, smoothed or soft (inputs.TARGET_KINDS); pos_weight: None, or w >= 0 (PyTorch's meaning)
    settings=(("targets", ("hard",)), ("pos_weight", (None,))),
    options=("pos_weight",),  # keyword-only in every path and reference, passed as an array in the dtype
    differentiated="logits",
    per="element",  # one loss per logit (cross-entropy: one per row)
    quantities=("max_logit", "min_logit", "max_exact_loss"),
    loss_options=("ignore_fraction", "class_weights"),  # ignored rows, and a weight per label, composed by hand
)
