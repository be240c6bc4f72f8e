"""varprobe.theory.pws against torch float64 references and autograd (exact identities, tight tolerances)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from varprobe.theory import (
    filter_variance,
    predict_output_sq_mean,
    pws_fan_var,
    pws_grad_scale,
    pws_grad_scale_bound,
    pws_kernel,
    pws_raw_grad,
    second_moment_split,
)

CASES = [  # (shape, gamma', fan)
    ((5, 3, 3, 3), 1e-3, 27),
    ((4, 2, 3, 3), 0.0, 36),  # gamma' = 0, fan = fan_out = 4 * 3 * 3
    ((6, 8), 0.05, 8),  # linear weight
    ((3, 4, 1, 1), 2.0, 4),  # gamma' larger than s^2
]


def draw(shape, seed: int):
    """Raw weight with non-zero filter means, per-filter alpha (one negative), and a kernel gradient."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(shape, generator=gen, dtype=torch.float64) * 0.7 + torch.randn(
        (shape[0],) + (1,) * (len(shape) - 1), generator=gen, dtype=torch.float64)
    alpha = torch.rand(shape[0], generator=gen, dtype=torch.float64) + 0.5
    alpha[0] = -alpha[0]
    G = torch.randn(shape, generator=gen, dtype=torch.float64)
    return v, alpha, G


def torch_kernel(v: torch.Tensor, alpha: torch.Tensor, gamma: float, fan: float) -> torch.Tensor:
    """Independent float64 torch implementation of paper-notes 2.1 (differentiable)."""
    flat = v.reshape(v.shape[0], -1)
    mean = flat.mean(dim=1, keepdim=True)
    var = flat.var(dim=1, unbiased=False, keepdim=True)
    return (math.sqrt(2.0 / fan) * alpha[:, None] * (flat - mean) / torch.sqrt(var + gamma)).reshape(v.shape)


@pytest.mark.parametrize("shape,gamma,fan", CASES)
def test_kernel_matches_layer_norm_reference(shape, gamma, fan):
    v, alpha, _ = draw(shape, 1)
    ref = math.sqrt(2.0 / fan) * alpha.reshape((-1,) + (1,) * (len(shape) - 1)) * F.layer_norm(
        v, v.shape[1:], eps=gamma)
    kernel = pws_kernel(v, alpha.reshape((-1,) + (1,) * (len(shape) - 1)), gamma, fan)  # (C_out,1,1,1) alpha
    assert isinstance(kernel, np.ndarray) and kernel.dtype == np.float64 and kernel.shape == shape
    np.testing.assert_allclose(kernel, ref.numpy(), rtol=1e-12, atol=1e-14)
    flat = kernel.reshape(shape[0], -1)
    assert np.abs(flat.mean(axis=1)).max() <= 1e-15 * np.abs(flat).max()  # every filter sums to zero


@pytest.mark.parametrize("shape,gamma,fan", CASES)
def test_fan_var_matches_kernel_variance(shape, gamma, fan):
    v, alpha, _ = draw(shape, 2)
    s2 = filter_variance(v)
    np.testing.assert_allclose(s2, v.reshape(shape[0], -1).var(dim=1, unbiased=False).numpy(), rtol=1e-13)
    kernel = pws_kernel(v, alpha, gamma, fan).reshape(shape[0], -1)
    np.testing.assert_allclose(fan * kernel.var(axis=1), pws_fan_var(alpha, s2, gamma), rtol=1e-12)


def test_fan_var_limits():
    assert pws_fan_var(1.0, 3.0, 0.0) == pytest.approx(2.0, rel=1e-15)  # He's 2
    assert pws_fan_var(1.0, 1e-3, 1e-3) == pytest.approx(1.0, rel=1e-15)  # gamma' = s^2 halves it
    assert pws_fan_var(-2.0, 1.0, 0.0) == pytest.approx(8.0, rel=1e-15)
    out = pws_fan_var(np.ones(3), np.array([1.0, 2.0, 3.0]), 1.0)
    np.testing.assert_allclose(out, 2 * np.array([1, 2, 3]) / np.array([2, 3, 4]), rtol=1e-15)
    with pytest.raises(ValueError):
        pws_fan_var(1.0, 1.0, -1e-3)


