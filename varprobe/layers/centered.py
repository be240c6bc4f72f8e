"""Centered conv: filter-mean subtraction alone, to isolate the effect of removing the shift."""
from __future__ import annotations

from torch import Tensor

from .reparam import (ReparamConv1d, ReparamConv2d, ReparamConv3d, ReparamConvNd, ReparamConvTranspose1d,
                      ReparamConvTranspose2d, ReparamConvTranspose3d)

__all__ = ["CenteredConvNd", "CenteredConv1d", "CenteredConv2d", "CenteredConv3d", "CenteredConvTranspose1d",
           "CenteredConvTranspose2d", "CenteredConvTranspose3d"]


class CenteredConvNd(ReparamConvNd):
    """A conv with kernel_i = V_i - mean(V_i), mean over (C_in/groups, *k) (``filters``); no rescaling.

    Every filter of the kernel sums to zero, so the filter-sum ("shift") term of the output second
    moment vanishes, but nothing fixes the scale. V is Kaiming-normal (fan_in), the bias zero
    (``ReparamConvNd.reset_parameters``). Transposed: stride 1 only.
    """

    centres_filters = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, **conv_options) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         **conv_options)

    def kernel(self) -> Tensor:
        v = self.filters(self.weight)
        return self.unfilters(v - v.mean(dim=tuple(range(1, v.dim())), keepdim=True))


class CenteredConv1d(CenteredConvNd, ReparamConv1d):
    """``CenteredConvNd`` as an ``nn.Conv1d``."""


class CenteredConv2d(CenteredConvNd, ReparamConv2d):
    """``CenteredConvNd`` as an ``nn.Conv2d``: kernel_i = V_i - mean(V_i), no rescaling."""


class CenteredConv3d(CenteredConvNd, ReparamConv3d):
    """``CenteredConvNd`` as an ``nn.Conv3d``."""


class CenteredConvTranspose1d(CenteredConvNd, ReparamConvTranspose1d):
    """``CenteredConvNd`` as an ``nn.ConvTranspose1d`` (stride 1 only)."""


class CenteredConvTranspose2d(CenteredConvNd, ReparamConvTranspose2d):
    """``CenteredConvNd`` as an ``nn.ConvTranspose2d`` (stride 1 only)."""


class CenteredConvTranspose3d(CenteredConvNd, ReparamConvTranspose3d):
    """``CenteredConvNd`` as an ``nn.ConvTranspose3d`` (stride 1 only)."""
