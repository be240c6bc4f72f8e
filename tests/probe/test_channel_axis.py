"""channel_axis: the channel axis of a module's output, from the module and the output's shape."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from varprobe.probe.channel_axis import channel_axis


class LayerNorm2d(nn.LayerNorm):
    """timm's LayerNorm2d: a LayerNorm over C of an NCHW tensor, no data_format attribute."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ChannelsFirst(LayerNorm2d):
    def __init__(self, c, data_format):
        super().__init__(c)
        self.data_format = data_format


def test_plain_modules_keep_the_old_axes():
    assert channel_axis(nn.Conv2d(3, 4, 3), (2, 4, 5, 5)) == 1
    assert channel_axis(nn.BatchNorm2d(4), (2, 4, 5, 5)) == 1
    assert channel_axis(nn.GroupNorm(2, 4), (2, 4, 5, 5)) == 1
    assert channel_axis(nn.Linear(3, 4), (2, 7, 4)) == -1
    assert channel_axis(nn.LayerNorm(4), (2, 4, 4)) == -1  # plain LayerNorm: trailing dims, whatever axis 1 is
    assert channel_axis(nn.LayerNorm((5, 6)), (2, 4, 5, 6)) == -1


def test_layernorm_subclass_on_nchw_is_told_from_the_shape():
    ln = LayerNorm2d(4)
    x = torch.randn(2, 4, 5, 6)
    assert ln(x).shape == x.shape  # it runs on NCHW
    assert channel_axis(ln, ln(x).shape) == 1
    assert channel_axis(ln, (2, 5, 6, 4)) == -1  # NHWC input: the last axis


def test_data_format_decides_even_when_the_shape_is_ambiguous():
    assert channel_axis(ChannelsFirst(4, "channels_first"), (2, 4, 4, 4)) == 1
    assert channel_axis(ChannelsFirst(4, "channels_last"), (2, 4, 4, 4)) == -1


def test_undeterminable_is_none():
    ln = LayerNorm2d(4)
    assert channel_axis(ln, (2, 4, 5, 4)) is None  # C == W and no data_format
    assert channel_axis(ln, (2, 3, 5, 6)) is None  # no axis of size C
    assert channel_axis(ln, (2, 3)) is None
    assert channel_axis(ln, (2, 4)) == -1


def test_transformers_convnext_layernorm():
    transformers = pytest.importorskip("transformers", reason="needs the hf extra: pip install 'varprobe[hf]'")
    from transformers.models.convnext.modeling_convnext import ConvNextLayerNorm
    first = ConvNextLayerNorm(8, data_format="channels_first")
    last = ConvNextLayerNorm(8, data_format="channels_last")
    assert channel_axis(first, first(torch.randn(2, 8, 8, 8)).shape) == 1
    assert channel_axis(last, last(torch.randn(2, 8, 8, 8)).shape) == -1
    assert transformers  # imported for the class above
