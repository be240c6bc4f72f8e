"""varprobe.theory.width: log-log slopes against numpy.polyfit, init slopes against a float64 numpy chain."""
from __future__ import annotations

import numpy as np
import pytest

from varprobe.theory import (KAIMING, STANDARD, filter_sum_slope, init_sq_mean_slopes, loglog_slope,
                             relu_gaussian_moments, shifted_filter_split)


def test_loglog_slope_is_numpys_least_squares_fit():
    rng = np.random.default_rng(0)
    w = np.array([4, 8, 8, 16, 32, 32, 64], dtype=float)
    s = np.exp(rng.normal(size=w.size)) * w ** 1.3
    assert loglog_slope(w, s) == pytest.approx(np.polyfit(np.log(w), np.log(s), 1)[0], rel=1e-12, abs=1e-12)
    assert loglog_slope([2, 4], [3.0, 3.0]) == 0.0


@pytest.mark.parametrize("widths, values, needle", [
    ([4], [1.0], "two distinct widths"), ([4, 4], [1.0, 2.0], "two distinct widths"),
    ([4, 8], [1.0], "as many"), ([4, 8], [1.0, 0.0], "value 0.0"), ([4, 8], [1.0, np.nan], "value nan"),
    ([0, 8], [1.0, 1.0], "width 0.0")])
def test_loglog_slope_refuses_what_has_no_logarithm(widths, values, needle):
    with pytest.raises(ValueError, match=needle):
        loglog_slope(widths, values)


def test_init_slopes_kaiming_zero_standard_counts_growing_layers():
    grows = [0, 1, 1, 1, 1]
    assert init_sq_mean_slopes(grows, KAIMING) == [0, 0, 0, 0, 0]
    assert init_sq_mean_slopes(grows, STANDARD) == [0, 1, 2, 3, 4]
    # a Kaiming body with a fixed-variance head (simple_cnn's N(0, 0.01) head): only the head grows
    assert init_sq_mean_slopes(grows + [1], [KAIMING] * 5 + [STANDARD]) == [0, 0, 0, 0, 0, 1]
    with pytest.raises(ValueError, match="one per layer"):
        init_sq_mean_slopes(grows, [1.0, 0.0])


def _chain_sq_means(width: int, std, rng, n_draws: int = 60, batch: int = 64, depth: int = 4) -> np.ndarray:
    """E[y_l^2] per layer of a ReLU chain of linear layers (input 3 features, then ``width``), averaged
    over weight draws, float64."""
    out = np.zeros(depth)
    for _ in range(n_draws):
        x = rng.normal(size=(batch, 3))
        for layer in range(depth):
            n = x.shape[1]
            y = x @ (rng.normal(size=(n, width)) * std(n))
            out[layer] += np.mean(y * y) / n_draws
            x = np.maximum(y, 0)
    return out


@pytest.mark.parametrize("law, std", [(KAIMING, lambda n: np.sqrt(2.0 / n)), (STANDARD, lambda n: 1.0)])
def test_init_slopes_match_a_float64_chain(law, std):
    rng = np.random.default_rng(1)
    widths = [16, 32, 64]
    sq = np.array([_chain_sq_means(w, std, rng) for w in widths])
    measured = [loglog_slope(widths, sq[:, layer]) for layer in range(sq.shape[1])]
    predicted = init_sq_mean_slopes([0, 1, 1, 1], law)
    assert measured == pytest.approx(predicted, abs=0.12)


def test_filter_sum_slope_flat_at_init_linear_when_shifted():
    relu = relu_gaussian_moments(1.0)
    fans = [36, 72, 144, 288]
    assert filter_sum_slope(fans, 0.0) == pytest.approx(0.0, abs=1e-12)
    assert filter_sum_slope(fans, 3.0) == pytest.approx(1.0, abs=0.01)
    shift = [shifted_filter_split(n, 0.1, relu.mean ** 2, relu.sq_mean).shift for n in fans]
    assert filter_sum_slope(fans, 0.1) == pytest.approx(np.polyfit(np.log(fans), np.log(shift), 1)[0], abs=1e-12)
