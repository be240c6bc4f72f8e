"""The fragility of a verdict against brute-force references written here: every subset of flipped
outcomes (in seed order, no reordering assumed), and leave-one-out intervals by hand."""
import itertools
import math
from functools import lru_cache

import numpy as np
import pytest
from scipy import stats

from varprobe.analysis import auc_ci, odds_ratio_ci, spearman_ci
from varprobe.claims import fragility
from varprobe.claims.fragility import fragility_index, leave_one_out


def _side(low: float, high: float, direction: str, t: float) -> str:
    if math.isnan(low) or math.isnan(high):
        return "inconclusive"
    if direction == ">":
        return "holds" if low > t else "does not hold" if high <= t else "inconclusive"
    return "holds" if high < t else "does not hold" if low >= t else "inconclusive"


@lru_cache(maxsize=None)
def _cp(k: int, n: int) -> tuple[float, float]:
    """Clopper-Pearson from the beta quantiles."""
    low = 0.0 if k == 0 else stats.beta.ppf(0.025, k, n - k + 1)
    high = 1.0 if k == n else stats.beta.ppf(0.975, k + 1, n - k)
    return float(low), float(high)


@lru_cache(maxsize=None)
def _or(k1: int, k2: int, n: int) -> tuple[float, float]:
    ci = odds_ratio_ci(k1, n, k2, n)
    return ci.low, ci.high


def _ref_verdict(kind: str, flat: tuple[bool, ...], direction: str, t: float) -> str:
    if kind == "outcome":
        return _side(*_cp(sum(flat), len(flat)), direction, t)
    n = len(flat) // 2
    return _side(*_or(sum(flat[0::2]), sum(flat[1::2]), n), direction, t)


def _ref_index(kind: str, values, direction: str, t: float) -> int | None:
    """Every subset of the flat outcomes, by increasing size, in seed order."""
    flat = tuple(bool(x) for v in values for x in (v if kind == "outcome2" else (v,)))
    base = _ref_verdict(kind, flat, direction, t)
    for f in range(1, len(flat) + 1):
        for chosen in itertools.combinations(range(len(flat)), f):
            flipped = tuple(not x if i in chosen else x for i, x in enumerate(flat))
            if _ref_verdict(kind, flipped, direction, t) != base:
                return f
    return None


def test_outcome_index_is_the_fewest_flips_of_a_brute_force_search():
    rng = np.random.default_rng(0)
    seen = set()
    for n in range(1, 9):
        for k in range(n + 1):
            values = [True] * k + [False] * (n - k)
            rng.shuffle(values)
            direction, t = ((">", 0.5), ("<", 0.3), (">", 0.2))[(n + k) % 3]
            got = fragility_index("outcome", values, direction, t)
            assert got == _ref_index("outcome", values, direction, t), (values, direction, t)
            seen.add(got)
    assert {1, 2} <= seen  # the search finds more than one flip where one is not enough


def test_outcome_index_reaches_beyond_one_flip():
    # 10/10 > 0.5: 9/10 still holds (exact low 0.555), 8/10 does not (0.444)
    assert fragility_index("outcome", [True] * 10, ">", 0.5) == 2 == _ref_index("outcome", [True] * 10, ">", 0.5)
    f = fragility("outcome", [True] * 10, ">", 0.5, "holds")
    assert f.index == 2 and not f.fragile and f.shown == "index 2: 2 flipped outcomes change it"
    one = fragility("outcome", [True] * 6, ">", 0.5, "holds")  # 5/6: exact low 0.359
    assert one.index == 1 and one.fragile and one.shown.startswith("fragile: index 1")


_PAIRS = [(True, True), (True, False), (False, True), (False, False)]


def test_outcome2_index_flips_each_schemes_outcome_on_its_own():
    rng = np.random.default_rng(3)
    for n in (1, 2, 3):
        combos = list(itertools.combinations_with_replacement(_PAIRS, n))
        for combo in combos if n < 3 else combos[::3]:
            values = list(combo)
            rng.shuffle(values)
            direction = ">" if rng.random() < 0.5 else "<"
            assert fragility_index("outcome2", values, direction, 1.0) == _ref_index("outcome2", values, direction, 1.0)


