"""Rank statistics across runs against independent references (scipy, scikit-learn, written-out
formulas, brute-force loops) and their intervals' coverage by simulation at the sizes reproduce uses."""
import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from varprobe.analysis.association import (auc, auc_ci, auc_diff_ci, mover, spearman, spearman_ci,
                                           spearman_diff_ci)
from varprobe.analysis.association import _delong_corr

Z = 1.959963984540054


def test_spearman_and_its_interval_against_scipy_and_the_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(size=25)
    y = np.round(x + rng.normal(size=25), 0)  # ties in y
    r = stats.spearmanr(x, y).statistic
    ci = spearman_ci(x, y)
    assert ci.estimate == pytest.approx(r, abs=1e-14) and ci.n == 25
    half = Z * math.sqrt((1 + r * r / 2) / 22)
    assert ci.low == pytest.approx(math.tanh(math.atanh(r) - half), abs=1e-12)
    assert ci.high == pytest.approx(math.tanh(math.atanh(r) + half), abs=1e-12)
    # non-finite runs are left out
    ci2 = spearman_ci(np.append(x, np.nan), np.append(y, 1.0))
    assert ci2.n == 25 and ci2.estimate == pytest.approx(r, abs=1e-14)


def test_auc_against_scikit_learn_with_ties_and_delong_against_a_double_loop():
    rng = np.random.default_rng(1)
    event = rng.random(30) < 0.4
    x1 = np.round(rng.normal(size=30) + event, 1)
    x2 = np.round(rng.normal(size=30) + 0.5 * event + 0.5 * x1, 1)
    assert auc(x1, event) == pytest.approx(roc_auc_score(event, x1), abs=1e-14)
    assert math.isnan(auc(x1, np.zeros(30, bool)))
    # DeLong covariance written out with loops
    pos, neg = np.flatnonzero(event), np.flatnonzero(~event)
    psi = lambda a, b: 1.0 if a > b else 0.5 if a == b else 0.0  # noqa: E731
    v10 = [[np.mean([psi(x[i], x[j]) for j in neg]) for i in pos] for x in (x1, x2)]
    v01 = [[np.mean([psi(x[i], x[j]) for i in pos]) for j in neg] for x in (x1, x2)]
    m, n = len(pos), len(neg)
    cov = np.cov(v10) / m + np.cov(v01) / n
    assert _delong_corr(x1, x2, event) == pytest.approx(cov[0, 1] / math.sqrt(cov[0, 0] * cov[1, 1]), abs=1e-12)


def test_newcombe_bounds_solve_the_score_equation_and_stay_open_at_perfect_separation():
    rng = np.random.default_rng(2)
    event = np.arange(20) < 7
    x = rng.normal(size=20) + event
    ci = auc_ci(x, event)
    m, n, star = 7, 13, 10.0
    for theta in (ci.low, ci.high):
        var = theta * (1 - theta) * (1 + (star - 1) * (1 - theta) / (2 - theta) + (star - 1) * theta / (1 + theta))
        assert (ci.estimate - theta) ** 2 == pytest.approx(Z * Z * var / (m * n), rel=1e-8)
    assert ci.low < ci.estimate < ci.high
    perfect = auc_ci(event.astype(float), event)  # every event run above every other one
    assert perfect.estimate == 1.0 and perfect.high == 1.0 and 0.5 < perfect.low < 0.95


def test_mover_is_the_written_out_formula_and_reduces_to_the_sum_of_variances_when_independent():
    lo, hi = mover(0.7, (0.5, 0.85), 0.4, (0.2, 0.6), 0.3)
    assert lo == pytest.approx(0.3 - math.sqrt(0.2 ** 2 + 0.2 ** 2 - 2 * 0.3 * 0.2 * 0.2))
    assert hi == pytest.approx(0.3 + math.sqrt(0.15 ** 2 + 0.2 ** 2 - 2 * 0.3 * 0.15 * 0.2))
    lo, hi = mover(0.0, (-1.0, 1.0), 0.0, (-1.0, 1.0), 0.0)
    assert (lo, hi) == pytest.approx((-math.sqrt(2), math.sqrt(2)))


