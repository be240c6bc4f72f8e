"""The statistic of each kind of quantity, fixed in code before any experiment runs.

A claim's ``kind`` decides how its per-seed values become an interval; the verdict then follows
from that interval and the claim's fixed threshold by the one rule of ``varprobe.analysis.verdict``
(holds: the whole 95% interval on the expected side; does not hold: wholly on the other side;
inconclusive otherwise). Nothing here looks at which verdict a choice would give.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..analysis import (Interval, auc_ci, auc_diff_ci, fisher_p, geometric_ci, mean_ci, odds_ratio_ci, paired_ci,
                        proportion_ci, seeds_for_interval, seeds_for_mean, seeds_for_proportion,
                        seeds_for_two_proportions, sign_string, spearman_ci, spearman_diff_ci, verdict)
from ..analysis.slopes import slope_interval

__all__ = ["KINDS", "ACROSS_RUNS", "Summary", "summarize"]

#: kind -> what its values are, and the statistic (the report prints this table).
KINDS: dict[str, str] = {
    "identity": "an algebraic identity or bound, one value per seed: the worst seed and the range over seeds "
                "(no sampling question: it holds only when every seed is on the expected side)",
    "outcome": "an outcome that happens or not per seed: the proportion k/n with its exact Clopper-Pearson interval",
    "outcome2": "the same outcome under two schemes: odds ratio (first scheme against the second) with the exact "
                "conditional interval that inverts Fisher's exact test, against 1; Fisher's two-sided p beside it",
    "ratio": "a positive ratio or growth factor: geometric mean with the Student-t interval of the logs, "
             "back-transformed",
    "paired": "a difference between two schemes on the same seed: mean difference with the paired Student-t "
              "interval, per-seed signs beside it",
    "mean": "a bounded or signed quantity (a share, a correlation, a change): mean with the Student-t interval",
    # Across runs, not seeds: each seed gives one (predictor..., outcome) tuple per run; n counts runs.
    "auc": "how well a per-run predictor ranks a binary outcome across runs (every run of the profile at that lr): "
           "AUC = P(predictor of a run with the outcome > that of a run without) + ties/2, with Newcombe's (2006) "
           "score interval; per-seed AUCs beside it",
    "auc2": "which of two predictors ranks the binary outcome better on the same runs: AUC difference with Zou's "
            "(2007) MOVER interval from the two Newcombe intervals and the DeLong (1988) correlation",
    "rank": "how well a per-run predictor ranks a continuous outcome across runs: Spearman's r_s with the Fisher-z "
            "interval and the Bonett-Wright (2000) standard error; per-seed r_s beside it",
    "rank2": "which of two predictors ranks the continuous outcome better on the same runs: difference of the two "
             "Spearman correlations with Zou's (2007) MOVER interval for overlapping correlations",
    # A width sweep (varprobe.experiment.sweep): each seed gives one slope per layer.
    "slopes": "width slopes of several layers, per seed one slope of log(statistic) on log(width) per layer (minus "
              "theory's where the row says so): per layer the mean slope with the interval of a sweep's slopes.csv "
              "(the ratio statistic on the factor per doubling 2^slope, back on the slope scale); the row reads "
              "the layer nearest to breaking the claim. With '<': the largest |slope|, its interval from the "
              "largest distance of a layer's interval from 0 to the largest |end| of one (below the threshold "
              "when every layer's interval lies inside +-threshold, at or above it when one lies wholly "
              "outside); with '>': the smallest slope, its interval from the smallest low end to the smallest "
              "high end (above the threshold when every layer's interval is)",
}
#: kinds whose values are, per seed, a list of per-run tuples (predictor, outcome) or
#: (predictor 1, predictor 2, outcome)
ACROSS_RUNS = ("auc", "auc2", "rank", "rank2")


@dataclass(frozen=True)
class Summary:
    """What a row reports: the interval the verdict reads, the verdict, the text shown, the per-seed
    values (numbers; outcomes as 1/0; pairs as their difference), and the planning figure (seeds
    that the observed effect and spread say would settle an inconclusive row; None otherwise or
    when no number of seeds would)."""

    interval: Interval
    verdict: str
    shown: str
    per_seed: list[float]
    planning: int | None


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _ci(ci: Interval) -> str:
    return f"[{_fmt(ci.low)}, {_fmt(ci.high)}]"


def _across_runs(kind: str, values: Sequence) -> tuple[Interval, str, list[float]]:
    """Pool the per-run tuples of every seed into one statistic (n: runs); per seed, the same
    statistic over that seed's runs (nan where it is undefined)."""
    def stat(rows: Sequence) -> Interval:
        cols = list(zip(*rows)) if len(rows) else [[]] * (2 if kind in ("auc", "rank") else 3)
        if kind == "auc":
            return auc_ci(cols[0], cols[1])
        if kind == "auc2":
            return auc_diff_ci(cols[0], cols[1], cols[2])
        if kind == "rank":
            return spearman_ci(cols[0], cols[1])
        return spearman_diff_ci(cols[0], cols[1], cols[2])

    pooled = [tuple(row) for seed_rows in values for row in seed_rows]
    if not pooled:
        return Interval(math.nan, math.nan, math.nan, 0), "no runs", []
    ci = stat(pooled)
    per_seed = [stat(list(rows)).estimate if len(rows) else math.nan for rows in values]
    name = {"auc": "AUC", "auc2": "AUC difference", "rank": "r_s", "rank2": "r_s difference"}[kind]
    seeds = ", ".join(_fmt(v) for v in per_seed)
    return ci, f"{name} {_fmt(ci.estimate)} {_ci(ci)} over {ci.n} runs; per seed {seeds}", per_seed


