"""Weight Standardization (Qiao et al., 2019), as used in practice: followed by a GroupNorm."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .reparam import (ReparamConv1d, ReparamConv2d, ReparamConv3d, ReparamConvNd, ReparamConvTranspose1d,
                      ReparamConvTranspose2d, ReparamConvTranspose3d)

__all__ = ["WSConvNd", "WSConv1d", "WSConv2d", "WSConv3d", "WSConvTranspose1d", "WSConvTranspose2d",
           "WSConvTranspose3d"]


class WSConvNd(ReparamConvNd):
    """A conv with a standardized kernel: kernel_i = (V_i - mean(V_i)) / sqrt(var(V_i) + eps).

    mean and biased variance over (C_in/groups, *k) per output filter i (``filters``). No gain: the
    output scale is meant to be fixed by the normalization layer that follows. V is Kaiming-normal
    (fan_in), the bias zero (``ReparamConvNd.reset_parameters``). Transposed: stride 1 only.
    """

    centres_filters = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, *, eps: float = 1e-6, **conv_options) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         **conv_options)
        self.eps = float(eps)

    def kernel(self) -> Tensor:
        v = self.filters(self.weight)
        return self.unfilters(F.layer_norm(v, v.shape[1:], eps=self.eps))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eps={self.eps}"


class WSConv1d(WSConvNd, ReparamConv1d):
    """``WSConvNd`` as an ``nn.Conv1d``."""


class WSConv2d(WSConvNd, ReparamConv2d):
    """``WSConvNd`` as an ``nn.Conv2d``: a Conv2d with a standardized kernel."""


class WSConv3d(WSConvNd, ReparamConv3d):
    """``WSConvNd`` as an ``nn.Conv3d``."""


class WSConvTranspose1d(WSConvNd, ReparamConvTranspose1d):
    """``WSConvNd`` as an ``nn.ConvTranspose1d`` (stride 1 only)."""


class WSConvTranspose2d(WSConvNd, ReparamConvTranspose2d):
    """``WSConvNd`` as an ``nn.ConvTranspose2d`` (stride 1 only)."""


class WSConvTranspose3d(WSConvNd, ReparamConvTranspose3d):
    """``WSConvNd`` as an ``nn.ConvTranspose3d`` (stride 1 only)."""
