"""PWSConv2d: the claims of paper-notes sections 1.6 and 2, each against a float64 reference."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from varprobe.layers import PWSConv2d


def filter_mean_var(V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-filter mean and biased variance over (C_in/groups, kh, kw), float64, written out."""
    flat = np.asarray(V, dtype=np.float64).reshape(V.shape[0], -1)
    n = flat.shape[1]
    mean = flat.sum(axis=1) / n
    return mean, ((flat - mean[:, None]) ** 2).sum(axis=1) / n


def fan_of(O, I, kh, kw, mode):
    return I * kh * kw if mode == "fan_in" else O * kh * kw


def gamma_prime(gamma, mode, fan):
    return gamma if mode == "raw" else gamma * 2.0 / fan


def _random_loss(y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    R = torch.randn(y.shape, generator=gen, dtype=y.dtype)
    return (R * y).sum() + 0.3 * (torch.relu(y) ** 2).mean() + 0.1 * torch.tanh(y).sum()


# ----------------------------------------------------------------------------------------------
# the average gradient of the raw weight is zero (section 1.6)
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fan,gamma_mode,gamma", [("fan_in", "raw", 1e-3), ("fan_out", "equiv", 0.1),
                                                  ("fan_in", "equiv", 1.0), ("fan_out", "raw", 0.0)])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_per_filter_average_gradient_is_zero(fan, gamma_mode, gamma, dtype, tol):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    m = PWSConv2d(12, 16, 3, stride=2, padding=1, groups=2, gamma=gamma, gamma_mode=gamma_mode, fan=fan).to(dtype)
    with torch.no_grad():
        m.weight.add_(0.1 * torch.randn(16, 1, 1, 1, generator=gen, dtype=dtype))  # shifted filter means
        m.alpha.uniform_(0.5, 2.0, generator=gen)
    x = torch.relu(torch.randn(4, 12, 9, 9, generator=gen, dtype=dtype)) + 0.5  # post-ReLU, mean > 0
    _random_loss(m(x), gen).backward()
    g = m.weight.grad.double()
    avg = g.sum(dim=(1, 2, 3)) / g[0].numel()
    scale = g.abs().flatten(1).max(dim=1).values
    assert torch.all(scale > 0)
    assert torch.all(avg.abs() <= tol * scale), (avg.abs() / scale).max()

    # control: the same loss through a plain conv with the same kernel has a clearly shifted
    # average gradient, so the check above can fail.
    plain = nn.Conv2d(12, 16, 3, stride=2, padding=1, groups=2).to(dtype)
    with torch.no_grad():
        plain.weight.copy_(m.kernel())
        plain.bias.copy_(m.bias)
    gen.manual_seed(1)
    _random_loss(plain(x), gen).backward()
    gp = plain.weight.grad.double()
    ratio = (gp.sum(dim=(1, 2, 3)) / gp[0].numel()).abs() / gp.abs().flatten(1).max(dim=1).values
    assert ratio.median() > 0.05


@pytest.mark.parametrize("fan,gamma_mode,gamma", [("fan_in", "raw", 1e-3), ("fan_out", "equiv", 0.5)])
def test_weight_gradient_matches_closed_form(fan, gamma_mode, gamma):
    """dL/dv = (c a / r) [(G - mean(G)) - (u.G)/(n r^2) u], and u.dL/dv = (c a / r)(u.G) gamma'/r^2
    (section 1.6), with G = dL/dkernel from a separate float64 conv; also dL/dalpha."""
    gen = torch.Generator().manual_seed(3)
    m = PWSConv2d(6, 8, (3, 2), padding=1, groups=2, gamma=gamma, gamma_mode=gamma_mode, fan=fan).double()
    with torch.no_grad():
        m.weight.mul_(torch.rand(8, 1, 1, 1, generator=gen, dtype=torch.float64) * 2)
        m.weight.add_(torch.randn(8, 1, 1, 1, generator=gen, dtype=torch.float64) * 0.05)
        m.alpha.uniform_(-2.0, 2.0, generator=gen)
        m.bias.normal_(generator=gen)
    x = torch.randn(3, 6, 7, 6, generator=gen, dtype=torch.float64)
    R = torch.randn(m(x).shape, generator=gen, dtype=torch.float64)
    (R * m(x)).sum().backward()

    V = m.weight.detach().numpy()
    alpha = m.alpha.detach().numpy().reshape(-1)
    O, I, kh, kw = V.shape
    fan_v = fan_of(O, I, kh, kw, fan)
    gp, c, n = gamma_prime(gamma, gamma_mode, fan_v), math.sqrt(2.0 / fan_v), I * kh * kw
    mean, s2 = filter_mean_var(V)
    u = (V.reshape(O, -1) - mean[:, None])
    r = np.sqrt(s2 + gp)
    K = torch.tensor((c * alpha[:, None] * u / r[:, None]).reshape(V.shape), requires_grad=True)
    (R * F.conv2d(x, K, m.bias.detach(), 1, 1, 1, 2)).sum().backward()
    G = K.grad.numpy().reshape(O, -1)

    uG = (u * G).sum(axis=1)
    dv = (c * alpha / r)[:, None] * ((G - G.mean(axis=1, keepdims=True)) - (uG / (n * r ** 2))[:, None] * u)
    np.testing.assert_allclose(m.weight.grad.numpy().reshape(O, -1), dv, rtol=1e-9, atol=1e-12 * np.abs(dv).max())
    radial = (u * m.weight.grad.numpy().reshape(O, -1)).sum(axis=1)
    np.testing.assert_allclose(radial, (c * alpha / r) * uG * gp / r ** 2, rtol=1e-8, atol=1e-14)
    dalpha = (G * c * u / r[:, None]).sum(axis=1)
    np.testing.assert_allclose(m.alpha.grad.numpy().reshape(-1), dalpha, rtol=1e-9, atol=1e-14)


