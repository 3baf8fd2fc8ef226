"""Binary cross-entropy over logits: its entry (`entry`), exact references (`exact`), path entries (`paths`)
with one implementation module per framework, theory's thresholds (`theory`) and input families (`inputs`)."""

from harness.losses.binary_cross_entropy import entry as _entry

ENTRY = _entry.ENTRY
