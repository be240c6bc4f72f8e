"""make_conv: one ConvNorm per scheme, with the documented conv and norm types."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from varprobe.layers import SCHEMES, CenteredConv2d, ConvNorm, PWSConv2d, WNConv2d, WSConv2d, make_conv

# scheme -> (exact conv type, has bias, exact norm type)
EXPECTED = {
    "plain": (nn.Conv2d, True, nn.Identity),
    "plain+gn": (nn.Conv2d, True, nn.Identity),  # differs from plain in the models' norm layout only
    "bn": (nn.Conv2d, False, nn.BatchNorm2d),
    "gn": (nn.Conv2d, False, nn.GroupNorm),
    "ws": (WSConv2d, False, nn.GroupNorm),
    "wn": (WNConv2d, True, nn.Identity),
    "pws": (PWSConv2d, True, nn.Identity),
    "centered": (CenteredConv2d, True, nn.Identity),
}


def test_schemes_are_the_documented_ones():
    assert set(SCHEMES) == set(EXPECTED) and len(SCHEMES) == len(EXPECTED)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_types_bias_and_geometry(scheme):
    conv_t, has_bias, norm_t = EXPECTED[scheme]
    cn = make_conv(scheme, 8, 16, 3, stride=2, padding=1, dilation=2, groups=2, gn_groups=4)
    assert isinstance(cn, ConvNorm) and isinstance(cn, nn.Sequential)
    assert [n for n, _ in cn.named_children()] == ["conv", "norm"]
    assert type(cn.conv) is conv_t
    assert type(cn.norm) is norm_t
    assert (cn.conv.bias is not None) is has_bias
    c = cn.conv
    assert (c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation, c.groups) == \
        (8, 16, (3, 3), (2, 2), (1, 1), (2, 2), 2)
    if norm_t is nn.GroupNorm:
        assert cn.norm.num_groups == 4 and cn.norm.num_channels == 16
    if norm_t is nn.BatchNorm2d:
        assert cn.norm.num_features == 16
    # the pair computes norm(conv(x))
    x = torch.randn(2, 8, 9, 9)
    cn.eval()
    torch.testing.assert_close(cn(x), cn.norm(cn.conv(x)), rtol=0, atol=0)


def test_gn_groups_default_is_8():
    assert make_conv("gn", 4, 16, 3).norm.num_groups == 8
    assert make_conv("ws", 4, 16, 3).norm.num_groups == 8


@pytest.mark.parametrize("scheme", ["plain", "bn", "gn"])
@pytest.mark.parametrize("groups", [1, 4])
def test_plain_conv_weight_is_kaiming_fan_in_and_bias_zero(scheme, groups):
    """Var = 2 / fan_in with fan_in = (C_in/groups)*k*k. Tolerance fixed in advance: N = 512*64*9/groups
    >= 73728, the sample variance's relative sd <= 0.52%; allow 3%. Mean within 5 sd of 0."""
    torch.manual_seed(0)
    conv = make_conv(scheme, 64, 512, 3, groups=groups).conv
    fan_in = (64 // groups) * 9
    w = conv.weight.detach().double().numpy().ravel()
    mean = w.sum() / w.size
    var = ((w - mean) ** 2).sum() / w.size
    assert abs(var / (2.0 / fan_in) - 1) < 0.03, (var, 2.0 / fan_in)
    assert abs(mean) < 5 * math.sqrt(2.0 / fan_in / w.size)
    if conv.bias is not None:
        assert torch.equal(conv.bias, torch.zeros(512))
    # torch's default init (kaiming_uniform with a=sqrt(5)) has variance 1/(3 fan_in): clearly excluded
    assert abs(var / (1.0 / (3 * fan_in)) - 1) > 0.5


def test_unknown_scheme_lists_the_valid_ones():
    with pytest.raises(ValueError) as info:
        make_conv("layernorm", 4, 4, 3)
    msg = str(info.value)
    assert "layernorm" in msg
    for s in SCHEMES:
        assert s in msg


@pytest.mark.parametrize("scheme,option", [
    ("plain", dict(gamma=1e-3)), ("bn", dict(eps=1e-5)), ("gn", dict(fan="fan_in")),
    ("centered", dict(gamma=1e-3)), ("wn", dict(gamma=1e-3)), ("ws", dict(data_init=False)),
    ("pws", dict(eps=1e-6)), ("pws", dict(bias=False)), ("plain", dict(padding_mode="reflect")),
])
def test_option_not_valid_for_scheme(scheme, option):
    with pytest.raises(ValueError) as info:
        make_conv(scheme, 4, 8, 3, **option)
    assert next(iter(option)) in str(info.value)
    assert scheme in str(info.value)


def test_pws_options_reach_the_conv():
    c = make_conv("pws", 4, 8, 3, gamma=0.25, gamma_mode="equiv", fan="fan_out", data_init=False).conv
    assert isinstance(c, PWSConv2d)
    assert c.gamma == 0.25 and c.gamma_mode == "equiv" and c.fan == "fan_out" and c.data_init is False
    assert c.gamma_eff == pytest.approx(0.25 * 2 / (8 * 9), rel=1e-15)
    # and they act on the kernel: fan_out gain with gamma' = 0.5/72
    V = c.weight.detach().double().numpy().reshape(8, -1)
    dev = V - V.mean(axis=1, keepdims=True)
    ref = math.sqrt(2 / 72) * dev / np.sqrt((dev ** 2).mean(axis=1, keepdims=True) + 0.5 / 72)
    np.testing.assert_allclose(c.kernel().detach().double().numpy().reshape(8, -1), ref, rtol=1e-5,
                               atol=1e-6)
    # bad values are still rejected by the conv itself
    with pytest.raises(ValueError):
        make_conv("pws", 4, 8, 3, gamma_mode="nope")


def test_pws_defaults_through_the_factory():
    c = make_conv("pws", 4, 8, 3).conv
    d = PWSConv2d(4, 8, 3)
    assert (c.gamma, c.gamma_mode, c.fan, c.data_init) == (d.gamma, d.gamma_mode, d.fan, d.data_init)


@pytest.mark.parametrize("scheme,cls", [("ws", WSConv2d), ("wn", WNConv2d)])
def test_eps_reaches_ws_and_wn(scheme, cls):
    c = make_conv(scheme, 4, 8, 3, eps=0.125).conv
    assert type(c) is cls and c.eps == 0.125
