"""Centered conv: filter-mean subtraction alone, to isolate the effect of removing the shift."""
from __future__ import annotations

from torch import Tensor

from .reparam import ReparamConv2d

__all__ = ["CenteredConv2d"]


class CenteredConv2d(ReparamConv2d):
    """Conv2d with kernel_i = V_i - mean(V_i), mean over (C_in/groups, kh, kw); no rescaling.

    Every filter of the kernel sums to zero, so the filter-sum ("shift") term of the output second
    moment vanishes, but nothing fixes the scale. V is Kaiming-normal (fan_in), the bias zero
    (``ReparamConv2d.reset_parameters``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)

    def kernel(self) -> Tensor:
        return self.weight - self.weight.mean(dim=(1, 2, 3), keepdim=True)
