"""Exact proportion intervals and Fisher comparisons against brute-force binomial/hypergeometric sums."""
import math

import pytest

from varprobe.analysis import fisher_p, odds_ratio_ci, proportion_ci

A = 0.05


def _binom_tail_ge(k, n, p):
    return sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))


def _binom_tail_le(k, n, p):
    return sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(0, k + 1))


@pytest.mark.parametrize("k, n", [(0, 3), (1, 3), (3, 3), (2, 5), (5, 5), (7, 20)])
def test_clopper_pearson_bounds_are_where_the_binomial_tails_equal_a_half(k, n):
    ci = proportion_ci(k, n)
    assert ci.n == n and ci.estimate == k / n
    if k == 0:
        assert ci.low == 0.0
    else:
        assert _binom_tail_ge(k, n, ci.low) == pytest.approx(A / 2, rel=1e-7)
    if k == n:
        assert ci.high == 1.0
    else:
        assert _binom_tail_le(k, n, ci.high) == pytest.approx(A / 2, rel=1e-7)


def test_clopper_pearson_closed_forms_at_the_edges():
    assert proportion_ci(5, 5).low == pytest.approx((A / 2) ** (1 / 5), rel=1e-12)  # 0.478: 5/5 cannot beat 0.5
    assert proportion_ci(0, 3).high == pytest.approx(1 - (A / 2) ** (1 / 3), rel=1e-12)


def _hyper(k1, n1, k2, n2, psi=1.0):
    """Noncentral (Fisher) hypergeometric pmf of the first cell given the margins, by enumeration."""
    m = k1 + k2
    support = range(max(0, m - n2), min(n1, m) + 1)
    w = {x: math.comb(n1, x) * math.comb(n2, m - x) * psi**x for x in support}
    total = sum(w.values())
    return {x: v / total for x, v in w.items()}


@pytest.mark.parametrize("table", [(5, 5, 0, 5), (3, 3, 0, 3), (4, 6, 1, 6), (2, 5, 3, 5), (0, 4, 4, 4)])
def test_fisher_p_equals_brute_force_enumeration(table):
    k1 = table[0]
    pmf = _hyper(*table)
    two = sum(p for p in pmf.values() if p <= pmf[k1] * (1 + 1e-7))
    assert fisher_p(*table) == pytest.approx(min(1.0, two), rel=1e-9)
    assert fisher_p(*table, alternative="greater") == pytest.approx(sum(p for x, p in pmf.items() if x >= k1), rel=1e-9)
    assert fisher_p(*table, alternative="less") == pytest.approx(sum(p for x, p in pmf.items() if x <= k1), rel=1e-9)


@pytest.mark.parametrize("table", [(4, 6, 1, 6), (2, 5, 3, 5), (7, 10, 2, 10)])
def test_odds_ratio_interval_inverts_the_noncentral_hypergeometric_tails(table):
    k1 = table[0]
    ci = odds_ratio_ci(*table)
    assert ci.n == table[1] + table[3]
    assert sum(p for x, p in _hyper(*table, psi=ci.low).items() if x >= k1) == pytest.approx(A / 2, rel=1e-5)
    assert sum(p for x, p in _hyper(*table, psi=ci.high).items() if x <= k1) == pytest.approx(A / 2, rel=1e-5)


def test_odds_ratio_interval_excludes_one_exactly_when_the_one_sided_fisher_test_rejects():
    for table in [(5, 5, 0, 5), (3, 3, 0, 3), (4, 4, 0, 4), (0, 5, 5, 5), (4, 6, 1, 6)]:
        ci = odds_ratio_ci(*table)
        assert (ci.low > 1) == (fisher_p(*table, alternative="greater") < A / 2), table
        assert (ci.high < 1) == (fisher_p(*table, alternative="less") < A / 2), table
    assert odds_ratio_ci(5, 5, 0, 5).high == math.inf


@pytest.mark.parametrize("args", [(4, 3), (-1, 3), (1, 0), (1.5, 3), (True, 3)])
def test_bad_counts_are_named(args):
    with pytest.raises(ValueError, match="0 <= k <= n"):
        proportion_ci(*args)
    with pytest.raises(ValueError, match="alternative"):
        fisher_p(1, 2, 1, 2, alternative="bigger")
