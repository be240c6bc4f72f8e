"""The shift ratio of a gradient without a shift: the reference value of ``gw.shift_ratio``.

For a filter with n gradient entries that are independent, zero-mean Gaussian with standard
deviation sigma, the filter's average gradient g_i ~ N(0, sigma^2 / n), so

    E|g_i| / (sigma / sqrt(n)) = E|Z| = sqrt(2 / pi) ~= 0.798,    Z ~ N(0, 1).

``varprobe.stats.grad_shift_stats`` measures this ratio with rms(dL/dW) for sigma; a ratio far
above it means the filters' gradients share an offset (the shift of the average gradient).
Nothing here imports the rest of varprobe.
"""
from __future__ import annotations

import math

__all__ = ["NULL_SHIFT_RATIO"]

#: sqrt(2 / pi): E|Z| for Z ~ N(0, 1), the shift ratio of independent zero-mean gradient entries.
NULL_SHIFT_RATIO = math.sqrt(2 / math.pi)
