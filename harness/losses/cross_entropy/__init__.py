"""Cross-entropy over logits: lse(x) - x[y] per row, the harness's first loss.

Its parts live where the stages keep them and are named here: the exact references in
harness.exact (double-double, correct over float64's whole range), the path entries in
harness.paths with one implementation module per framework, the loss options in
harness.paths.options, the edge inputs in harness.sweep.edge_cases and the language-model head
(the loss of h W^T + b) in harness.paths.head.
"""

from harness.losses import LossEntry
from harness.mechanisms import FAILURE_MECHANISMS

ENTRY = LossEntry(
    name="cross_entropy",
    title="cross-entropy",
    formula="lse(x) - x[y] = log(sum_j exp(x_j)) - x_y",
    arrays=("logits", "labels"),
    gradient_formula="softmax(x) - onehot(y)",
    exact_at="harness.exact.reference:exact_cross_entropy",
    exact_gradient_at="harness.exact.gradient:exact_gradient",
    error_bound_at="harness.sweep.metrics:lse_bound",
    quantities_at="harness.sweep.cells:input_quantities",
    paths_at="harness.paths",
    options_at="harness.paths.options",
    edge_cases_at="harness.sweep.edge_cases",
    head_at="harness.paths.head",
    mechanisms=tuple(FAILURE_MECHANISMS),
    families=("spread", "offset", "masked", "file", "inline", "head", "head_file"),
    default_paths=("naive", "softmax_log", "log_softmax_nll", "fused"),
    default_families=("spread", "offset"),
)
