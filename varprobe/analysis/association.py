"""How well a per-run predictor ranks an outcome across runs, and which of two predictors ranks it
better: rank statistics with intervals that suit a few dozen runs.

* A binary outcome (a run collapsed or not): the AUC, A = P(X_event > X_other) + P(X_event =
  X_other) / 2 over all (event, non-event) pairs of runs (the Mann-Whitney statistic divided by
  m n). Interval: the score-type (Wilson-like) interval of Newcombe (2006, Stat. Med. 25:559,
  method 5), which stays inside [0, 1] and does not collapse to a point at A = 0 or 1: the
  theta in [0, 1] with (A - theta)^2 <= z^2 V(theta), where V is the Hanley-McNeil (1982) variance
  evaluated at theta with both group sizes replaced by their mean N* = (m + n) / 2:

      V(theta) = theta (1 - theta) [1 + (N* - 1)(1 - theta)/(2 - theta) + (N* - 1) theta/(1 + theta)] / (m n).

* A continuous outcome: Spearman's rank correlation r_s (the Pearson correlation of mid-ranks).
  Interval: Fisher's z with the Bonett-Wright (2000) standard error for r_s,
  tanh(atanh(r_s) -+ z sqrt((1 + r_s^2 / 2) / (n - 3))). At r_s = +-1 (every run in order) atanh
  is infinite and the interval would be a point: its bound towards 0 is then that of the nearest
  value r_s can take below 1 in size, +-(1 - 12 / (n^3 - n)) (two adjacent ranks swapped), and
  its other bound +-1.

* Two predictors of the same outcome measured on the same runs: the difference of their AUCs or
  of their Spearman correlations, with Zou's (2007) MOVER interval, which recovers the variance of
  the difference from the two single intervals (l_j, u_j) and the correlation c of the two
  estimates:

      L = d - sqrt((e1 - l1)^2 + (u2 - e2)^2 - 2 c (e1 - l1)(u2 - e2))
      U = d + sqrt((u1 - e1)^2 + (e2 - l2)^2 - 2 c (u1 - e1)(e2 - l2)),   d = e1 - e2.

  For AUCs, c is the DeLong, DeLong and Clarke-Pearson (1988) correlation of the two estimates
  (from the placement values; 0 when a variance is 0, the conservative choice for c >= 0). For
  correlations sharing the outcome, c is the large-sample correlation of two overlapping
  correlations (Olkin-Finn / Dunn-Clark, as in Zou 2007), with r12 the Spearman correlation of the
  two predictors: c = [(r12 - r1 r2 / 2)(1 - r1^2 - r2^2 - r12^2) + r12^3] / [(1 - r1^2)(1 - r2^2)].

No bootstrap: with 20-60 runs its intervals are unreliable for these statistics, and these have
documented coverage near the nominal level at such sizes (tests/analysis/test_association.py
measures it). Runs with a NaN value are left out (``Interval.n`` counts the runs used); +-inf
rank at the ends (a quantity that grew without bound is the largest).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import optimize, stats

from .uncertainty import Interval

__all__ = ["auc", "auc_ci", "auc_diff_ci", "spearman", "spearman_ci", "spearman_diff_ci", "mover"]


def _z(level: float) -> float:
    return float(stats.norm.ppf(0.5 + level / 2))


def _finite(*cols: Sequence) -> list[np.ndarray]:
    arrs = [np.asarray(c, dtype=np.float64) for c in cols]
    if len({a.shape for a in arrs}) != 1 or arrs[0].ndim != 1:
        raise ValueError(f"need 1-D sequences of equal length, got shapes {[a.shape for a in arrs]}")
    keep = np.logical_and.reduce([~np.isnan(a) for a in arrs])
    return [a[keep] for a in arrs]


def _placements(x: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong placement values: V10_i = mean_j psi(X_i, Y_j) for each event run i, V01_j =
    mean_i psi(X_i, Y_j) for each non-event run j, psi(a, b) = 1 (a > b), 1/2 (a = b), 0."""
    pos, neg = x[event], x[~event]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    return psi.mean(1), psi.mean(0)


def auc(x: Sequence[float], event: Sequence[bool]) -> float:
    """A = P(X_event > X_other) + P(X_event = X_other) / 2 (nan without both kinds of run)."""
    xs, ev = np.asarray(x, dtype=np.float64), np.asarray(event, dtype=bool)
    if ev.all() or not ev.any():
        return math.nan
    v10, _ = _placements(xs, ev)
    return float(v10.mean())


def _newcombe(a: float, m: int, n: int, z: float) -> tuple[float, float]:
    star = (m + n) / 2

    def f(theta: float) -> float:
        var = theta * (1 - theta) * (1 + (star - 1) * (1 - theta) / (2 - theta)
                                     + (star - 1) * theta / (1 + theta)) / (m * n)
        return (a - theta) ** 2 - z * z * var

    # f < 0 strictly inside (0, 1) at theta = a, and just inside an end when a sits on it
    inner = min(max(a, 1e-12), 1 - 1e-12)
    low = 0.0 if a <= 0 else optimize.brentq(f, 0.0, inner, xtol=1e-15)
    high = 1.0 if a >= 1 else optimize.brentq(f, inner, 1.0, xtol=1e-15)
    return low, high


