"""The verdict rule of ``varprobe reproduce``, fixed before any experiment runs."""
from __future__ import annotations

from typing import Literal

from .uncertainty import Interval

__all__ = ["verdict", "VERDICTS"]

VERDICTS = ("holds", "does not hold", "inconclusive")
Direction = Literal[">", "<"]


def verdict(ci: Interval, direction: Direction, threshold: float) -> str:
    """"holds" when the whole interval lies on the expected side of ``threshold`` (strictly above for
    ``">"``, strictly below for ``"<"``), "does not hold" when it lies wholly on the other side (the
    threshold included), "inconclusive" otherwise (it straddles the threshold, or is nan)."""
    if direction not in (">", "<"):
        raise ValueError(f"direction must be '>' or '<', got {direction!r}")
    lo, hi = ci.low, ci.high
    if direction == ">":
        if lo > threshold:
            return "holds"
        if hi <= threshold:
            return "does not hold"
    else:
        if hi < threshold:
            return "holds"
        if lo >= threshold:
            return "does not hold"
    return "inconclusive"
