"""The competing explanation's rows and the rule that names both causes (varprobe.claims.causes),
and the across-runs kinds of varprobe.claims.summary."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from varprobe.claims import CLAIMS, PROFILES, rows
from varprobe.claims.causes import ROWS, competing_report
from varprobe.claims.profiles import configs, plan
from varprobe.claims.summary import summarize


def _verdicts(suffix: str = "", **kw: str) -> dict[str, str]:
    out = {f"{r.id}{suffix}": "inconclusive" for r in ROWS}
    out.update({f"{k}{suffix}": v for k, v in kw.items()})
    return out


@pytest.mark.parametrize("kw, shift, update", [
    ({"E1a": "holds", "E1b": "holds", "E2a": "holds", "E2b": "holds"}, "**supported**", "**not settled**"),
    ({"E1c": "holds", "E2c": "holds", **{k: "does not hold" for k in ("E1d", "E1e", "E2d", "E2e")}},
     "**not supported**", "**supported**"),
    ({"E1a": "holds", "E1b": "holds", "E2a": "holds", "E2b": "holds", "E1d": "does not hold"},
     "**not settled**", "**not settled**"),
    ({k: "holds" for k in ("E1d", "E1e", "E2d", "E2e")}, "**not settled**", "**not supported**"),
    ({"E1c": "does not hold", "E2c": "does not hold"}, "**not settled**", "**not supported**"),
])
def test_both_causes_are_named_by_the_fixed_rule(kw, shift, update):
    lines = competing_report(_verdicts("@0.5", **kw), "@0.5")
    assert lines[0].startswith(f"- the shift of the average gradient, as a predictor of collapse and variance "
                               f"growth across runs: {shift} (E1a@0.5 ")
    assert lines[1].startswith("- the relative update size, i.e. the effective learning rate of scale-invariant "
                               f"weights (van Laarhoven 2017; Hoffer et al. 2018; Arora et al. 2019): {update}")


def test_e_rows_are_at_every_large_rate_with_fixed_thresholds_and_kinds():
    by = {c.id: c for c in CLAIMS}
    for r in ROWS:
        c = by[r.id]
        assert (c.at, c.direction) == ("large", ">")
        assert (c.kind, c.threshold) == {("collapse", 1): ("auc", 0.5), ("collapse", 2): ("auc2", 0.0),
                                         ("growth", 1): ("rank", 0.0), ("growth", 2): ("rank2", 0.0)}[
            (r.outcome, len(r.predictors))]
    ids = [i for _, i, _ in rows(PROFILES["standard"])]
    assert "E1d@0.1" in ids and "E2e@0.5" in ids


@pytest.mark.parametrize("name", ["tiny", "quick", "standard"])
def test_every_run_the_e_rows_read_records_the_update_ratio_and_the_shift(name):
    """At the large lrs every main and control run records "all" or "causes"; at the small lr the
    runs read only for accuracy stay "forward" (the quick profile is not made slower there)."""
    p = PROFILES[name]
    for c in configs(plan(p)):
        headroom = p.accuracy_size is not None and c.size == p.accuracy_size  # accuracy rows' own cells
        if c.lr in p.lrs_large and c.steps == p.steps and not headroom:
            assert c.quantities in ("all", "causes"), c
    small_forward = [c for c in configs(plan(p)) if c.lr == p.lr_small and c.quantities == "forward"]
    assert small_forward or name == "standard"


def test_across_runs_kinds_pool_the_runs_of_every_seed():
    rng = np.random.default_rng(0)
    seeds = [[(float(rng.normal()), float(rng.normal()), bool(rng.random() < 0.5)) for _ in range(9)]
             for _ in range(3)]
    pooled = [r for s in seeds for r in s]
    x1, x2, ev = (np.array(c) for c in zip(*pooled))
    auc = summarize("auc", [[(a, e) for a, _, e in s] for s in seeds], ">", 0.5)
    assert auc.interval.estimate == pytest.approx(roc_auc_score(ev, x1), abs=1e-12) and auc.interval.n == 27
    assert auc.per_seed == pytest.approx([roc_auc_score([e for *_, e in s], [a for a, *_ in s]) for s in seeds])
    d = summarize("rank2", [[(a, b, a + b) for a, b, _ in s] for s in seeds], ">", 0.0)
    y = x1 + x2
    assert d.interval.estimate == pytest.approx(stats.spearmanr(x1, y).statistic - stats.spearmanr(x2, y).statistic,
                                                abs=1e-12)
    assert d.verdict in ("holds", "does not hold", "inconclusive")
    assert (d.planning is None) == (d.verdict != "inconclusive")
    empty = summarize("rank", [[], []], ">", 0.0)
    assert empty.verdict == "inconclusive" and math.isnan(empty.interval.estimate)