# ----------------------------------------------------------------------------------------------
# kernel statistics
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fan", ["fan_in", "fan_out"])
@pytest.mark.parametrize("gamma_mode,gamma", [("raw", 1e-3), ("equiv", 0.3), ("raw", 0.0)])
def test_kernel_variance_per_filter(fan, gamma_mode, gamma):
    """fan * Var(kernel_i) = 2 alpha_i^2 s_i^2 / (s_i^2 + gamma') per filter, random alpha."""
    gen = torch.Generator().manual_seed(4)
    m = PWSConv2d(16, 24, 3, groups=4, gamma=gamma, gamma_mode=gamma_mode, fan=fan)
    O, I, kh, kw = m.weight.shape
    fan_v = fan_of(O, I, kh, kw, fan)
    gp = gamma_prime(gamma, gamma_mode, fan_v)
    with torch.no_grad():  # filter variances from 0.01*gamma' to 100*gamma' (or spread when gamma'=0)
        target = (gp if gp > 0 else 1e-3) * torch.logspace(-2, 2, O, dtype=torch.float64)
        m.weight.mul_((target.sqrt() / m.weight.double().flatten(1).std(dim=1)).float().reshape(O, 1, 1, 1))
        m.weight.add_(torch.randn(O, 1, 1, 1, generator=gen) * 0.01)
        m.alpha.copy_(torch.empty(O, 1, 1, 1).uniform_(-3, 3, generator=gen))
    k = m.kernel().detach().double().numpy()
    _, s2 = filter_mean_var(m.weight.detach().double().numpy())
    a = m.alpha.detach().double().numpy().reshape(-1)
    kmean, kvar = filter_mean_var(k)
    np.testing.assert_allclose(fan_v * kvar, 2 * a ** 2 * s2 / (s2 + gp), rtol=2e-5)
    assert np.all(np.abs(kmean) <= 1e-6 * np.sqrt(kvar))
    # ... and a non-trivial shrink: some filters are far below 2 a^2 when gamma' > 0
    if gp > 0:
        assert (fan_v * kvar / (2 * a ** 2)).min() < 0.05


def test_kernel_filters_sum_to_zero():
    torch.manual_seed(5)
    m = PWSConv2d(8, 16, 3, groups=2)
    with torch.no_grad():
        m.weight.add_(torch.randn(16, 1, 1, 1) * 0.2)  # filter means ~3 sd of the weights
        m.alpha.normal_()
    k = m.kernel().detach().double().numpy().reshape(16, -1)
    assert np.all(np.abs(k.sum(axis=1)) <= 1e-6 * np.abs(k).sum(axis=1))


