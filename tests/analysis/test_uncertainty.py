import math

import pytest

from varprobe.analysis import VERDICTS, Interval, mean_ci, verdict


def test_mean_ci_matches_student_t_by_hand():
    x = [1.0, 2.0, 4.0]
    ci = mean_ci(x)
    mean, sd = 7 / 3, math.sqrt(sum((v - 7 / 3) ** 2 for v in x) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t_{0.975, 2}
    assert ci.n == 3 and math.isclose(ci.estimate, mean)
    assert math.isclose(ci.low, mean - half, rel_tol=1e-9) and math.isclose(ci.high, mean + half, rel_tol=1e-9)


def test_mean_ci_single_value_has_no_interval():
    ci = mean_ci([3.0])
    assert ci.estimate == 3.0 and ci.low == -math.inf and ci.high == math.inf
    with pytest.raises(ValueError):
        mean_ci([])


@pytest.mark.parametrize("low, high, direction, threshold, want", [
    (2.0, 3.0, ">", 1.0, "holds"), (0.0, 0.5, ">", 1.0, "does not hold"), (0.5, 1.5, ">", 1.0, "inconclusive"),
    (0.0, 0.5, "<", 1.0, "holds"), (2.0, 3.0, "<", 1.0, "does not hold"), (0.5, 1.5, "<", 1.0, "inconclusive"),
    (1.0, 2.0, ">", 1.0, "inconclusive"), (math.nan, math.nan, ">", 1.0, "inconclusive"),
])
def test_verdict_rule(low, high, direction, threshold, want):
    assert verdict(Interval((low + high) / 2, low, high, 3), direction, threshold) == want
    assert want in VERDICTS


def test_verdict_rejects_bad_direction():
    with pytest.raises(ValueError, match="'>='"):
        verdict(Interval(1, 0, 2, 3), ">=", 1.0)
