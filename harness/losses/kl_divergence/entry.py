"""The entry of the distillation loss T**2 KL(softmax(t / T) || softmax(s / T)) (a
`harness.losses.LossEntry`): its name, formula and named arrays, and where its references, path
entries and theory live, by module path, so that reading it imports no framework and no reference.

Per row: loss = T**2 sum_j p_j (log p_j - log q_j), p = softmax(teacher / T), q = softmax(student / T);
the gradient with respect to the student's logits is T (q - p).
"""

from __future__ import annotations

from harness.losses import LossEntry
from harness.losses.kl_divergence.theory import MECHANISMS

_HERE = "harness.losses.kl_divergence"

ENTRY = LossEntry(
    name="kl_divergence",
    title="KL divergence",
    formula="T**2 sum_j p_j (log p_j - log q_j), p = softmax(t / T), q = softmax(s / T), per row",
    arrays=("teacher", "student"),
    gradient_formula="T (softmax(s / T) - softmax(t / T)), with respect to the student's logits",
    exact_at=f"{_HERE}.exact:exact_kl_divergence",
    exact_gradient_at=f"{_HERE}.exact:exact_kl_divergence_gradient",
    paths_at=f"{_HERE}.paths",
    quantities_at=f"{_HERE}.inputs:quantities",
    mechanisms=MECHANISMS,
    families=("independent", "near", "file", "inline"),
    default_families=("independent", "near"),
    inputs_at=f"{_HERE}.inputs",
    theory_at=f"{_HERE}.theory",
    # delta: the near family's distance of the student from its teacher; temperature: T > 0, loss times T**2
    settings=(("delta", (1e-3,)), ("temperature", (1.0,))),
    options=("temperature",),  # keyword-only in every path and reference
    differentiated="student",
    per="row",
    quantities=(
        "max_logit",
        "min_teacher_log_prob",
        "min_student_log_prob",
        "max_exact_loss",
        "min_exact_loss",
        "max_condition",
    ),
    loss_options=("ignore_fraction",),  # ignored rows (padding tokens), composed by hand
)