def test_variance_transmission_he_like():
    """With alpha = 1 and gamma' << s^2, E[y^2] = ||k_i||^2 E[x^2] ~ 2 E[x^2] for iid zero-mean x.
    Tolerance fixed in advance: 5% (the estimate's sd over 64 channels x 1568 positions is ~0.5%)."""
    torch.manual_seed(6)
    m = PWSConv2d(256, 64, 3, gamma=1e-5)
    x = torch.randn(8, 256, 16, 16, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        y = m(x).double()
    _, s2 = filter_mean_var(m.weight.detach().double().numpy())
    expected = float(np.mean(2 * s2 / (s2 + 1e-5)))
    assert 1.95 < expected < 2.0
    assert abs(float((y ** 2).mean()) / expected - 1) < 0.05


# ----------------------------------------------------------------------------------------------
# initialisation
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fan,groups", [("fan_in", 1), ("fan_out", 1), ("fan_in", 4), ("fan_out", 4)])
def test_initialisation(fan, groups):
    """alpha == 1, bias == 0, V ~ N(0, 2/fan). Tolerance fixed in advance: N = 64*512*9/groups
    >= 73728, the sample variance's relative sd is sqrt(2/N) <= 0.52%; allow 3% (>= 5.8 sd); the
    mean within 5 sd of 0."""
    torch.manual_seed(8)
    m = PWSConv2d(64, 512, 3, groups=groups, fan=fan)
    assert m.alpha.shape == (512, 1, 1, 1)
    assert torch.equal(m.alpha, torch.ones(512, 1, 1, 1))
    assert torch.equal(m.bias, torch.zeros(512))
    fan_v = fan_of(512, 64 // groups, 3, 3, fan)
    V = m.weight.detach().double().numpy().ravel()
    mean = V.sum() / V.size
    var = ((V - mean) ** 2).sum() / V.size
    assert abs(var / (2.0 / fan_v) - 1) < 0.03, (var, 2.0 / fan_v)
    assert abs(mean) < 5 * math.sqrt(2.0 / fan_v / V.size)
    assert m.data_init is True
    names = {n for n, _ in m.named_parameters()}
    assert names == {"weight", "alpha", "bias"}


def test_no_bias_option():
    m = PWSConv2d(4, 4, 3, bias=False)
    assert m.bias is None
    x = torch.randn(1, 4, 5, 5)
    ref = F.conv2d(x.double(), m.kernel().detach().double())
    torch.testing.assert_close(m(x).double(), ref, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# shrink, gamma_eff, errors
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fan,gamma_mode,gamma", [("fan_in", "raw", 1e-3), ("fan_out", "equiv", 0.5),
                                                  ("fan_in", "equiv", 2.0), ("fan_in", "raw", 0.0)])
def test_shrink(fan, gamma_mode, gamma):
    torch.manual_seed(9)
    m = PWSConv2d(6, 10, (3, 2), groups=2, gamma=gamma, gamma_mode=gamma_mode, fan=fan)
    with torch.no_grad():
        m.weight.mul_(torch.logspace(-2, 1, 10).reshape(10, 1, 1, 1))
    O, I, kh, kw = m.weight.shape
    gp = gamma_prime(gamma, gamma_mode, fan_of(O, I, kh, kw, fan))
    _, s2 = filter_mean_var(m.weight.detach().double().numpy())
    got = m.shrink()
    assert got.shape == (10,)
    np.testing.assert_allclose(got.double().numpy(), np.sqrt(s2 / (s2 + gp)), rtol=1e-6)


def test_gamma_eff_explicit_values():
    # weight (10, 3, 3, 2): fan_in = 3*3*2 = 18, fan_out = 10*3*2 = 60
    kw = dict(in_channels=6, out_channels=10, kernel_size=(3, 2), groups=2)
    assert PWSConv2d(**kw, gamma=0.3, gamma_mode="raw", fan="fan_in").gamma_eff == pytest.approx(0.3, rel=1e-15)
    assert PWSConv2d(**kw, gamma=0.3, gamma_mode="raw", fan="fan_out").gamma_eff == pytest.approx(0.3, rel=1e-15)
    assert PWSConv2d(**kw, gamma=0.3, gamma_mode="equiv", fan="fan_in").gamma_eff == pytest.approx(0.6 / 18,
                                                                                                rel=1e-15)
    assert PWSConv2d(**kw, gamma=0.3, gamma_mode="equiv", fan="fan_out").gamma_eff == pytest.approx(0.6 / 60,
                                                                                                 rel=1e-15)
    m = PWSConv2d(**kw, gamma=0.3, gamma_mode="equiv", fan="fan_out")
    assert m.gain == pytest.approx(math.sqrt(2 / 60), rel=1e-15)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(gamma_mode="bogus"), "'bogus'"),
    (dict(gamma_mode="RAW"), "'RAW'"),
    (dict(fan="fan_avg"), "'fan_avg'"),
    (dict(gamma=-0.5), "-0.5"),
    (dict(gamma=float("nan")), "nan"),
])
def test_bad_arguments_raise_value_error_naming_the_value(kwargs, needle):
    with pytest.raises(ValueError) as info:
        PWSConv2d(4, 4, 3, **kwargs)
    assert needle in str(info.value)
