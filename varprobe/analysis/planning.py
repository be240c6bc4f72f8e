"""Planning figures: how many seeds the observed effect and spread say would settle a row.

A planning figure, not a rerun rule: the verdict of a row is decided by the interval at the n it
was run with; these numbers size the next experiment. Each assumes the observed estimate and
spread are the true ones (the usual, optimistic, plug-in power calculation at 50% power: the
interval at that n, centred on the observed estimate, just excludes the threshold).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

__all__ = ["seeds_for_mean", "seeds_for_proportion", "seeds_for_two_proportions", "seeds_for_interval"]

CAP = 10_000


def seeds_for_mean(mean: float, sd: float, threshold: float, level: float = 0.95, cap: int = CAP) -> int | None:
    """Smallest n >= 2 with t_{(1+level)/2, n-1} * sd / sqrt(n) < |mean - threshold|: the number
    of values whose Student-t interval around ``mean`` excludes ``threshold`` (``sd``: the unbiased
    standard deviation of one value). For a log-scale row pass the mean and sd of the logs and the
    log of the threshold. None when mean == threshold, a value is not finite, or n > ``cap``."""
    gap = abs(mean - threshold)
    if not (math.isfinite(gap) and math.isfinite(sd)) or gap == 0 or sd < 0:
        return None
    n = np.arange(2, cap + 1)
    ok = stats.t.ppf(0.5 + level / 2, n - 1) * sd / np.sqrt(n) < gap
    return int(n[ok][0]) if ok.any() else None


def _cp_bounds(k: np.ndarray, n: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    a = 1 - level
    with np.errstate(invalid="ignore"):
        low = np.where(k == 0, 0.0, stats.beta.ppf(a / 2, k, n - k + 1))
        high = np.where(k == n, 1.0, stats.beta.ppf(1 - a / 2, k + 1, n - k))
    return low, high


def seeds_for_proportion(p_hat: float, threshold: float, level: float = 0.95, cap: int = CAP) -> int | None:
    """Smallest n >= 1 whose exact (Clopper-Pearson) interval for k = round(p_hat * n) events out
    of n excludes ``threshold``: low > threshold when p_hat > threshold, high < threshold when
    p_hat < threshold. None when p_hat == threshold, is not in [0, 1], or n > ``cap``."""
    if not (0.0 <= p_hat <= 1.0) or not (0.0 < threshold < 1.0) or p_hat == threshold:
        return None
    n = np.arange(1, cap + 1)
    k = np.round(p_hat * n)
    low, high = _cp_bounds(k, n, level)
    ok = low > threshold if p_hat > threshold else high < threshold
    return int(n[ok][0]) if ok.any() else None


def seeds_for_two_proportions(p1: float, p2: float, level: float = 0.95, cap: int = 1000) -> int | None:
    """Smallest n (per group) at which k1 = round(p1 n) of n against k2 = round(p2 n) of n makes
    the one-sided Fisher exact p-value, in the direction of p1 - p2, smaller than (1 - level)/2:
    the n at which the exact conditional odds-ratio interval excludes 1. None when p1 == p2, a
    proportion is outside [0, 1], or n > ``cap``."""
    if not (0 <= p1 <= 1 and 0 <= p2 <= 1) or p1 == p2:
        return None
    side = "greater" if p1 > p2 else "less"
    for n in range(1, cap + 1):
        k1, k2 = round(p1 * n), round(p2 * n)
        if k1 == k2:
            continue
        if stats.fisher_exact([[k1, n - k1], [k2, n - k2]], alternative=side).pvalue < (1 - level) / 2:
            return n
    return None


def seeds_for_interval(estimate: float, low: float, high: float, threshold: float, seeds: int,
                       cap: int = CAP) -> int | None:
    """Seeds at which an interval that shrinks as 1/sqrt(n) (a large-sample interval over runs,
    the same number of runs per seed) would exclude ``threshold``: with h the half-width on the
    threshold's side (estimate - low when estimate > threshold, high - estimate otherwise) at
    ``seeds`` seeds and gap = |estimate - threshold|, the smallest n with h sqrt(seeds / n) < gap,
    i.e. floor(seeds (h / gap)^2) + 1. None when gap is 0, a value is not finite, or n > ``cap``."""
    gap = abs(estimate - threshold)
    h = estimate - low if estimate > threshold else high - estimate
    if not (math.isfinite(gap) and math.isfinite(h)) or gap == 0 or h < 0:
        return None
    n = math.floor(seeds * (h / gap) ** 2) + 1
    return n if n <= cap else None
