"""The logit families by name, and how each makes a cell's logits from its base at a scale.

Data and pure functions only (no loader, no framework): harness.sweep.inputs draws the bases, and
harness.outputs orders tables by these names without importing what reads logit files.
"""

FAMILIES = {
    "spread": lambda z, scale: scale * z,  # logits spread wider: exp overflows, p underflows
    "offset": lambda z, scale: z + scale,  # common shift: the exact loss is unchanged
    "masked": lambda z, scale: scale * z,  # spread, then -inf at mask_fraction of each row (option_inputs)
    "file": lambda data, scale: scale * data,  # logits read from a file (settings under `file`)
    "inline": lambda data, scale: scale * data,  # logits written in the config (settings under `inline`)
}
GIVEN_FAMILIES = ("file", "inline")  # their shape comes from the data, not from n_rows/n_classes
