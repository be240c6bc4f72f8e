"""Log-scale intervals, paired differences and their sign strings against numpy references."""
import math

import numpy as np
import pytest

from varprobe.analysis import Interval, geometric_ci, mean_ci, paired_ci, sign_string, verdict

T_975_2 = 4.302652729911275  # t_{0.975, 2}


def test_geometric_ci_is_the_back_transformed_t_interval_of_the_logs():
    x = np.array([65.0, 54.0, 20.0])  # 5a's three seeds on main
    logs = np.log(x)
    half = T_975_2 * logs.std(ddof=1) / math.sqrt(3)
    ci = geometric_ci(x)
    assert ci.estimate == pytest.approx(float(np.exp(logs.mean())), rel=1e-12)
    assert ci.low == pytest.approx(float(np.exp(logs.mean() - half)), rel=1e-10)
    assert ci.high == pytest.approx(float(np.exp(logs.mean() + half)), rel=1e-10)


def test_5a_holds_on_the_log_scale_where_the_raw_t_interval_straddles_one():
    x = [65.0, 54.0, 20.0]
    assert verdict(mean_ci(x), ">", 1.0) == "inconclusive"  # [-11, 104] on the raw scale
    assert mean_ci(x).low < 0
    ci = geometric_ci(x)
    assert ci.low > 8 and verdict(ci, ">", 1.0) == "holds"


@pytest.mark.parametrize("bad", [[1.0, 0.0, 2.0], [1.0, -1.0], [1.0, math.inf], [math.nan, 1.0]])
def test_geometric_ci_of_values_without_a_logarithm_is_nan(bad):
    ci = geometric_ci(bad)
    assert math.isnan(ci.low) and math.isnan(ci.high) and verdict(ci, ">", 1.0) == "inconclusive"


def test_geometric_ci_single_value_and_empty():
    ci = geometric_ci([3.0])
    assert ci.estimate == pytest.approx(3.0) and ci.low == 0.0 and ci.high == math.inf
    with pytest.raises(ValueError):
        geometric_ci([])


def test_paired_ci_is_the_t_interval_of_the_differences():
    a, b = np.array([0.9, 0.8, 0.95, 0.7, 0.85]), np.array([0.1, 0.85, 0.2, 0.1, 0.1])
    d = a - b
    half = 2.7764451051977987 * d.std(ddof=1) / math.sqrt(5)  # t_{0.975, 4}
    ci = paired_ci(a, b)
    assert ci.n == 5 and ci.estimate == pytest.approx(d.mean())
    assert ci.low == pytest.approx(d.mean() - half, rel=1e-10) and ci.high == pytest.approx(d.mean() + half, rel=1e-10)
    assert sign_string(d) == "+ - + + +"
    with pytest.raises(ValueError, match="equal length"):
        paired_ci([1.0, 2.0], [1.0])


def test_sign_string_marks_ties_and_non_finite():
    assert sign_string([0.0, -1e-9, math.nan, 2.0], tol=1e-6) == "0 0 ? +"
    assert isinstance(Interval(0, 0, 0, 1), Interval)
