"""Filter statistics of a weight and average-gradient statistics, against float64 definitions."""
from __future__ import annotations

import math

import pytest
import torch

from varprobe.stats import (FILTER_STATS, GRAD_STATS, correlation, filter_moments,
                            filter_stats, grad_shift_stats, sign_persistence)

F64 = torch.float64


@pytest.mark.parametrize("shape", [(8, 3, 3, 3), (5, 2, 1, 7), (4, 9), (6, 1, 3)])
def test_filter_stats_definitions(shape):
    w = torch.randn(shape, dtype=torch.float32) * 0.3 + 0.05
    got = dict(zip(FILTER_STATS, filter_stats(w).tolist()))
    f = w.to(F64).reshape(shape[0], -1)
    n = f.shape[1]
    sums = f.sum(1)
    want = {"fan_var": (n * f.var(1, unbiased=False)).mean().item(),
            "filter_mean_abs": f.mean(1).abs().mean().item(),
            "filter_sum_var": sums.var(unbiased=False).item(),
            "filter_sum_sq": sums.square().mean().item(),
            "sq_norm": f.square().sum(1).mean().item()}
    for k in FILTER_STATS:
        assert math.isclose(got[k], want[k], rel_tol=1e-9), k
    m, v = filter_moments(w)
    torch.testing.assert_close(m, f.mean(1))
    torch.testing.assert_close(v, f.var(1, unbiased=False))


def test_he_init_fan_var_is_two():
    w = torch.randn(256, 64, 3, 3, dtype=F64) * math.sqrt(2 / 576)
    fan_var, mean_abs, sum_var, sum_sq, sq_norm = filter_stats(w).tolist()
    assert abs(fan_var - 2) < 0.02
    assert abs(sum_var - 2) < 0.5 and abs(sum_sq - 2) < 0.5  # n m_i ~ N(0, 2)
    assert abs(sq_norm - 2) < 0.02


def test_grad_shift_stats():
    g = torch.randn(16, 4, 3, 3, dtype=F64)
    gi, st = grad_shift_stats(g)
    avg_abs, rms, ratio = st.tolist()
    f = g.flatten(1)
    torch.testing.assert_close(gi, f.mean(1))
    assert math.isclose(avg_abs, f.mean(1).abs().mean().item(), rel_tol=1e-12)
    assert math.isclose(rms, f.square().mean().sqrt().item(), rel_tol=1e-12)
    assert math.isclose(ratio, avg_abs / (rms / 6.0), rel_tol=1e-12)
    assert 0.3 < ratio < 1.5  # zero-mean independent entries: about sqrt(2/pi)
    _, st = grad_shift_stats(g + 1.0)  # a common offset: the shift
    assert st[2] > 3
    assert tuple(GRAD_STATS) == ("avg_abs", "rms", "shift_ratio")


def test_sign_persistence_and_correlation():
    a = torch.tensor([1.0, -2.0, 3.0, -4.0])
    assert sign_persistence(a, a * 2).item() == 1.0
    assert sign_persistence(a, -a).item() == 0.0
    assert sign_persistence(a, torch.tensor([1.0, 1.0, 1.0, 1.0])).item() == 0.5
    b = torch.tensor([0.3, 0.1, -2.0, 5.0])
    assert math.isclose(correlation(a, b).item(), torch.corrcoef(torch.stack([a, b]))[0, 1].item(), rel_tol=1e-6)
    assert math.isclose(correlation(a, 3 * a + 1).item(), 1.0, rel_tol=1e-12)
    assert math.isnan(correlation(a, torch.ones(4)).item())
