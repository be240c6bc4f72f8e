"""Positive ratios and growth factors over seeds: intervals on the log scale."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .uncertainty import Interval, mean_ci

__all__ = ["geometric_ci"]


def geometric_ci(values: Sequence[float], level: float = 0.95) -> Interval:
    """Geometric mean of positive ``values`` with the back-transformed Student-t interval of the logs.

    With l_i = ln x_i, lbar their mean and s their unbiased standard deviation:
    estimate = exp(lbar), interval = exp(lbar -+ t_{(1+level)/2, n-1} s / sqrt(n)). The interval is
    for the median of a log-normal quantity (its geometric mean) and is never negative; a ratio
    that varies by factors over seeds is summarised by its typical factor. A value <= 0 or not
    finite has no logarithm: the result is then (nan, nan, nan). One value: an infinite interval
    [0, inf].
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("geometric_ci needs at least one value, got none")
    if not np.all(np.isfinite(x)) or np.any(x <= 0):
        return Interval(math.nan, math.nan, math.nan, int(x.size), level)
    ci = mean_ci(np.log(x), level)
    return Interval(math.exp(ci.estimate), math.exp(ci.low), math.exp(ci.high), ci.n, level)