def _layer_slopes(values: Sequence, direction: str) -> tuple[Interval, str, list[float], int]:
    """The "slopes" kind: per-seed mappings layer -> slope (anything else: a seed without slopes)
    into the row's interval (``KINDS``), the text shown, the per-seed value of the same
    aggregate, and the seeds with slopes. A layer missing at a seed has no interval: NaN."""
    seeds = [dict(v) if isinstance(v, Mapping) else {} for v in values]
    layers = sorted({k for s in seeds for k in s})
    if not layers:
        return Interval(math.nan, math.nan, math.nan, 0), "no slopes", [math.nan] * len(seeds), 0
    x = np.array([[float(s.get(k, math.nan)) for k in layers] for s in seeds], dtype=np.float64)
    cis = [slope_interval(x[:, j]) for j in range(len(layers))]
    est = np.array([c.estimate for c in cis])
    lo, hi = np.array([c.low for c in cis]), np.array([c.high for c in cis])
    with np.errstate(invalid="ignore"):
        if direction == "<":
            at = np.where((lo <= 0) & (hi >= 0), 0.0, np.minimum(np.abs(lo), np.abs(hi)))
            ends, key, per_seed = np.maximum(np.abs(lo), np.abs(hi)), np.abs(est), np.abs(x).max(axis=1)
            pick, what = np.max, "farthest from 0"
        else:
            at, ends, key, per_seed = lo, hi, est, x.min(axis=1)
            pick, what = np.min, "that grows least"
    n = int(sum(bool(s) for s in seeds))
    ci = Interval(float(pick(key)), float(pick(at)), float(pick(ends)), n)
    nan = [layers[j] for j in range(len(layers)) if not np.isfinite(lo[j] + hi[j])]
    j = int(np.nanargmax(key) if direction == "<" else np.nanargmin(key)) if np.isfinite(key).any() else 0
    shown = (f"{_fmt(ci.estimate)} {_ci(ci)} over {len(layers)} layers; {what}: {layers[j]} "
             f"{est[j]:+.3g} [{_fmt(lo[j])}, {_fmt(hi[j])}]"
             + (f"; no interval: {', '.join(nan)}" if nan else ""))
    return ci, shown, per_seed.tolist(), n


def summarize(kind: str, values: Sequence, direction: str, threshold: float) -> Summary:
    """The interval, verdict, display and planning figure of one row (see ``KINDS``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; valid: {', '.join(KINDS)}")
    n = len(values)
    if n == 0:
        raise ValueError("summarize needs at least one value, got none")
    plan: Callable[[], int | None] = lambda: None  # computed only for an inconclusive row
    if kind in ACROSS_RUNS:
        ci, shown, per_seed = _across_runs(kind, values)
        seeds = sum(1 for v in values if len(v))
        plan = lambda: seeds_for_interval(ci.estimate, ci.low, ci.high, threshold, max(seeds, 1))
    elif kind == "slopes":
        ci, shown, per_seed, seeds = _layer_slopes(values, direction)
        plan = lambda: seeds_for_interval(ci.estimate, ci.low, ci.high, threshold, max(seeds, 1))
    elif kind == "identity":
        x = np.asarray(values, dtype=np.float64)
        worst = float(x.max() if direction == "<" else x.min())
        ci = Interval(worst, float(x.min()), float(x.max()), n)
        shown, per_seed = f"worst {_fmt(worst)}, range {_ci(ci)}", x.tolist()
    elif kind == "outcome":
        k = int(sum(bool(v) for v in values))
        ci = proportion_ci(k, n)
        shown, per_seed = f"{k}/{n} = {_fmt(k / n)} {_ci(ci)}", [float(bool(v)) for v in values]
        plan = lambda: seeds_for_proportion(k / n, threshold)
    elif kind == "outcome2":
        k1, k2 = (int(sum(bool(pair[j]) for pair in values)) for j in (0, 1))
        ci = odds_ratio_ci(k1, n, k2, n)
        p = fisher_p(k1, n, k2, n)
        shown = f"{k1}/{n} vs {k2}/{n}: odds ratio {_fmt(ci.estimate)} {_ci(ci)}, Fisher p={p:.3g}"
        per_seed = [float(bool(a)) - float(bool(b)) for a, b in values]
        plan = lambda: seeds_for_two_proportions(k1 / n, k2 / n)
    elif kind == "ratio":
        x = np.asarray(values, dtype=np.float64)
        ci = geometric_ci(x)
        shown, per_seed = f"{_fmt(ci.estimate)} {_ci(ci)} (geometric)", x.tolist()
        if n >= 2 and np.all(np.isfinite(x)) and np.all(x > 0) and threshold > 0:
            logs = np.log(x)
            plan = lambda: seeds_for_mean(float(logs.mean()), float(logs.std(ddof=1)), math.log(threshold))
    elif kind == "paired":
        a = np.asarray([v[0] for v in values], dtype=np.float64)
        b = np.asarray([v[1] for v in values], dtype=np.float64)
        ci, d = paired_ci(a, b), a - b
        shown, per_seed = f"{_fmt(ci.estimate)} {_ci(ci)}, signs {sign_string(d)}", d.tolist()
        if n >= 2:
            plan = lambda: seeds_for_mean(float(d.mean()), float(d.std(ddof=1)), threshold)
    else:
        x = np.asarray(values, dtype=np.float64)
        ci = mean_ci(x)
        shown, per_seed = f"{_fmt(ci.estimate)} {_ci(ci)}", x.tolist()
        if n >= 2:
            plan = lambda: seeds_for_mean(float(x.mean()), float(x.std(ddof=1)), threshold)
    v = verdict(ci, direction, threshold)
    return Summary(ci, v, shown, per_seed, plan() if v == "inconclusive" else None)
