"""varprobe.theory.normalization: BN removes the shift term, BN = WN under Sigma, WN keeps the shift ratio.

MC checks allow Z = 5 standard errors (std(ddof=1) / sqrt(N)); sample sizes and seeds are fixed.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from varprobe.theory import (
    bn_centered_split,
    bn_effective_weight,
    second_moment_split,
    second_moment_split_cov,
    wn_shift_ratio,
)

Z = 5.0


def mc_mean(samples: np.ndarray, axis: int = 0):
    return samples.mean(axis=axis), samples.std(axis=axis, ddof=1) / math.sqrt(samples.shape[axis])


def correlated_inputs(rng, n: int, n_draws: int):
    A = rng.normal(size=(n, n))
    cov = A @ A.T / n + 0.2 * np.eye(n)
    mean = rng.uniform(0.5, 1.5, size=n)  # post-ReLU-like: positive mean
    x = mean + rng.normal(size=(n_draws, n)) @ np.linalg.cholesky(cov).T
    return x, mean, cov


# ----------------------------------------------------------------------------------------------
# BN: centering deletes the shift term
# ----------------------------------------------------------------------------------------------
def test_bn_centering_removes_shift_term_mc():
    rng = np.random.default_rng(21)
    n, n_draws = 6, 200_000
    x, mean, cov = correlated_inputs(rng, n, n_draws)
    W = rng.normal(0.4, 0.3, size=(4, n))  # shifted filter means: a large shift term before centering

    raw = second_moment_split_cov(W, mean, cov)
    centered = bn_centered_split(W, cov)
    np.testing.assert_array_equal(centered.shift, np.zeros(4))
    np.testing.assert_allclose(centered.total, raw.zero_mean, rtol=1e-14)
    assert np.all(raw.shift > 0.1 * raw.total)  # the shift was a sizeable part before centering

    y = x @ W.T
    est, se = mc_mean(y**2)
    assert np.all(np.abs(est - raw.total) <= Z * se)
    y_centered = (x - x.mean(axis=0)) @ W.T  # BN's batch-mean subtraction, moved to the input
    np.testing.assert_allclose(y_centered, y - y.mean(axis=0), atol=1e-10)
    est, se = mc_mean(y_centered**2)
    assert np.all(np.abs(est - centered.total) <= Z * se)


def test_bn_centered_split_iid_scalar_variance():
    W = np.random.default_rng(3).normal(size=(3, 2, 3, 3))
    centered = bn_centered_split(W, 0.25)
    np.testing.assert_allclose(centered.total, second_moment_split(W, 0.7, 0.25).zero_mean, rtol=1e-14)
    assert isinstance(bn_centered_split(W[0].ravel(), 0.25).total, float)


def test_bn_equals_weight_normalization_under_input_covariance():
    """batch_norm(x W^T) (training statistics, affine 1/0) == (x - mean) w_eff^T, exactly (float64)."""
    rng = np.random.default_rng(22)
    n, batch, eps = 8, 4096, 1e-5
    x, _, _ = correlated_inputs(rng, n, batch)
    W = rng.normal(0.1, 0.4, size=(5, n))
    y = torch.from_numpy(x @ W.T)
    bn = F.batch_norm(y, None, None, training=True, eps=eps).numpy()
    cov_batch = np.cov(x, rowvar=False, bias=True)
    w_eff = bn_effective_weight(W, cov_batch, eps)
    assert w_eff.shape == W.shape
    np.testing.assert_allclose((x - x.mean(axis=0)) @ w_eff.T, bn, rtol=0, atol=1e-10)

    # i.i.d. inputs (Sigma = sigma^2 I): BN is WN, w / ||w||, divided by sigma
    sigma2 = 0.36
    np.testing.assert_allclose(bn_effective_weight(W, sigma2),
                               W / np.linalg.norm(W, axis=1, keepdims=True) / math.sqrt(sigma2), rtol=1e-14)


# ----------------------------------------------------------------------------------------------
# WN: the shift ratio
# ----------------------------------------------------------------------------------------------
def test_wn_shift_ratio_invariant_to_wn_rescaling():
    rng = np.random.default_rng(23)
    v = rng.normal(0.05, 0.2, size=(6, 4, 3, 3))
    g = rng.uniform(-3.0, 3.0, size=6)
    flat = v.reshape(6, -1)
    wn = (g[:, None] * flat / np.linalg.norm(flat, axis=1, keepdims=True)).reshape(v.shape)
    rho = wn_shift_ratio(v)
    np.testing.assert_allclose(wn_shift_ratio(wn), rho, rtol=1e-12)
    np.testing.assert_allclose(rho, flat.sum(axis=1) ** 2 / (flat**2).sum(axis=1), rtol=1e-14)
    assert np.all((rho >= 0) & (rho <= 36))
    # the shift term is mu^2 rho ||w||^2: WN (||w|| = |g|) leaves it at mu^2 rho g^2
    mu, var = 0.4, 0.34
    np.testing.assert_allclose(second_moment_split(wn, mu, var).shift, mu**2 * rho * g**2, rtol=1e-12)
    np.testing.assert_allclose(second_moment_split(wn, mu, var).zero_mean, var * g**2, rtol=1e-12)


def test_wn_shift_ratio_extremes():
    rng = np.random.default_rng(24)
    v = rng.normal(size=(5, 27))
    centered = v - v.mean(axis=1, keepdims=True)
    assert np.abs(wn_shift_ratio(centered)).max() <= 1e-28
    np.testing.assert_allclose(wn_shift_ratio(np.full((2, 27), -0.3)), [27.0, 27.0], rtol=1e-14)  # = n
    assert isinstance(wn_shift_ratio(v[0]), float)
    assert np.isnan(wn_shift_ratio(np.zeros((1, 4))))[0]
    # a centered filter u shifted by delta: rho = (n delta)^2 / (||u||^2 + n delta^2), whatever WN's g
    delta = np.array([0.0, 0.05, 0.2, 1.0, -1.0])
    shifted = centered + delta[:, None]
    expected = (27 * delta) ** 2 / ((centered**2).sum(axis=1) + 27 * delta**2)
    np.testing.assert_allclose(wn_shift_ratio(shifted), expected, rtol=1e-12, atol=1e-28)
    np.testing.assert_allclose(wn_shift_ratio(7.5 * shifted), expected, rtol=1e-12, atol=1e-28)
    tv = torch.from_numpy(v).float()
    np.testing.assert_allclose(wn_shift_ratio(tv), wn_shift_ratio(tv.double().numpy()), rtol=1e-15)


@pytest.mark.parametrize("law", ["he_normal", "he_uniform"])
def test_wn_shift_ratio_has_mean_one_at_init(law):
    rng = np.random.default_rng(25 if law == "he_normal" else 26)
    n, n_filters = 27, 100_000
    std = math.sqrt(2.0 / n)
    if law == "he_normal":
        W = rng.normal(0.0, std, size=(n_filters, n))
    else:
        bound = math.sqrt(3.0) * std
        W = rng.uniform(-bound, bound, size=(n_filters, n))
    est, se = mc_mean(wn_shift_ratio(W))
    assert abs(est - 1.0) <= Z * se
