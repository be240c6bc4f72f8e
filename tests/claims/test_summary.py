"""The statistic of each kind, against independent references (numpy logs, binomial enumeration)."""
import math

import numpy as np
import pytest
from scipy import stats

from varprobe.claims import KINDS, summarize


def test_5a_holds_on_the_log_scale():
    s = summarize("ratio", [65.0, 54.0, 20.0], ">", 1.0)
    logs = np.log([65.0, 54.0, 20.0])
    half = stats.t.ppf(0.975, 2) * logs.std(ddof=1) / math.sqrt(3)
    assert s.interval.low == pytest.approx(math.exp(logs.mean() - half), rel=1e-10)
    assert s.verdict == "holds" and s.planning is None and "(geometric)" in s.shown


def test_outcome_is_an_exact_proportion_and_five_of_five_cannot_beat_a_half():
    s = summarize("outcome", [True] * 5, ">", 0.5)
    assert s.interval.low == pytest.approx(0.025 ** (1 / 5), rel=1e-12)
    assert s.verdict == "inconclusive" and s.planning == 6 and s.shown.startswith("5/5 = 1 ")
    assert summarize("outcome", [True] * 6, ">", 0.5).verdict == "holds"
    assert summarize("outcome", [False] * 6, ">", 0.5).verdict == "does not hold"
    assert s.per_seed == [1.0] * 5


def test_outcome2_is_fishers_odds_ratio_against_one():
    s = summarize("outcome2", [(True, False)] * 4, ">", 1.0)
    # 4/4 vs 0/4: one-sided Fisher p = 1 / C(8, 4) = 1/70 < 0.025, so the exact interval excludes 1
    assert s.verdict == "holds" and s.interval.low > 1 and "Fisher p=0.0286" in s.shown
    s3 = summarize("outcome2", [(True, False)] * 3, ">", 1.0)
    assert s3.verdict == "inconclusive" and s3.planning == 4  # 1/20 = 0.05 one-sided at n=3
    assert s.per_seed == [1.0] * 4


def test_paired_shows_the_signs_and_uses_the_differences():
    s = summarize("paired", [(0.9, 0.1), (0.8, 0.85), (0.95, 0.2)], ">", 0.0)
    d = np.array([0.8, -0.05, 0.75])
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
    assert s.interval.estimate == pytest.approx(d.mean()) and s.interval.high == pytest.approx(d.mean() + half)
    assert "signs + - +" in s.shown and s.per_seed == pytest.approx(d.tolist())
    assert s.verdict == "inconclusive" and s.planning is not None and s.planning > 3


def test_identity_is_the_worst_seed_and_every_seed_must_pass():
    s = summarize("identity", [1e-8, 3e-8], "<", 1e-5)
    assert s.verdict == "holds" and s.interval.estimate == 3e-8 and s.planning is None
    assert summarize("identity", [1e-8, 1.0], "<", 1e-5).verdict == "inconclusive"
    assert summarize("identity", [2e-5, 1.0], "<", 1e-5).verdict == "does not hold"
    assert summarize("identity", [9.0, 10.0], ">", 5.0).interval.estimate == 9.0


def test_mean_kind_is_the_student_t_interval():
    s = summarize("mean", [1.0, 2.0, 4.0], ">", 0.0)
    half = 4.302652729911275 * np.std([1.0, 2.0, 4.0], ddof=1) / math.sqrt(3)
    assert s.interval.low == pytest.approx(7 / 3 - half) and s.verdict == "inconclusive"
    assert s.planning == 5  # t_{.975,n-1} * 1.528 / sqrt(n) < 7/3 first at n = 5 (2.776 * 1.528 / 2.236 = 1.90)
    assert summarize("mean", [2.0, 2.1, 2.2], ">", 0.0).verdict == "holds"


def test_bad_kind_and_empty_values_are_named():
    with pytest.raises(ValueError, match="unknown kind 'median'; valid: " + ", ".join(KINDS)):
        summarize("median", [1.0], ">", 0.0)
    with pytest.raises(ValueError, match="at least one value"):
        summarize("mean", [], ">", 0.0)
