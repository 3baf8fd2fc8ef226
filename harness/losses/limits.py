"""What a loss's theory states (its entry's `theory_at` module, `limits(framework, path, dtype, facts)`):
thresholds on the loss's quantities where a path fails, for the breakdown (harness.outputs.named_breakdown)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TOLERANCE = 0.01  # theory agrees with a measured break within 1% of its threshold


def g(value: float) -> str:
    return f"{value:.5g}"


@dataclass(frozen=True)
class Limit:
    """A mechanism's threshold on a quantity: the path fails once the quantity passes it (sense +1: from
    below, -1: from above)."""

    cause: str
    quantity: str
    threshold: float
    sense: int = 1
    upper: float | None = None  # a range [threshold, upper] where theory bounds the break but cannot place it
    # (upper inf: anywhere past the threshold, where it is necessary but not sufficient)
    why: str = ""  # what sets it, in words, for the explanation

    def fits(self, lo: float, hi: float) -> bool:
        """Whether the measured quantity, known to lie in [lo, hi], is within 1% of the threshold (or the
        range). Where lo is unknown (the first scale already failed) only that hi has passed it."""
        if not np.isfinite(hi):
            return False
        far = self.threshold if self.upper is None else self.upper
        if not np.isfinite(lo):
            return self.sense * (hi - self.threshold) >= -TOLERANCE * abs(self.threshold)
        if self.upper is None:
            low, high = min(lo, hi), max(lo, hi)
            return low - TOLERANCE * abs(low) <= self.threshold <= high + TOLERANCE * abs(high)
        low, high = min(lo, hi), max(lo, hi)
        start, end = (self.threshold, far) if self.sense > 0 else (far, self.threshold)
        return start - TOLERANCE * abs(start) <= high and low <= end + TOLERANCE * abs(end)

    def words(self) -> str:
        at = g(self.threshold) if self.upper is None else f"{g(self.threshold)} to {g(self.upper)}"
        at = f"{g(self.threshold)} on" if self.upper is not None and np.isinf(self.upper) else at
        return f"{self.cause} at {self.quantity} {at}" + (f" ({self.why})" if self.why else "")
