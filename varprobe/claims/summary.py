"""The statistic of each kind of quantity, fixed in code before any experiment runs.

A claim's ``kind`` decides how its per-seed values become an interval; the verdict then follows
from that interval and the claim's fixed threshold by the one rule of ``varprobe.analysis.verdict``
(holds: the whole 95% interval on the expected side; does not hold: wholly on the other side;
inconclusive otherwise). Nothing here looks at which verdict a choice would give.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..analysis import (Interval, fisher_p, geometric_ci, mean_ci, odds_ratio_ci, paired_ci, proportion_ci,
                        seeds_for_mean, seeds_for_proportion, seeds_for_two_proportions, sign_string, verdict)

__all__ = ["KINDS", "Summary", "summarize"]

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
}


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


def summarize(kind: str, values: Sequence, direction: str, threshold: float) -> Summary:
    """The interval, verdict, display and planning figure of one row (see ``KINDS``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; valid: {', '.join(KINDS)}")
    n = len(values)
    if n == 0:
        raise ValueError("summarize needs at least one value, got none")
    planning: int | None = None
    if kind == "identity":
        x = np.asarray(values, dtype=np.float64)
        worst = float(x.max() if direction == "<" else x.min())
        ci = Interval(worst, float(x.min()), float(x.max()), n)
        shown, per_seed = f"worst {_fmt(worst)}, range {_ci(ci)}", x.tolist()
    elif kind == "outcome":
        k = int(sum(bool(v) for v in values))
        ci = proportion_ci(k, n)
        shown, per_seed = f"{k}/{n} = {_fmt(k / n)} {_ci(ci)}", [float(bool(v)) for v in values]
        planning = seeds_for_proportion(k / n, threshold)
    elif kind == "outcome2":
        k1, k2 = (int(sum(bool(pair[j]) for pair in values)) for j in (0, 1))
        ci = odds_ratio_ci(k1, n, k2, n)
        p = fisher_p(k1, n, k2, n)
        shown = f"{k1}/{n} vs {k2}/{n}: odds ratio {_fmt(ci.estimate)} {_ci(ci)}, Fisher p={p:.3g}"
        per_seed = [float(bool(a)) - float(bool(b)) for a, b in values]
        planning = seeds_for_two_proportions(k1 / n, k2 / n)
    elif kind == "ratio":
        x = np.asarray(values, dtype=np.float64)
        ci = geometric_ci(x)
        shown, per_seed = f"{_fmt(ci.estimate)} {_ci(ci)} (geometric)", x.tolist()
        if n >= 2 and np.all(np.isfinite(x)) and np.all(x > 0) and threshold > 0:
            logs = np.log(x)
            planning = seeds_for_mean(float(logs.mean()), float(logs.std(ddof=1)), math.log(threshold))
    elif kind == "paired":
        a = np.asarray([v[0] for v in values], dtype=np.float64)
        b = np.asarray([v[1] for v in values], dtype=np.float64)
        ci, d = paired_ci(a, b), a - b
        shown, per_seed = f"{_fmt(ci.estimate)} {_ci(ci)}, signs {sign_string(d)}", d.tolist()
        if n >= 2:
            planning = seeds_for_mean(float(d.mean()), float(d.std(ddof=1)), threshold)
    else:
        x = np.asarray(values, dtype=np.float64)
        ci = mean_ci(x)
        shown, per_seed = f"{_fmt(ci.estimate)} {_ci(ci)}", x.tolist()
        if n >= 2:
            planning = seeds_for_mean(float(x.mean()), float(x.std(ddof=1)), threshold)
    v = verdict(ci, direction, threshold)
    return Summary(ci, v, shown, per_seed, planning if v == "inconclusive" else None)
