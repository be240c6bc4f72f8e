"""ResNet-34 CIFAR backbone of the official PyTorch code (ResNet_Cifar, depth 34): block counts, widths,
strides, shapes, parameter counts computed independently, norm layout per scheme, names across schemes."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.models.conftest import _batch, assert_memorises, memorise
from tests.models.test_resnet import CONV_TYPE, NORM_AFTER, NORM_TYPES, assert_basic_stages, blocks, convs, norms
from varprobe.layers import SCHEMES, ConvNorm, PWSConv2d
from varprobe.models import resnet34_cifar

W = 8  # tiny base width: widths 8, 16, 32, 64 (GroupNorm(8) needs a multiple of 8)


def test_stages_blocks_widths_strides():
    model = resnet34_cifar("bn", width=W)
    assert [len(s) for s in model.stages] == [3, 4, 6, 3]
    stem = model.stem[0].conv
    assert (stem.in_channels, stem.out_channels, stem.kernel_size, stem.stride, stem.padding) == \
        (3, W, (3, 3), (1, 1), (1, 1))
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in model.stem.modules())
    assert_basic_stages(model, W, (W, 2 * W, 4 * W, 8 * W))
    # 1 stem + 2 x 16 block convs + 3 projections (stages 2-4): 33 weight layers + the head = "34"
    assert len(convs(model)) == 1 + 2 * 16 + 3
    assert model.head.in_features == 8 * W


def test_official_widths_are_64_to_512():
    model = resnet34_cifar("pws")
    assert [s[0].branch[0].conv.out_channels for s in model.stages] == [64, 128, 256, 512]
    assert model.head.in_features == 512


@pytest.mark.parametrize("scheme", ["plain", "bn", "pws"])
def test_output_and_stage_shapes(scheme):
    torch.manual_seed(0)
    model = resnet34_cifar(scheme, num_classes=7, width=W)
    shapes = []
    for stage in model.stages:
        stage.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    out = model(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    assert shapes == [(2, W, 16, 16), (2, 2 * W, 8, 8), (2, 4 * W, 4, 4), (2, 8 * W, 2, 2)]


def _expected_params(scheme: str, w: int, classes: int = 10, in_channels: int = 3) -> int:
    """Parameter count from the layer list, written out independently of the model code."""
    def conv(c_in, c_out, k):
        n = c_out * c_in * k * k
        if scheme not in NORM_AFTER:
            n += c_out                      # bias
        if scheme in ("pws", "wn"):
            n += c_out                      # alpha / g, one per output channel
        if scheme in NORM_AFTER:
            n += 2 * c_out                  # the norm's weight and bias
        return n

    total = conv(in_channels, w, 3)
    if scheme in ("pws", "wn", "centered", "plain+gn"):
        total += 2 * w + 2 * 8 * w          # GN(1) at stem and neck
    c_in = w
    for i, n_blocks in enumerate((3, 4, 6, 3)):
        c = w * 2 ** i
        for j in range(n_blocks):
            total += conv(c_in, c, 3) + conv(c, c, 3)
            if i > 0 and j == 0:
                total += conv(c_in, c, 1)
            c_in = c
    return total + 8 * w * classes + classes


@pytest.mark.parametrize("scheme", SCHEMES)
def test_parameter_count(scheme):
    model = resnet34_cifar(scheme, width=W)
    assert sum(p.numel() for p in model.parameters()) == _expected_params(scheme, W)


def test_official_bn_parameter_count():
    """At w = 64 the BN net is the common CIFAR ResNet-34 (e.g. kuangliu/pytorch-cifar): 21,282,122."""
    model = resnet34_cifar("bn")
    assert sum(p.numel() for p in model.parameters()) == _expected_params("bn", 64) == 21_282_122


@pytest.mark.parametrize("scheme", SCHEMES)
def test_conv_types_and_norm_layout(scheme):
    model = resnet34_cifar(scheme, width=W)
    for name, conv in convs(model):
        assert type(conv) is CONV_TYPE[scheme], name
    found = norms(model)
    if scheme == "plain":
        assert found == []
    elif scheme in NORM_AFTER:  # bn.py: a norm after every conv, none in the neck, last norm zeroed
        assert len(found) == len(convs(model)) == 36
        assert type(model.neck[0]) is nn.Identity
        for b in blocks(model):
            assert torch.equal(b.branch[2].norm.weight.detach(), torch.zeros(b.branch[2].conv.out_channels))
    else:  # the PWS layout: GroupNorm(1) at stem and neck only
        assert [n for n, _ in found] == ["stem.0.norm", "neck.0"]
        assert all(type(m) is nn.GroupNorm and m.num_groups == 1 for _, m in found)
        assert [m.num_channels for _, m in found] == [W, 8 * W]
        for b in blocks(model):
            assert not any(isinstance(m, NORM_TYPES) for m in b.modules())


def test_layer_names_line_up_across_schemes():
    """Every scheme names its convs, blocks and conv weights alike, so runs compare layer by layer."""
    def layout(scheme):
        model = resnet34_cifar(scheme, width=W)
        conv_names = [n for n, _ in convs(model)]
        block_names = [n for n, m in model.named_modules() if isinstance(m, ConvNorm)]
        weights = [k for k in model.state_dict() if k.endswith("conv.weight")]
        return conv_names, block_names, weights

    reference = layout("plain")
    assert len(reference[0]) == 36 and reference[0][0] == "stem.0.conv"
    assert "stages.3.2.branch.2.conv" in reference[0] and "stages.1.0.shortcut.conv" in reference[0]
    for scheme in SCHEMES:
        assert layout(scheme) == reference, scheme


def test_pws_data_init_flags_and_options():
    model = resnet34_cifar("pws", width=W, gamma=0.1, gamma_mode="equiv", fan="fan_out")
    pws = [m for _, m in convs(model)]
    assert all(isinstance(m, PWSConv2d) and (m.gamma, m.gamma_mode, m.fan) == (0.1, "equiv", "fan_out") for m in pws)
    off = [m for m in pws if not m.data_init]
    assert off == [b.branch[2].conv for b in blocks(model)] and len(off) == 16


@pytest.mark.parametrize("scheme", SCHEMES)
def test_memorises_a_batch(scheme):
    """Every scheme trains. The plain net (16 blocks, no norm) at lr 0.05 jumps to loss ~5 and then sits
    at chance, the large-lr failure the paper is about, so it is checked at lr 0.01."""
    torch.manual_seed(0)
    model = resnet34_cifar(scheme, width=W)
    x, y = _batch((16, 3, 8, 8))
    assert_memorises(memorise(model, x, y, lr=0.01 if scheme == "plain" else 0.05))


@pytest.mark.parametrize("width", [0, -4, 2.5, True])
def test_bad_width_names_it(width):
    with pytest.raises(ValueError, match=rf"width must be a positive integer, got {width!r}"):
        resnet34_cifar("bn", width=width)


def test_unknown_scheme_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown scheme 'batchnorm'.*plain, plain\+gn, bn"):
        resnet34_cifar("batchnorm", width=W)
