"""VGG-style CIFAR net and the small digits CNN: trainability and layout under every scheme."""
from __future__ import annotations


import pytest
import torch
from torch import nn

from varprobe.layers import SCHEMES, CenteredConv2d, ConvNorm, PWSConv2d, WNConv2d, WSConv2d
from tests.models.conftest import _batch, assert_memorises, memorise
from varprobe.models import simple_cnn, vgg_cifar

NORM_TYPES = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d, nn.LocalResponseNorm)
CONV_TYPE = {"plain": nn.Conv2d, "plain+gn": nn.Conv2d, "bn": nn.Conv2d, "gn": nn.Conv2d, "ws": WSConv2d,
             "wn": WNConv2d, "pws": PWSConv2d, "centered": CenteredConv2d}
NO_NORM = ("plain", "plain+gn", "wn", "pws", "centered")


def norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, NORM_TYPES)]


def conv_layout(model: nn.Module) -> list:
    """features as a list: (C_in, C_out, k, stride, padding) per conv, "M" per max-pool."""
    out = []
    for m in model.features:
        if isinstance(m, ConvNorm):
            c = m.conv
            out.append((c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0]))
        elif isinstance(m, nn.MaxPool2d):
            out.append("M")
        else:
            assert isinstance(m, nn.ReLU), m
    return out


# ----------------------------------------------------------------------------------------------- training


@pytest.mark.parametrize("scheme", SCHEMES)
def test_vgg_memorises_a_batch(scheme):
    torch.manual_seed(0)
    model = vgg_cifar(scheme, width=8)
    x, y = _batch((16, 3, 16, 16))
    assert_memorises(memorise(model, x, y))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_simple_cnn_memorises_a_batch(scheme):
    torch.manual_seed(0)
    model = simple_cnn(scheme, width=8)
    x, y = _batch((16, 1, 8, 8))
    assert_memorises(memorise(model, x, y))


# ------------------------------------------------------------------------------------------------ layout


def test_vgg_layout_matches_docstring():
    w = 8
    model = vgg_cifar("plain", width=w)
    c3 = lambda ci, co: (ci, co, 3, 1, 1)  # noqa: E731
    assert conv_layout(model) == [
        c3(3, w), c3(w, w), c3(w, w), "M",
        c3(w, 2 * w), c3(2 * w, 2 * w), c3(2 * w, 2 * w), "M",
        (2 * w, 2 * w, 3, 1, 0),  # the valid conv
        (2 * w, 2 * w, 1, 1, 0), (2 * w, 2 * w, 1, 1, 0),
    ]
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 2 and all(p.kernel_size == 2 and p.stride == 2 for p in pools)
    # every conv is followed by a ReLU
    feats = list(model.features)
    for i, m in enumerate(feats):
        if isinstance(m, ConvNorm):
            assert isinstance(feats[i + 1], nn.ReLU)
    assert isinstance(model.head, nn.Linear) and model.head.in_features == 2 * w
    assert torch.equal(model.head.bias.detach(), torch.zeros_like(model.head.bias))
    assert model.head.weight.detach().std().item() < 0.02


def test_vgg_default_width_is_96_192():
    model = vgg_cifar("plain")
    outs = [c[1] for c in conv_layout(model) if c != "M"]
    assert outs == [96] * 3 + [192] * 6


def test_vgg_spatial_sizes():
    model = vgg_cifar("pws", width=8)
    sizes = []
    for m in model.features:
        if isinstance(m, ConvNorm):
            m.register_forward_hook(lambda mod, i, o: sizes.append(tuple(o.shape[1:])))
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert sizes == [(8, 32, 32)] * 3 + [(16, 16, 16)] * 3 + [(16, 6, 6)] * 3
    assert vgg_cifar("bn", width=8)(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_simple_cnn_layout():
    w = 8
    model = simple_cnn("plain", width=w)
    c3 = lambda ci, co: (ci, co, 3, 1, 1)  # noqa: E731
    assert conv_layout(model) == [c3(1, w), c3(w, w), "M", c3(w, 2 * w), c3(2 * w, 2 * w), "M",
                                  c3(2 * w, 2 * w)]
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    assert simple_cnn("pws", num_classes=4, in_channels=3, width=8)(torch.randn(2, 3, 8, 8)).shape == (2, 4)


@pytest.mark.parametrize("factory", [vgg_cifar, simple_cnn])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_norm_layout_per_scheme(factory, scheme):
    model = factory(scheme, width=8)
    n_convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    found = norms(model)
    for name, conv in model.named_modules():
        if isinstance(conv, nn.Conv2d):
            assert type(conv) is CONV_TYPE[scheme], name
    if scheme in NO_NORM:
        assert found == []
    else:
        norm_type = nn.BatchNorm2d if scheme == "bn" else nn.GroupNorm
        assert len(found) == n_convs
        assert all(type(m) is norm_type for m in found)
        for m in model.features:
            if isinstance(m, ConvNorm):
                assert type(m.norm) is norm_type


@pytest.mark.parametrize("factory", [vgg_cifar, simple_cnn])
def test_unknown_scheme_lists_valid_ones(factory):
    with pytest.raises(ValueError) as info:
        factory("layernorm")
    for s in SCHEMES:
        assert s in str(info.value)


@pytest.mark.parametrize("scheme", ["plain", "pws"])
def test_hooks_see_outputs_that_are_not_modified_later(scheme):
    """No in-place ReLU rewrites a conv's output after its hooks ran (full backward hooks work too)."""
    torch.manual_seed(0)
    model = vgg_cifar(scheme, width=8)
    kept = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda m, i, o, name=name: kept.__setitem__(name, (o, o.detach().clone())))
            m.register_full_backward_hook(lambda m, gi, go: None)
    model(torch.randn(2, 3, 16, 16, requires_grad=True)).sum().backward()
    assert len(kept) == 9
    for name, (o, copy) in kept.items():
        assert torch.equal(o.detach(), copy), name
        assert (copy < 0).any(), name