def _coverage(draw, fn, truth, reps, seed):
    rng = np.random.default_rng(seed)
    hit = 0
    for _ in range(reps):
        ci = fn(*draw(rng))
        hit += ci.low <= truth <= ci.high
    return hit / reps


def test_spearman_intervals_cover_at_about_95_percent_for_30_runs():
    """Bivariate normal with known correlations: population r_s = (6/pi) asin(rho/2)."""
    rho1, rho2, rho12 = 0.6, 0.3, 0.4
    cov = np.array([[1, rho12, rho1], [rho12, 1, rho2], [rho1, rho2, 1]])

    def draw(rng):
        s = rng.multivariate_normal(np.zeros(3), cov, size=30)
        return s[:, 0], s[:, 1], s[:, 2]

    rs = lambda r: 6 / math.pi * math.asin(r / 2)  # noqa: E731
    one = _coverage(lambda g: draw(g)[::2], spearman_ci, rs(rho1), 1000, 3)
    diff = _coverage(draw, spearman_diff_ci, rs(rho1) - rs(rho2), 1000, 4)
    assert 0.92 <= one <= 0.98 and 0.92 <= diff <= 0.98, (one, diff)


def test_auc_intervals_cover_at_about_95_percent_for_10_against_20_runs():
    """Normal scores shifted by delta in the event group: AUC = Phi(delta / sqrt(2)); the second
    predictor correlated with the first."""
    event = np.arange(30) < 10
    d1, d2, c = 1.0, 0.4, 0.5

    def draw(rng):
        e1, e2 = rng.normal(size=30), rng.normal(size=30)
        x1 = e1 + d1 * event
        x2 = c * e1 + math.sqrt(1 - c * c) * e2 + d2 * event
        return x1, x2, event

    a1, a2 = stats.norm.cdf(d1 / math.sqrt(2)), stats.norm.cdf(d2 / math.sqrt(2))
    one = _coverage(lambda g: (draw(g)[0], event), auc_ci, a1, 1000, 5)
    diff = _coverage(draw, auc_diff_ci, a1 - a2, 1000, 6)
    assert 0.92 <= one <= 0.985 and 0.92 <= diff <= 0.985, (one, diff)


def test_small_or_degenerate_samples_give_wide_or_nan_intervals_never_a_false_point():
    assert math.isnan(auc_ci([1.0, 2.0], [True, True]).estimate)
    ci = spearman_ci([1.0, 2.0, 3.0], [1.0, 3.0, 2.0])
    assert (ci.low, ci.high) == (-1.0, 1.0)
    assert math.isnan(spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    both = auc_diff_ci([0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0], [False, False, True, True])
    assert both.estimate == 0.0 and both.low < 0 < both.high  # two perfect predictors: not settled
    with pytest.raises(ValueError, match="equal length"):
        spearman_ci([1.0, 2.0], [1.0])


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_perfect_rank_correlation_has_an_interval_not_a_crash_nor_a_point(sign):
    """Was: ValueError (math domain error) from atanh(1) whenever every run was in order, which
    stopped a report. Now the bound towards 0 is that of r_s = 0.9, the nearest r_s that 5 runs
    can give (two adjacent ranks swapped: 1 - 6 * 2 / (5 * 24)), and the other bound is +-1."""
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    ci = spearman_ci(x, [sign * v for v in x])
    near = math.tanh(math.atanh(0.9) - stats.norm.ppf(0.975) * math.sqrt((1 + 0.81 / 2) / 2))
    assert ci.estimate == sign and ci.n == 5
    assert (ci.low, ci.high) == ((pytest.approx(near, rel=1e-12), 1.0) if sign > 0
                                 else (-1.0, pytest.approx(-near, rel=1e-12)))
    assert stats.spearmanr([1, 2, 3, 5, 4], x).statistic == pytest.approx(0.9)
