"""KL divergence between a teacher's and a student's softmax (distillation): its entry (`entry`), exact
references (`exact`, `exact_float64`), path entries (`paths`) with one implementation module per framework,
theory's bounds (`theory`) and input families (`inputs`)."""

from harness.losses.kl_divergence import entry as _entry

ENTRY = _entry.ENTRY
