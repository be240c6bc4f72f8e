"""Confidence intervals of a mean over seeds (Student t; scipy, imported when one is computed)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["Interval", "mean_ci"]


@dataclass(frozen=True)
class Interval:
    """An estimate with a two-sided confidence interval [low, high] at ``level``, from ``n`` values."""

    estimate: float
    low: float
    high: float
    n: int
    level: float = 0.95

    def __str__(self) -> str:
        if self.n < 2 or not math.isfinite(self.low):
            return f"{self.estimate:.4g} (n={self.n}, no interval)"
        return f"{self.estimate:.4g} [{self.low:.4g}, {self.high:.4g}] (n={self.n})"


def mean_ci(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean of ``values`` with Student-t interval mean +- t_{(1+level)/2, n-1} * s / sqrt(n),
    s the unbiased sample standard deviation. Fewer than two values give an infinite interval; a
    non-finite value makes the interval (nan, nan)."""
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if n == 0:
        raise ValueError("mean_ci needs at least one value, got none")
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, -math.inf, math.inf, n, level)
    from scipy import stats  # here, not at import: the plots import this module without scipy

    half = stats.t.ppf(0.5 + level / 2, n - 1) * x.std(ddof=1) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, level)
