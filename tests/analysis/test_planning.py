"""Planning figures against brute force: the returned n settles, n - 1 does not."""
import math

import numpy as np
import pytest
from scipy import stats

from varprobe.analysis import (fisher_p, odds_ratio_ci, proportion_ci, seeds_for_mean, seeds_for_proportion,
                               seeds_for_two_proportions)


def _t_half(sd, n):
    return stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)


@pytest.mark.parametrize("mean, sd, threshold", [(1.0, 2.0, 0.0), (0.3, 0.1, 0.25), (-2.0, 5.0, 1.0)])
def test_seeds_for_mean_is_the_first_n_whose_t_interval_excludes_the_threshold(mean, sd, threshold):
    n = seeds_for_mean(mean, sd, threshold)
    assert _t_half(sd, n) < abs(mean - threshold)
    assert n == 2 or _t_half(sd, n - 1) >= abs(mean - threshold)


def test_seeds_for_mean_without_an_effect_or_beyond_the_cap():
    assert seeds_for_mean(1.0, 1.0, 1.0) is None
    assert seeds_for_mean(1.0, math.nan, 0.0) is None
    assert seeds_for_mean(1e-6, 1.0, 0.0, cap=100) is None
    assert seeds_for_mean(1.0, 0.0, 0.0) == 2


@pytest.mark.parametrize("p, threshold", [(1.0, 0.5), (0.0, 0.5), (0.8, 0.5), (0.2, 0.9), (2 / 3, 0.5)])
def test_seeds_for_proportion_against_clopper_pearson_at_n_and_below(p, threshold):
    n = seeds_for_proportion(p, threshold)

    def settles(m):
        ci = proportion_ci(round(p * m), m)
        return ci.low > threshold if p > threshold else ci.high < threshold
    assert settles(n)
    assert not any(settles(m) for m in range(1, n))


def test_five_of_five_cannot_beat_a_half_six_of_six_can():
    assert seeds_for_proportion(1.0, 0.5) == 6
    assert seeds_for_proportion(0.5, 0.5) is None


@pytest.mark.parametrize("p1, p2", [(1.0, 0.0), (0.8, 0.2), (0.0, 0.6)])
def test_seeds_for_two_proportions_against_the_odds_ratio_interval(p1, p2):
    n = seeds_for_two_proportions(p1, p2)

    def settles(m):
        ci = odds_ratio_ci(round(p1 * m), m, round(p2 * m), m)
        return ci.low > 1 if p1 > p2 else ci.high < 1
    assert settles(n)
    assert not any(settles(m) for m in range(1, n))
    assert seeds_for_two_proportions(0.5, 0.5) is None
    assert fisher_p(4, 4, 0, 4, "greater") == pytest.approx(1 / 70)
    assert np.isfinite(n)


@pytest.mark.parametrize("est, low, high, threshold, seeds", [(0.7, 0.45, 0.85, 0.5, 3), (-0.1, -0.5, 0.3, 0.2, 5),
                                                             (0.2, -0.3, 0.6, 0.0, 2)])
def test_seeds_for_interval_is_the_first_n_whose_shrunk_half_width_excludes_the_threshold(est, low, high,
                                                                                          threshold, seeds):
    from varprobe.analysis import seeds_for_interval
    n = seeds_for_interval(est, low, high, threshold, seeds)
    h = est - low if est > threshold else high - est
    gap = abs(est - threshold)
    assert h * math.sqrt(seeds / n) < gap
    assert h * math.sqrt(seeds / (n - 1)) >= gap
    assert seeds_for_interval(0.5, 0.2, 0.8, 0.5, 3) is None
    assert seeds_for_interval(0.5, math.nan, 0.8, 0.1, 3) is None
