"""What the small command-line tools share: one-line argument errors and checked number types."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path


def command_name(module_form: str | None) -> str | None:
    """The name the user typed: a console command (`harness-compare`) as such, else the `python -m` form."""
    invoked = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return invoked if invoked.startswith("harness") and not invoked.endswith(".py") else module_form


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr, exit status 2, no usage block; its usage
    names the command as it was run (command_name)."""

    def __init__(self, *args, prog: str | None = None, **kwargs):
        super().__init__(*args, prog=command_name(prog), **kwargs)

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