@pytest.mark.parametrize("values,want", [
    ([(True, False)] * 6, 2),  # 6/6 vs 0/6 holds; 5/6 vs 0/6 still holds
    ([(True, False)] * 5 + [(True, True)], None),
    ([(True, False)] * 4, 1),
])
def test_outcome2_index_at_six_seeds_against_every_subset(values, want):
    ref = _ref_index("outcome2", values, ">", 1.0)
    assert fragility_index("outcome2", values, ">", 1.0) == ref
    if want is not None:
        assert ref == want


def _t(x: np.ndarray) -> tuple[float, float]:
    if x.size < 2:
        return -math.inf, math.inf
    if not np.all(np.isfinite(x)):
        return math.nan, math.nan
    half = stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return x.mean() - half, x.mean() + half


def _ref_loo(kind: str, values, direction: str, t: float) -> tuple[str, ...]:
    out = []
    for i in range(len(values)):
        rest = values[:i] + values[i + 1:]
        if not rest:
            out.append("inconclusive")
            continue
        if kind == "mean":
            lo, hi = _t(np.array(rest, dtype=float))
        elif kind == "ratio":
            lo, hi = np.exp(_t(np.log(np.array(rest, dtype=float))))
        elif kind == "paired":
            lo, hi = _t(np.array([a - b for a, b in rest]))
        elif kind == "identity":
            lo, hi = min(rest), max(rest)
        elif kind == "auc":
            pooled = [r for seed in rest for r in seed]
            ci = auc_ci([p for p, _ in pooled], [o for _, o in pooled])
            lo, hi = ci.low, ci.high
        else:
            pooled = [r for seed in rest for r in seed]
            ci = spearman_ci([p for p, _ in pooled], [o for _, o in pooled])
            lo, hi = ci.low, ci.high
        out.append(_side(lo, hi, direction, t))
    return tuple(out)


def _cases():
    rng = np.random.default_rng(7)
    for _ in range(25):
        n = int(rng.integers(1, 7))
        loc = float(rng.normal(0.3, 0.3))
        yield "mean", [float(v) for v in rng.normal(loc, 0.2, n)], ">", 0.0
        yield "ratio", [float(v) for v in np.exp(rng.normal(loc, 0.3, n))], "<", 1.0
        yield "paired", [(float(a), float(a - d)) for a, d in zip(rng.random(n), rng.normal(loc, 0.2, n))], ">", 0.0
        yield "identity", [float(v) for v in rng.normal(loc, 0.2, n)], ">", 0.1
        runs = [[(float(p), bool(p + rng.normal(0, 0.5) > 0.3)) for p in rng.random(4)] for _ in range(n)]
        yield "auc", runs, ">", 0.5
        yield "rank", [[(float(p), float(p * loc + rng.normal(0, 0.2))) for p in rng.random(4)] for _ in range(n)], \
            ">", 0.0


def test_leave_one_out_against_intervals_by_hand():
    changed = 0
    for kind, values, direction, t in _cases():
        got = leave_one_out(kind, values, direction, t)
        assert got == _ref_loo(kind, values, direction, t), (kind, values)
        from varprobe.claims import summarize
        v = summarize(kind, values, direction, t).verdict
        f = fragility(kind, values, direction, t, v)
        if v == "inconclusive":
            assert f is None
            continue
        assert f.measure == "leave-one-out" and f.left_out == got and f.index is None
        assert f.fragile == any(x != v for x in got)
        changed += f.fragile
        if f.fragile:
            i = next(i for i, x in enumerate(got) if x != v)
            assert f.shown.startswith("fragile: ") and f"seed {i} out: {got[i]}" in f.shown
    assert changed > 0


def test_one_seed_left_out_of_one_leaves_nothing_settled():
    f = fragility("mean", [1.0], ">", 0.0, "holds")
    assert f.left_out == ("inconclusive",) and f.fragile


def test_inconclusive_rows_get_no_measure_and_outcome_rows_no_leave_one_out():
    assert fragility("outcome", [True] * 5, ">", 0.5, "inconclusive") is None
    f = fragility("outcome", [False] * 10, ">", 0.5, "does not hold")
    assert f.measure == "fragility index" and f.left_out == () and f.index == _ref_index(
        "outcome", [False] * 10, ">", 0.5)
    with pytest.raises(ValueError, match="fragility index is for the outcome kinds"):
        fragility_index("mean", [1.0, 2.0], ">", 0.0)
