"""What the small command-line tools share: one-line argument errors and checked number types."""

from __future__ import annotations

import argparse
import math


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr, exit status 2, no usage block."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see --help)\n")


def non_negative(text: str) -> float:
    """argparse type: a finite number >= 0 (tolerances, bits-lost limits)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value
