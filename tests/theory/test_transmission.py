"""varprobe.theory.transmission against Monte Carlo (sample sizes, seeds and tolerances fixed in advance).

Every MC comparison allows Z = 5 standard errors of the MC estimate (std(ddof=1) / sqrt(N)), so a
correct formula fails with probability ~6e-7 per check; the seeds are fixed, so runs are reproducible.
"""
from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from varprobe import theory
from varprobe.theory import (
    ReluMoments,
    Split,
    he_transmission,
    he_weight_var,
    output_sq_mean,
    predict_layer_sq_mean,
    predict_output_sq_mean,
    relu_gaussian_moments,
    second_moment_split,
    second_moment_split_cov,
)

Z = 5.0  # MC tolerance in standard errors


def mc_mean(samples: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sample mean and its standard error along ``axis``."""
    n = samples.shape[axis]
    return samples.mean(axis=axis), samples.std(axis=axis, ddof=1) / math.sqrt(n)


def assert_mc(estimate, se, expected, z: float = Z) -> None:
    estimate, se, expected = map(np.asarray, (estimate, se, expected))
    dev = np.abs(estimate - expected)
    assert np.all(dev <= z * se), f"MC {estimate} vs theory {expected}: {dev / se} standard errors"


# ----------------------------------------------------------------------------------------------
# second_moment_split: i.i.d. inputs
# ----------------------------------------------------------------------------------------------
def test_second_moment_split_matches_mc_for_iid_relu_inputs():
    rng = np.random.default_rng(1234)
    n_draws, sigma_z = 200_000, 1.3
    W = rng.normal(0.05, 0.3, size=(4, 3, 3, 3))  # conv weight (O, I, kh, kw), non-zero filter means
    moments = relu_gaussian_moments(sigma_z)
    x = np.maximum(rng.normal(0.0, sigma_z, size=(n_draws, 27)), 0.0)  # i.i.d. ReLU(N(0, 1.69))
    y = x @ W.reshape(4, -1).T  # (N, C_out)

    split = second_moment_split(W, moments.mean, moments.var)
    assert isinstance(split, Split) and split.total.shape == (4,)
    np.testing.assert_array_equal(split.total, split.zero_mean + split.shift)

    est, se = mc_mean(y**2)
    assert_mc(est, se, split.total)  # E[(w^T x)^2]
    est, se = mc_mean(y)
    assert_mc(est, se, moments.mean * W.reshape(4, -1).sum(axis=1))  # E[y] = mu * sum(w): shift = E[y]^2
    np.testing.assert_allclose(split.shift, (moments.mean * W.reshape(4, -1).sum(axis=1)) ** 2, rtol=1e-14)
    est, se = mc_mean((y - y.mean(axis=0)) ** 2)
    assert_mc(est, se, split.zero_mean)  # Var[y] = sigma^2 ||w||^2
    np.testing.assert_allclose(split.shift_fraction, split.shift / split.total, rtol=1e-15)


def test_predict_output_sq_mean_matches_conv2d_output_with_groups_and_stride():
    """What a probe's bias-free, padding-free ``out.sq_mean`` measures, per channel and per layer."""
    gen = torch.Generator().manual_seed(7)
    W = torch.randn(4, 2, 3, 3, generator=gen, dtype=torch.float64) * 0.4 + 0.03  # groups=2, C_in=4
    # i.i.d. Uniform(0, 1) inputs: mu = 1/2, sigma^2 = 1/12. stride = kernel: disjoint, independent patches.
    x = torch.rand(800, 4, 30, 30, generator=gen, dtype=torch.float64)
    y = F.conv2d(x, W, bias=None, stride=3, padding=0, groups=2)  # (800, 4, 10, 10)
    samples = y.permute(1, 0, 2, 3).reshape(4, -1).numpy().T  # (80_000, C_out)

    per_channel = predict_output_sq_mean(W, 0.5, 1.0 / 12.0)  # torch weight accepted
    assert isinstance(per_channel, np.ndarray) and per_channel.dtype == np.float64
    est, se = mc_mean(samples**2)
    assert_mc(est, se, per_channel)

    layer_samples = (samples**2).mean(axis=1)  # per-sample-position average over channels
    est, se = mc_mean(layer_samples)
    assert_mc(est, se, predict_layer_sq_mean(W, 0.5, 1.0 / 12.0))
    assert predict_layer_sq_mean(W, 0.5, 1.0 / 12.0) == pytest.approx(per_channel.mean(), rel=1e-15)


# ----------------------------------------------------------------------------------------------
# general mean and covariance
# ----------------------------------------------------------------------------------------------
def test_output_sq_mean_with_covariance_matches_mc():
    rng = np.random.default_rng(99)
    n, n_draws = 6, 200_000
    A = rng.normal(size=(n, n))
    cov = A @ A.T / n + 0.1 * np.eye(n)
    mean = rng.uniform(0.2, 1.0, size=n)
    W = rng.normal(0.0, 0.5, size=(3, n))  # linear weight (O, I)
    x = mean + rng.normal(size=(n_draws, n)) @ np.linalg.cholesky(cov).T
    y = x @ W.T

    split = second_moment_split_cov(W, mean, cov)
    np.testing.assert_allclose(output_sq_mean(W, mean, cov), split.total, rtol=1e-15)
    est, se = mc_mean(y**2)
    assert_mc(est, se, split.total)
    np.testing.assert_allclose(split.zero_mean, np.einsum("ij,jk,ik->i", W, cov, W), rtol=1e-13)
    np.testing.assert_allclose(split.shift, (W @ mean) ** 2, rtol=1e-13)


def test_covariance_version_reduces_to_iid_version():
    rng = np.random.default_rng(5)
    W = rng.normal(size=(5, 2, 3, 3))
    mu, var = 0.4, 0.3
    iid = second_moment_split(W, mu, var)
    for cov in (var, var * np.eye(18)):
        general = second_moment_split_cov(W, mu, cov)
        for name in ("zero_mean", "shift", "total"):
            np.testing.assert_allclose(getattr(general, name), getattr(iid, name), rtol=1e-13)


# ----------------------------------------------------------------------------------------------
# He transmission
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("weight_var_times_fan", [2.0, 0.7])
def test_he_transmission_matches_mc_over_weights_and_inputs(weight_var_times_fan):
    """Var[y] = fan Var[w] E[x^2], drawing a fresh zero-mean weight vector with every input."""
    rng = np.random.default_rng(2024)
    fan, n_draws = 20, 200_000
    weight_var = weight_var_times_fan / fan
    w = rng.normal(0.0, math.sqrt(weight_var), size=(n_draws, fan))
    x = np.maximum(rng.normal(size=(n_draws, fan)), 0.0)  # ReLU(N(0,1)): E[x^2] = 1/2
    y = np.einsum("ij,ij->i", w, x)
    expected = he_transmission(fan, weight_var, 0.5)
    assert expected == pytest.approx(fan * weight_var * 0.5, rel=1e-15)
    est, se = mc_mean(y**2)
    assert_mc(est, se, expected)
    est, se = mc_mean(y)
    assert_mc(est, se, 0.0)  # zero-mean weights: E[y] = 0, so Var[y] = E[y^2]


def test_he_transmission_is_expectation_of_per_filter_prediction():
    """Average of the exact per-filter E_x[y^2] over He weight draws = 2 E[x^2]."""
    rng = np.random.default_rng(31)
    fan, n_filters = 50, 40_000
    m = relu_gaussian_moments(1.0)
    W = rng.normal(0.0, math.sqrt(he_weight_var(fan)), size=(n_filters, fan))
    est, se = mc_mean(predict_output_sq_mean(W, m.mean, m.var))
    assert_mc(est, se, he_transmission(fan, he_weight_var(fan), m.sq_mean))


def test_he_constants():
    assert he_weight_var(576) == pytest.approx(2 / 576, rel=1e-15)
    assert he_transmission(576, he_weight_var(576), 0.37) == pytest.approx(2 * 0.37, rel=1e-15)
    assert he_transmission(10, 0.1) == pytest.approx(1.0, rel=1e-15)  # default E[x^2] = 1: the gain
    out = he_transmission(np.array([27, 576]), 2 / np.array([27, 576]), 0.5)
    np.testing.assert_allclose(out, [1.0, 1.0], rtol=1e-15)
    with pytest.raises(ValueError):
        he_weight_var(0)


# ----------------------------------------------------------------------------------------------
# ReLU of a Gaussian
# ----------------------------------------------------------------------------------------------
def test_relu_gaussian_moments_closed_form_and_mc():
    m1 = relu_gaussian_moments()
    assert isinstance(m1, ReluMoments)
    assert m1.mean == pytest.approx(1 / math.sqrt(2 * math.pi), rel=1e-15)
    assert m1.mean**2 == pytest.approx(0.159, abs=5e-4)  # the notes' printed mu^2
    assert m1.sq_mean == 0.5
    assert m1.var == pytest.approx(m1.sq_mean - m1.mean**2, rel=1e-14)

    sigma = 1.7
    m = relu_gaussian_moments(sigma)
    x = np.maximum(np.random.default_rng(11).normal(0.0, sigma, size=1_000_000), 0.0)
    for samples, expected in ((x, m.mean), (x**2, m.sq_mean), ((x - m.mean) ** 2, m.var)):
        est, se = mc_mean(samples)
        assert_mc(est, se, expected)
    with pytest.raises(ValueError):
        relu_gaussian_moments(-1.0)


# ----------------------------------------------------------------------------------------------
# input handling
# ----------------------------------------------------------------------------------------------
def test_inputs_torch_float32_numpy_and_single_filter():
    gen = torch.Generator().manual_seed(0)
    Wt = torch.randn(3, 5, generator=gen, requires_grad=True)  # float32, with grad
    Wn = Wt.detach().double().numpy()
    a = second_moment_split(Wt, torch.tensor(0.25), 0.2)  # 0.25 is exact in float32
    b = second_moment_split(Wn, 0.25, 0.2)
    np.testing.assert_array_equal(a.total, b.total)
    assert a.total.dtype == np.float64

    single = second_moment_split(Wn[0], 0.25, 0.2)  # 1-D weight: one filter, floats back
    assert isinstance(single.total, float) and single.total == pytest.approx(b.total[0], rel=1e-15)
    assert isinstance(predict_output_sq_mean(Wn[0], 0.3, 0.2), float)
    assert isinstance(output_sq_mean(Wn[0], np.full(5, 0.3), np.eye(5)), float)

    before = Wn.copy()
    predict_output_sq_mean(Wn, 0.3, 0.2)
    np.testing.assert_array_equal(Wn, before)  # inputs are not modified

    with pytest.raises(ValueError):
        second_moment_split(Wn, 0.3, -1.0)
    with pytest.raises(ValueError):
        second_moment_split_cov(Wn, 0.3, np.eye(4))
    with pytest.raises(ValueError):
        second_moment_split(np.float64(1.0), 0.3, 0.2)
    with pytest.raises(ValueError, match="input_mean"):  # i.i.d. version takes a scalar mean
        second_moment_split(Wn, np.full(5, 0.3), 0.2)


def test_theory_imports_nothing_else_of_varprobe():
    root = Path(__file__).resolve().parents[2] / "varprobe" / "theory"
    own = {p.stem for p in root.glob("*.py")}
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:  # relative: only siblings inside varprobe.theory
                    assert node.level == 1 and (node.module or "").split(".")[0] in own, (path, node.module)
                else:
                    assert not (node.module or "").startswith("varprobe"), (path, node.module)
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("varprobe") for a in node.names), path


