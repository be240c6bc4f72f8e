"""kernel() and forward of every reparametrized conv against float64 references written from the formulas.

The references below use numpy only (mean and biased variance written out, an explicit convolution),
never the layers' own helpers; the forward is also checked against F.conv2d in float64.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from varprobe.layers import CenteredConv2d, PWSConv2d, WNConv2d, WSConv2d

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------------------------
# float64 references
# ----------------------------------------------------------------------------------------------
def filter_mean_var(V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-filter mean and *biased* variance over (C_in/groups, kh, kw), written out."""
    flat = np.asarray(V, dtype=np.float64).reshape(V.shape[0], -1)
    n = flat.shape[1]
    mean = flat.sum(axis=1) / n
    var = ((flat - mean[:, None]) ** 2).sum(axis=1) / n
    return mean, var


def ref_fan(shape: tuple[int, ...], mode: str) -> int:
    O, I, kh, kw = shape
    return {"fan_in": I * kh * kw, "fan_out": O * kh * kw}[mode]


def ref_pws_kernel(V, alpha, gamma, gamma_mode, fan_mode) -> np.ndarray:
    V = np.asarray(V, dtype=np.float64)
    fan = ref_fan(V.shape, fan_mode)
    g = gamma if gamma_mode == "raw" else gamma * 2.0 / fan
    mean, var = filter_mean_var(V)
    a = np.asarray(alpha, dtype=np.float64).reshape(-1)
    dev = V - mean[:, None, None, None]
    return np.sqrt(2.0 / fan) * a[:, None, None, None] * dev / np.sqrt(var + g)[:, None, None, None]


def ref_ws_kernel(V, eps) -> np.ndarray:
    V = np.asarray(V, dtype=np.float64)
    mean, var = filter_mean_var(V)
    return (V - mean[:, None, None, None]) / np.sqrt(var + eps)[:, None, None, None]


def ref_wn_kernel(V, g, eps) -> np.ndarray:
    V = np.asarray(V, dtype=np.float64)
    norm = np.sqrt((V.reshape(V.shape[0], -1) ** 2).sum(axis=1))
    return np.asarray(g, dtype=np.float64).reshape(-1, 1, 1, 1) * V / np.maximum(norm, eps)[:, None, None, None]


def ref_centered_kernel(V) -> np.ndarray:
    V = np.asarray(V, dtype=np.float64)
    mean, _ = filter_mean_var(V)
    return V - mean[:, None, None, None]


