"""Everything the harness knows about the distillation loss T**2 KL(softmax(t / T) || softmax(s / T)),
in one place: its name and formula, its inputs by name and how each family makes them, its options,
its exact reference for the loss and the gradient with respect to the student, theory's mechanisms
and bounds, and its path entries (the implementations, one module per framework beside this file,
are found through `paths`).

Per row: loss = T**2 sum_j p_j (log p_j - log q_j), p = softmax(teacher / T), q = softmax(student / T);
the gradient with respect to the student's logits is T (q - p).
"""

from __future__ import annotations

from harness.losses.kl_divergence import inputs, paths, theory
from harness.losses.kl_divergence.exact import exact_kl_divergence, exact_kl_divergence_gradient

NAME = "kl_divergence"
TITLE = "KL divergence"
FORMULA = "T**2 KL(softmax(t / T) || softmax(s / T))"
GRADIENT_FORMULA = "T (softmax(s / T) - softmax(t / T))"
INPUTS = ("teacher", "student")  # float64 (rows, classes) logits of one shape; the teacher may hold -inf
DIFFERENTIATED = "student"  # the gradient is taken with respect to this input
PER = "row"
OPTIONS = {"temperature": 1.0}  # T > 0; the loss is scaled by T**2, as distillation scales it
FAMILIES = inputs.FAMILIES
draw = inputs.draw
check_inputs = inputs.check_inputs
exact_loss = exact_kl_divergence  # (teacher, student, output_precision=53, *, temperature=1.0) -> ExactValue
exact_gradient = exact_kl_divergence_gradient
MECHANISMS = theory.MECHANISMS
condition = theory.condition
cancellation_bound = theory.cancellation_bound
PATH_ENTRIES = paths.ENTRIES
PATH_NAMES = paths.PATH_NAMES
implementation = paths.implementation
unsupported_reason = paths.unsupported_reason