# ----------------------------------------------------------------------------------------------
# channel_moments: per-input-channel means and variances, zero padding; split_from_norms
# ----------------------------------------------------------------------------------------------
def _brute_channel_moments(w, mu, var, bias, size, stride, padding, dilation, groups):
    """Per output channel mean and variance over positions, by loops over positions and taps: at
    each output position E[y] = b + sum of K mu_c and Var[y] = sum of K^2 var_c over the taps that
    read the input (not padding); over positions, the mean of E[y] and the mean of Var[y] plus the
    spread of E[y]."""
    o, cin, kh, kw = w.shape
    h, wd = size
    oh = (h + 2 * padding[0] - dilation * (kh - 1) - 1) // stride + 1
    ow = (wd + 2 * padding[1] - dilation * (kw - 1) - 1) // stride + 1
    means, variances = np.zeros(o), np.zeros(o)
    for i in range(o):
        g = i // (o // groups)
        e, v = [], []
        for py in range(oh):
            for px in range(ow):
                ey, vy = bias[i], 0.0
                for a in range(kh):
                    for b in range(kw):
                        yy, xx = py * stride - padding[0] + a * dilation, px * stride - padding[1] + b * dilation
                        if 0 <= yy < h and 0 <= xx < wd:
                            for c in range(cin):
                                ey += w[i, c, a, b] * mu[g * cin + c]
                                vy += w[i, c, a, b] ** 2 * var[g * cin + c]
                e.append(ey)
                v.append(vy)
        e, v = np.array(e), np.array(v)
        means[i], variances[i] = e.mean(), v.mean() + ((e - e.mean()) ** 2).mean()
    return means, variances


