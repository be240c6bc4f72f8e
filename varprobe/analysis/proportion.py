"""Outcomes that happen or not over seeds: exact proportion intervals and two-sample comparisons."""
from __future__ import annotations

import math

from scipy import stats
from scipy.stats.contingency import odds_ratio

from .uncertainty import Interval

__all__ = ["proportion_ci", "odds_ratio_ci", "fisher_p"]


def _counts(k: int, n: int, name: str) -> None:
    if isinstance(k, bool) or isinstance(n, bool) or int(k) != k or int(n) != n or not 0 <= k <= n or n < 1:
        raise ValueError(f"{name}: need integers 0 <= k <= n, n >= 1; got k={k!r}, n={n!r}")


def proportion_ci(k: int, n: int, level: float = 0.95) -> Interval:
    """Proportion k/n with the exact (Clopper-Pearson) interval at ``level``.

    With a = 1 - level: low = B^{-1}(a/2; k, n - k + 1) (0 when k = 0) and
    high = B^{-1}(1 - a/2; k + 1, n - k) (1 when k = n), B^{-1} the beta quantile: the proportions
    p for which the one-sided binomial tail probability of the observed k is at least a/2.
    Computed by ``scipy.stats.binomtest(k, n).proportion_ci(level, method="exact")``.
    """
    _counts(k, n, "proportion_ci")
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="exact")
    return Interval(k / n, float(ci.low), float(ci.high), int(n), level)


def odds_ratio_ci(k1: int, n1: int, k2: int, n2: int, level: float = 0.95) -> Interval:
    """Odds ratio of an event in group 1 (k1 of n1) against group 2 (k2 of n2), with the exact
    conditional interval that inverts Fisher's exact test.

    Table [[k1, n1 - k1], [k2, n2 - k2]]. Estimate: the conditional maximum-likelihood odds ratio
    (``scipy.stats.contingency.odds_ratio(kind="conditional")``); 0 or inf when a cell makes it so.
    Interval [low, high]: the odds ratios psi for which the noncentral hypergeometric tail
    probability P_psi(K1 >= k1) (for low) or P_psi(K1 <= k1) (for high), K1 the first cell given
    the margins, is at least (1 - level)/2. An odds ratio above 1 means the event is more frequent
    in group 1. ``n`` of the result is n1 + n2.
    """
    _counts(k1, n1, "odds_ratio_ci")
    _counts(k2, n2, "odds_ratio_ci")
    table = [[int(k1), int(n1 - k1)], [int(k2), int(n2 - k2)]]
    res = odds_ratio(table, kind="conditional")
    ci = res.confidence_interval(confidence_level=level)
    est = float(res.statistic)
    return Interval(est if not math.isnan(est) else math.nan, float(ci.low), float(ci.high), int(n1 + n2), level)


def fisher_p(k1: int, n1: int, k2: int, n2: int, alternative: str = "two-sided") -> float:
    """p-value of Fisher's exact test of table [[k1, n1 - k1], [k2, n2 - k2]]
    (``scipy.stats.fisher_exact``): the hypergeometric probability, given the margins, of tables at
    least as extreme as the observed one (two-sided: every table no more probable than it;
    "greater": first cell >= k1; "less": first cell <= k1)."""
    _counts(k1, n1, "fisher_p")
    _counts(k2, n2, "fisher_p")
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative must be 'two-sided', 'greater' or 'less', got {alternative!r}")
    return float(stats.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative=alternative).pvalue)