def test_pws_keeps_he_transmission_for_iid_inputs():
    """Zero-sum filters: E[y^2] = sigma^2 ||kernel||^2 = Var(x) * fan Var(kernel) (fan = fan-in), no shift."""
    v, alpha, _ = draw((5, 3, 3, 3), 3)
    mu, var, gamma = 0.4, 0.34, 1e-3
    kernel = pws_kernel(v, alpha, gamma, 27)
    split = second_moment_split(kernel, mu, var)
    assert np.abs(split.shift).max() <= 1e-28
    np.testing.assert_allclose(predict_output_sq_mean(kernel, mu, var),
                               var * pws_fan_var(alpha, filter_variance(v), gamma), rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# raw gradient
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,gamma,fan", CASES)
def test_raw_grad_matches_autograd(shape, gamma, fan):
    v, alpha, G = draw(shape, 4)
    v = v.clone().requires_grad_(True)
    (torch_kernel(v, alpha, gamma, fan) * G).sum().backward()
    closed = pws_raw_grad(v, alpha, gamma, fan, G)  # torch tensors (one requiring grad) accepted
    assert closed.shape == shape and closed.dtype == np.float64
    scale = np.abs(v.grad.numpy()).max()
    np.testing.assert_allclose(closed, v.grad.numpy(), rtol=0, atol=1e-10 * scale)


@pytest.mark.parametrize("shape,gamma,fan", CASES)
def test_raw_grad_has_zero_filter_mean_and_radial_identity(shape, gamma, fan):
    v, alpha, G = draw(shape, 5)
    grad = pws_raw_grad(v, alpha, gamma, fan, G).reshape(shape[0], -1)
    assert np.abs(grad.mean(axis=1)).max() <= 1e-12 * max(1.0, np.abs(grad).max())
    # u^T dL/dv = (c alpha / r)(u^T G) gamma' / r^2
    flat = v.reshape(shape[0], -1).numpy()
    u = flat - flat.mean(axis=1, keepdims=True)
    r2 = (u**2).mean(axis=1) + gamma
    Gf = G.reshape(shape[0], -1).numpy()
    c = math.sqrt(2.0 / fan)
    expected = c * alpha.numpy() / np.sqrt(r2) * (u * Gf).sum(axis=1) * gamma / r2
    np.testing.assert_allclose((u * grad).sum(axis=1), expected, rtol=1e-9, atol=1e-13)


def test_raw_grad_rejects_mismatched_shapes():
    v, alpha, G = draw((3, 4), 6)
    with pytest.raises(ValueError):
        pws_raw_grad(v, alpha, 1e-3, 4, G[:, :3])
    with pytest.raises(ValueError):
        pws_raw_grad(v, alpha[:2], 1e-3, 4, G)


# ----------------------------------------------------------------------------------------------
# gradient scale bound
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gamma", [1e-4, 1e-2, 0.3, 5.0])
def test_jacobian_spectrum(gamma):
    """d kernel / d v for one filter of n = 12: singular values 0, c alpha gamma' / r^3 and c alpha / r
    (n - 2 times)."""
    fan, n, alpha = 18, 12, -1.3
    gen = torch.Generator().manual_seed(9)
    v = torch.randn(1, n, generator=gen, dtype=torch.float64) * 0.2 + 0.5
    a = torch.tensor([alpha], dtype=torch.float64)
    J = torch.autograd.functional.jacobian(lambda x: torch_kernel(x, a, gamma, fan).reshape(n), v)
    J = J.reshape(n, n)
    sv = np.sort(torch.linalg.svdvals(J).numpy())
    s2 = float(filter_variance(v)[0])
    r = math.sqrt(s2 + gamma)
    c = math.sqrt(2.0 / fan)
    scale = pws_grad_scale(alpha, s2, gamma, fan)
    assert sv[-1] == pytest.approx(scale, rel=1e-10)
    assert scale == pytest.approx(c * abs(alpha) / r, rel=1e-15)
    assert sv[-1] <= pws_grad_scale_bound(alpha, gamma, fan) * (1 + 1e-12)
    expected = np.sort(np.r_[0.0, c * abs(alpha) * gamma / r**3, np.full(n - 2, c * abs(alpha) / r)])
    np.testing.assert_allclose(sv, expected, rtol=1e-9, atol=1e-12 * scale)


def test_bound_attained_and_approached_as_weights_shrink():
    fan, n, alpha, gamma = 27, 27, 0.8, 1e-3
    rng = np.random.default_rng(10)
    v0 = rng.normal(0.1, 0.3, size=(1, n))
    bound = pws_grad_scale_bound(alpha, gamma, fan)
    assert bound == pytest.approx(math.sqrt(2 / fan) * alpha / math.sqrt(gamma), rel=1e-15)
    scales = []
    for shrink in 10.0 ** -np.arange(0, 7):  # weight decay shrinking s^2
        v = v0 * shrink
        u = v - v.mean()
        G = rng.normal(size=(1, n))  # project G onto the complement of {1, u}: the norm is attained there
        G -= G.mean()
        G -= (G * u).sum() / (u * u).sum() * u
        grad = pws_raw_grad(v, alpha, gamma, fan, G)
        scale = pws_grad_scale(alpha, filter_variance(v), gamma, fan)
        assert np.linalg.norm(grad) == pytest.approx(scale * np.linalg.norm(G), rel=1e-10)
        assert scale <= bound
        scales.append(scale)
    assert np.all(np.diff(scales) > 0) and scales[-1] == pytest.approx(bound, rel=1e-6)
    # without gamma' there is no cap: the scale grows like 1 / s
    assert pws_grad_scale_bound(alpha, 0.0, fan) == math.inf
    s = np.array([1e-1, 1e-3, 1e-5])
    np.testing.assert_allclose(pws_grad_scale(alpha, s**2, 0.0, fan) * s, math.sqrt(2 / fan) * alpha,
                               rtol=1e-14)