@pytest.mark.parametrize("stride,padding,dilation,groups", [(1, (1, 1), 1, 1), (2, (1, 2), 1, 2), (1, (2, 0), 2, 3)])
def test_channel_moments_match_brute_force_over_positions(stride, padding, dilation, groups):
    from varprobe.stats import tap_overlap

    rng = np.random.default_rng(3)
    o, cin, size = 6, 2, (5, 7)
    w = rng.normal(size=(o, cin, 3, 3))
    mu, var, bias = rng.normal(size=cin * groups), rng.uniform(0.1, 2, cin * groups), rng.normal(size=o)
    overlap = tap_overlap(size, (3, 3), (stride, stride), (dilation, dilation),
                          [(padding[0], padding[0]), (padding[1], padding[1])]).numpy()
    got = theory.channel_moments(w, mu, var, overlap=overlap, bias=bias, groups=groups)
    want_mean, want_var = _brute_channel_moments(w, mu, var, bias, size, stride, padding, dilation, groups)
    np.testing.assert_allclose(got.mean, want_mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got.var, want_var, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got.sq_mean, want_var + want_mean ** 2, rtol=1e-12)


def test_channel_moments_match_mc_of_a_padded_conv_on_channels_of_unequal_moments():
    torch.manual_seed(0)
    mu, sd = torch.tensor([0.0, 2.0, -1.0], dtype=torch.float64), torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    w, b = torch.randn(4, 3, 3, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    x = mu[None, :, None, None] + sd[None, :, None, None] * torch.randn(4000, 3, 6, 6, dtype=torch.float64)
    y = F.conv2d(x, w, b, padding=1)  # (N, 4, 6, 6)
    from varprobe.stats import layer_tap_overlap

    got = theory.channel_moments(w, mu, sd ** 2, overlap=layer_tap_overlap((6, 6), (3, 3), (1, 1), (1, 1), (1, 1)),
                                 bias=b)
    flat = y.permute(1, 0, 2, 3).reshape(4, -1)  # per channel over batch and positions
    np.testing.assert_allclose(flat.mean(1).numpy(), got.mean, atol=0.05)
    np.testing.assert_allclose(flat.var(1, unbiased=False).numpy(), got.var, rtol=0.02)


def test_channel_moments_reduce_to_the_iid_split_without_padding_and_split_from_norms_is_its_mean():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(5, 3, 2, 2))
    split = second_moment_split(w, 0.7, 1.3)
    cm = theory.channel_moments(w, 0.7, 1.3)  # scalars: the same moments in every channel; no overlap: no padding
    np.testing.assert_allclose(cm.var, split.zero_mean, rtol=1e-12)
    np.testing.assert_allclose(cm.mean ** 2, split.shift, rtol=1e-12)
    f = w.reshape(5, -1)
    layer = theory.split_from_norms((f ** 2).sum(1).mean(), (f.sum(1) ** 2).mean(), 0.7, 1.3)
    assert layer.zero_mean == pytest.approx(split.zero_mean.mean(), rel=1e-12)
    assert layer.shift == pytest.approx(split.shift.mean(), rel=1e-12)
    assert layer.total == pytest.approx(1.3 * (f ** 2).sum(1).mean() + 0.49 * (f.sum(1) ** 2).mean(), rel=1e-12)
    both = theory.split_from_norms(np.array([1.0, 2.0]), np.array([3.0, 0.0]), 2.0, np.array([0.5, 0.25]))
    np.testing.assert_allclose(both.zero_mean, [0.5, 0.5])
    np.testing.assert_allclose(both.shift, [12.0, 0.0])
    # a linear layer: one tap, the bias enters the mean only
    lin = rng.normal(size=(4, 3))
    m, v = np.array([1.0, -2.0, 0.5]), np.array([0.3, 1.0, 2.0])
    got = theory.channel_moments(lin, m, v, bias=np.ones(4))
    np.testing.assert_allclose(got.mean, lin @ m + 1.0, rtol=1e-12)
    np.testing.assert_allclose(got.var, (lin ** 2) @ v, rtol=1e-12)


def test_channel_moments_and_split_from_norms_refuse_bad_arguments():
    w = np.ones((4, 2, 3, 3))
    with pytest.raises(ValueError, match="groups must be >= 1 and divide C_out = 4, got 3"):
        theory.channel_moments(w, 0.0, 1.0, groups=3)
    with pytest.raises(ValueError, match=r"overlap must be \(9, 9\)"):
        theory.channel_moments(w, 0.0, 1.0, overlap=np.ones((4, 4)))
    with pytest.raises(ValueError, match="input_var must be >= 0"):
        theory.channel_moments(w, 0.0, -1.0)
    with pytest.raises(ValueError, match="weight must be"):
        theory.channel_moments(np.ones(3), 0.0, 1.0)
    with pytest.raises(ValueError, match="input_var must be >= 0"):
        theory.split_from_norms(1.0, 1.0, 0.0, -0.5)