def np_conv2d(x, w, b, stride, padding, dilation, groups) -> np.ndarray:
    """Explicit cross-correlation, float64 (zero padding)."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    N, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    Og = O // groups
    out = np.zeros((N, O, Ho, Wo))
    for g in range(groups):
        xs = xp[:, g * Cg:(g + 1) * Cg]
        ws = w[g * Og:(g + 1) * Og]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dh: i * dh + sh * (Ho - 1) + 1: sh, j * dw: j * dw + sw * (Wo - 1) + 1: sw]
                out[:, g * Og:(g + 1) * Og] += np.einsum("ncyx,oc->noyx", patch, ws[:, :, i, j])
    if b is not None:
        out += np.asarray(b, dtype=np.float64)[None, :, None, None]
    return out


# ----------------------------------------------------------------------------------------------
# geometry sweep
# ----------------------------------------------------------------------------------------------
@st.composite
def geometries(draw):
    groups = draw(st.integers(1, 4))
    depthwise = draw(st.booleans())
    cin_g = 1 if depthwise else draw(st.integers(1, 3))
    cout_g = draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    min_h = max(1, dilation[0] * (kh - 1) + 1 - 2 * padding[0])
    min_w = max(1, dilation[1] * (kw - 1) + 1 - 2 * padding[1])
    H = draw(st.integers(min_h, min_h + 4))
    W = draw(st.integers(min_w, min_w + 4))
    return dict(in_channels=groups * cin_g, out_channels=groups * cout_g, kernel_size=(kh, kw),
                stride=stride, padding=padding, dilation=dilation, groups=groups,
                H=H, W=W, N=draw(st.integers(1, 2)), seed=draw(st.integers(0, 2**31 - 1)))


def _build(cls, geo, **kw):
    args = {k: geo[k] for k in ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                                "dilation", "groups")}
    return cls(**args, **kw)


def _random_weight(rng, shape) -> np.ndarray:
    """Per-filter scale spanning 1e-3..1 (so gamma matters for some filters) and a filter-mean offset."""
    O = shape[0]
    scale = 10.0 ** rng.uniform(-3, 0, size=(O, 1, 1, 1))
    offset = scale * rng.uniform(-3, 3, size=(O, 1, 1, 1))
    return (offset + scale * rng.standard_normal(shape)).astype(np.float32)


def _set(param: torch.nn.Parameter, value: np.ndarray) -> None:
    with torch.no_grad():
        param.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))


def centering_scale(V, factor) -> np.ndarray:
    """Float32 error scale of a per-filter centred kernel: subtracting the mean in float32 loses
    ~eps * max|V_i| absolutely, which ``factor`` (per filter) then multiplies. (For a filter whose
    spread is tiny next to its values, e.g. two nearly equal weights, the relative error of the
    centred result is large; that is float32 conditioning, not a formula error.)"""
    V = np.asarray(V, dtype=np.float64)
    return np.abs(V).reshape(V.shape[0], -1).max(axis=1).reshape(-1, 1, 1, 1) * np.abs(factor).reshape(-1, 1, 1, 1)


def _assert_kernel_close(kernel: torch.Tensor, ref: np.ndarray, err_scale: np.ndarray) -> None:
    """|k - ref| <= 1e-5 |ref| + 2e-6 * err_scale (about 16 float32 eps of the conditioning scale)."""
    assert tuple(kernel.shape) == ref.shape
    k = kernel.detach().double().numpy()
    bound = 1e-5 * np.abs(ref) + 2e-6 * np.broadcast_to(err_scale, ref.shape) + 1e-30
    bad = np.abs(k - ref) > bound
    assert not bad.any(), (np.argwhere(bad)[:5], k[bad][:5], ref[bad][:5])


def _check_forward(m, geo, rng, kernel_ref: np.ndarray, err_scale: np.ndarray) -> None:
    """Forward (train and eval) against the explicit numpy conv and F.conv2d in float64."""
    x = rng.standard_normal((geo["N"], geo["in_channels"], geo["H"], geo["W"])).astype(np.float32)
    b = None if m.bias is None else m.bias.detach().double().numpy()
    geom = (tuple(geo["stride"]), tuple(geo["padding"]), tuple(geo["dilation"]), geo["groups"])
    ref = np_conv2d(x, kernel_ref, b, *geom)
    ref_f = F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(kernel_ref),
                     None if b is None else torch.from_numpy(b), *geom).numpy()
    np.testing.assert_allclose(ref_f, ref, rtol=1e-10, atol=1e-12)  # the two references agree
    # error scale: the same sum taken over absolute values (kernel error scale included)
    kabs = np.abs(kernel_ref) + np.broadcast_to(err_scale, kernel_ref.shape)
    scale = np_conv2d(np.abs(x), kabs, None if b is None else np.abs(b), *geom).max()
    for mode in (True, False):
        m.train(mode)
        with torch.no_grad():
            y = m(torch.from_numpy(x)).double().numpy()
        assert y.shape == ref.shape
        np.testing.assert_allclose(y, ref, rtol=0, atol=2e-5 * max(scale, 1e-30))


# ----------------------------------------------------------------------------------------------
# the sweeps
# ----------------------------------------------------------------------------------------------
@SETTINGS
@given(geo=geometries(), fan=st.sampled_from(["fan_in", "fan_out"]),
       gamma_mode=st.sampled_from(["raw", "equiv"]), gamma=st.sampled_from([0.0, 1e-5, 1e-3, 0.1, 1.0]))
def test_pws_kernel_and_forward_match_formula(geo, fan, gamma_mode, gamma):
    rng = np.random.default_rng(geo["seed"])
    m = _build(PWSConv2d, geo, gamma=gamma, gamma_mode=gamma_mode, fan=fan)
    V = _random_weight(rng, tuple(m.weight.shape))
    # gamma = 0 on a single-element filter is 0/0 (undefined by the formula itself)
    assume(gamma > 0 or V[0].size > 1)
    alpha = rng.uniform(-2, 2, size=(m.out_channels, 1, 1, 1)).astype(np.float32)
    bias = rng.standard_normal(m.out_channels).astype(np.float32)
    _set(m.weight, V)
    _set(m.alpha, alpha)
    _set(m.bias, bias)
    ref = ref_pws_kernel(V, alpha, gamma, gamma_mode, fan)
    fan_v = ref_fan(V.shape, fan)
    _, var = filter_mean_var(V)
    g = gamma if gamma_mode == "raw" else gamma * 2.0 / fan_v
    err = centering_scale(V, np.sqrt(2.0 / fan_v) * alpha.reshape(-1) / np.sqrt(var + g))
    _assert_kernel_close(m.kernel(), ref, err)
    _check_forward(m, geo, rng, ref, err)


@SETTINGS
@given(geo=geometries(), eps=st.sampled_from([1e-6, 1e-3, 0.1]), bias=st.booleans())
def test_ws_kernel_and_forward_match_formula(geo, eps, bias):
    rng = np.random.default_rng(geo["seed"])
    m = _build(WSConv2d, geo, eps=eps, bias=bias)
    V = _random_weight(rng, tuple(m.weight.shape))
    _set(m.weight, V)
    if bias:
        _set(m.bias, rng.standard_normal(m.out_channels))
    ref = ref_ws_kernel(V, eps)
    _, var = filter_mean_var(V)
    err = centering_scale(V, 1.0 / np.sqrt(var + eps))
    _assert_kernel_close(m.kernel(), ref, err)
    _check_forward(m, geo, rng, ref, err)


@SETTINGS
@given(geo=geometries())
def test_wn_kernel_and_forward_match_formula(geo):
    rng = np.random.default_rng(geo["seed"])
    m = _build(WNConv2d, geo)
    V = _random_weight(rng, tuple(m.weight.shape))
    g = rng.uniform(-2, 2, size=(m.out_channels, 1, 1, 1)).astype(np.float32)
    _set(m.weight, V)
    _set(m.g, g)
    _set(m.bias, rng.standard_normal(m.out_channels))
    ref = ref_wn_kernel(V, g, m.eps)
    err = np.abs(ref).reshape(ref.shape[0], -1).max(axis=1).reshape(-1, 1, 1, 1)  # no cancellation
    _assert_kernel_close(m.kernel(), ref, err)
    _check_forward(m, geo, rng, ref, err)


@SETTINGS
@given(geo=geometries())
def test_centered_kernel_and_forward_match_formula(geo):
    rng = np.random.default_rng(geo["seed"])
    m = _build(CenteredConv2d, geo)
    V = _random_weight(rng, tuple(m.weight.shape))
    _set(m.weight, V)
    _set(m.bias, rng.standard_normal(m.out_channels))
    ref = ref_centered_kernel(V)
    err = centering_scale(V, np.ones(V.shape[0]))
    _assert_kernel_close(m.kernel(), ref, err)
    _check_forward(m, geo, rng, ref, err)


def test_numpy_conv_reference_matches_torch_on_a_fixed_case():
    """The explicit conv is itself right (checked once against an independent hand computation)."""
    x = np.arange(1 * 2 * 3 * 3, dtype=np.float64).reshape(1, 2, 3, 3)
    w = np.ones((2, 1, 2, 2))  # depthwise, 2x2 box sum
    out = np_conv2d(x, w, np.array([0.5, -1.0]), (1, 1), (0, 0), (1, 1), 2)
    # channel 0: [[0,1,2],[3,4,5],[6,7,8]] -> box sums [[8,12],[20,24]]; channel 1 adds 9*4 per sum
    np.testing.assert_array_equal(out[0, 0], [[8.5, 12.5], [20.5, 24.5]])
    np.testing.assert_array_equal(out[0, 1], [[8 + 36 - 1, 12 + 36 - 1], [20 + 36 - 1, 24 + 36 - 1]])


# ----------------------------------------------------------------------------------------------
# WN specifics
# ----------------------------------------------------------------------------------------------
def test_wn_starts_equal_to_its_weight_with_g_the_filter_norm():
    torch.manual_seed(0)
    m = WNConv2d(6, 10, 3, groups=2)
    V = m.weight.detach().double().numpy()
    norms = np.sqrt((V.reshape(10, -1) ** 2).sum(axis=1))
    np.testing.assert_allclose(m.g.detach().double().numpy().reshape(-1), norms, rtol=1e-6)
    np.testing.assert_allclose(m.kernel().detach().double().numpy(), V, rtol=1e-6, atol=1e-7)


def test_wn_is_finite_at_zero_weight():
    torch.manual_seed(0)
    m = WNConv2d(3, 4, 3, padding=1)
    with torch.no_grad():
        m.weight[1].zero_()
    k = m.kernel()
    assert torch.isfinite(k).all()
    assert torch.equal(k[1], torch.zeros_like(k[1]))
    x = torch.randn(2, 3, 5, 5)
    y = m(x)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    for p in (m.weight, m.g, m.bias):
        assert torch.isfinite(p.grad).all()
    # all filters zero, eval mode too
    with torch.no_grad():
        m.weight.zero_()
    m.eval()
    assert torch.isfinite(m(x)).all()


def test_wn_filter_norm_is_abs_g():
    torch.manual_seed(1)
    m = WNConv2d(8, 6, (3, 2), groups=2)
    g = torch.tensor([2.0, -0.5, 1e-3, 3.0, -7.0, 0.0]).reshape(6, 1, 1, 1)
    with torch.no_grad():
        m.g.copy_(g)
        m.weight.mul_(torch.linspace(1e-3, 1e3, 6).reshape(6, 1, 1, 1))  # norm of v irrelevant
    k = m.kernel().detach().double().numpy().reshape(6, -1)
    np.testing.assert_allclose(np.sqrt((k ** 2).sum(axis=1)), np.abs(g.double().numpy().reshape(-1)),
                               rtol=1e-6, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Centered specifics
# ----------------------------------------------------------------------------------------------
def test_centered_filters_sum_to_zero_without_rescaling():
    torch.manual_seed(2)
    m = CenteredConv2d(12, 8, 3, groups=4)
    with torch.no_grad():
        m.weight.add_(torch.randn(8, 1, 1, 1))  # strongly non-zero filter means
    V = m.weight.detach().double().numpy()
    k = m.kernel().detach().double().numpy()
    sums = k.reshape(8, -1).sum(axis=1)
    assert np.all(np.abs(sums) <= 1e-6 * np.abs(k).reshape(8, -1).sum(axis=1))
    # no rescaling: the deviations from the filter mean are kept as they are
    _, var_v = filter_mean_var(V)
    _, var_k = filter_mean_var(k)
    np.testing.assert_allclose(var_k, var_v, rtol=1e-5)
    np.testing.assert_allclose(k, ref_centered_kernel(V), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [WSConv2d, WNConv2d, CenteredConv2d])
def test_baselines_kaiming_fan_in_init_and_zero_bias(cls):
    """V ~ N(0, 2/fan_in). Tolerances fixed in advance: N = 294912, so the sample variance has a
    relative sd of sqrt(2/N) = 0.26%; 2% is about 8 sd. The mean must be within 5 sd of 0."""
    torch.manual_seed(3)
    m = cls(64, 512, 3)
    V = m.weight.detach().double().numpy().ravel()
    N, fan_in = V.size, 64 * 9
    mean = V.sum() / N
    var = ((V - mean) ** 2).sum() / N
    assert abs(var / (2.0 / fan_in) - 1.0) < 0.02
    assert abs(mean) < 5 * np.sqrt(2.0 / fan_in / N)
    assert torch.equal(m.bias, torch.zeros(512))