def auc_ci(x: Sequence[float], event: Sequence[bool], level: float = 0.95) -> Interval:
    """AUC of predictor ``x`` for the runs where ``event`` is true, with Newcombe's score interval
    (module docstring). ``n`` counts the runs whose ``x`` is not NaN; without both kinds of run the
    result is (nan, nan, nan)."""
    xs, ev = _finite(x, np.asarray(event, dtype=np.float64))
    ev = ev.astype(bool)
    m, n = int(ev.sum()), int((~ev).sum())
    if m == 0 or n == 0:
        return Interval(math.nan, math.nan, math.nan, m + n, level)
    a = auc(xs, ev)
    low, high = _newcombe(a, m, n, _z(level))
    return Interval(a, low, high, m + n, level)


def mover(e1: float, ci1: tuple[float, float], e2: float, ci2: tuple[float, float], c: float
          ) -> tuple[float, float]:
    """Zou's (2007) MOVER interval for e1 - e2 from the single intervals and their correlation c."""
    (l1, u1), (l2, u2) = ci1, ci2
    d = e1 - e2
    low = d - math.sqrt(max((e1 - l1) ** 2 + (u2 - e2) ** 2 - 2 * c * (e1 - l1) * (u2 - e2), 0.0))
    high = d + math.sqrt(max((u1 - e1) ** 2 + (e2 - l2) ** 2 - 2 * c * (u1 - e1) * (e2 - l2), 0.0))
    return low, high


def _delong_corr(x1: np.ndarray, x2: np.ndarray, ev: np.ndarray) -> float:
    """Correlation of the two AUC estimates from DeLong's covariance: S10/m + S01/n, S10 and S01
    the (unbiased) covariance matrices of the placement values; 0 where a variance is 0."""
    m, n = int(ev.sum()), int((~ev).sum())
    if m < 2 or n < 2:
        return 0.0
    p = [_placements(x, ev) for x in (x1, x2)]
    s10 = np.cov(np.stack([p[0][0], p[1][0]]))
    s01 = np.cov(np.stack([p[0][1], p[1][1]]))
    cov = s10 / m + s01 / n
    if cov[0, 0] <= 0 or cov[1, 1] <= 0:
        return 0.0
    return float(np.clip(cov[0, 1] / math.sqrt(cov[0, 0] * cov[1, 1]), -1.0, 1.0))


def auc_diff_ci(x1: Sequence[float], x2: Sequence[float], event: Sequence[bool], level: float = 0.95) -> Interval:
    """AUC(x1) - AUC(x2) on the same runs (those where neither is NaN), with the MOVER interval
    from the two Newcombe intervals and the DeLong correlation (module docstring)."""
    a, b, e = _finite(x1, x2, np.asarray(event, dtype=np.float64))
    ev = e.astype(bool)
    m, n = int(ev.sum()), int((~ev).sum())
    if m == 0 or n == 0:
        return Interval(math.nan, math.nan, math.nan, m + n, level)
    c1, c2 = auc_ci(a, ev, level), auc_ci(b, ev, level)
    low, high = mover(c1.estimate, (c1.low, c1.high), c2.estimate, (c2.low, c2.high), _delong_corr(a, b, ev))
    return Interval(c1.estimate - c2.estimate, low, high, m + n, level)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's r_s: the Pearson correlation of the mid-ranks (nan if either is constant)."""
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / den) if den > 0 else math.nan


def _fisher(r: float, n: int, z: float) -> tuple[float, float]:
    if n < 4 or not math.isfinite(r):
        return (-1.0, 1.0) if math.isfinite(r) else (math.nan, math.nan)
    if abs(r) >= 1:  # atanh is infinite: the far bound is that of the nearest attainable r_s
        low, high = _fisher(math.copysign(1 - 12 / (n ** 3 - n), r), n, z)
        return (low, 1.0) if r > 0 else (-1.0, high)
    half = z * math.sqrt((1 + r * r / 2) / (n - 3))
    zr = math.atanh(r)
    return math.tanh(zr - half), math.tanh(zr + half)


def spearman_ci(x: Sequence[float], y: Sequence[float], level: float = 0.95) -> Interval:
    """Spearman's r_s with the Fisher-z / Bonett-Wright interval (module docstring). Fewer than 4
    runs: the interval is [-1, 1]."""
    xs, ys = _finite(x, y)
    r = spearman(xs, ys) if xs.size >= 2 else math.nan
    low, high = _fisher(r, int(xs.size), _z(level))
    return Interval(r, low, high, int(xs.size), level)


def spearman_diff_ci(x1: Sequence[float], x2: Sequence[float], y: Sequence[float], level: float = 0.95
                     ) -> Interval:
    """r_s(x1, y) - r_s(x2, y) on the same runs, with Zou's MOVER interval for two overlapping
    correlations (module docstring)."""
    a, b, ys = _finite(x1, x2, y)
    n = int(ys.size)
    if n < 2:
        return Interval(math.nan, math.nan, math.nan, n, level)
    r1, r2, r12 = spearman(a, ys), spearman(b, ys), spearman(a, b)
    if not all(math.isfinite(v) for v in (r1, r2)):
        return Interval(math.nan, math.nan, math.nan, n, level)
    z = _z(level)
    den = (1 - r1 * r1) * (1 - r2 * r2)
    if not math.isfinite(r12) or den <= 0:
        c = 0.0
    else:
        c = ((r12 - r1 * r2 / 2) * (1 - r1 * r1 - r2 * r2 - r12 * r12) + r12 ** 3) / den
    low, high = mover(r1, _fisher(r1, n, z), r2, _fisher(r2, n, z), c)
    return Interval(r1 - r2, low, high, n, level)
