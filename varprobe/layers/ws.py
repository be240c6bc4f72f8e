"""Weight Standardization (Qiao et al., 2019), as used in practice: followed by a GroupNorm."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .reparam import ReparamConv2d

__all__ = ["WSConv2d"]


class WSConv2d(ReparamConv2d):
    """Conv2d with a standardized kernel: kernel_i = (V_i - mean(V_i)) / sqrt(var(V_i) + eps).

    mean and biased variance over (C_in/groups, kh, kw) per output filter i. No gain: the output
    scale is meant to be fixed by the normalization layer that follows. V is Kaiming-normal (fan_in),
    the bias zero (``ReparamConv2d.reset_parameters``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, *, eps: float = 1e-6) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        self.eps = float(eps)

    def kernel(self) -> Tensor:
        return F.layer_norm(self.weight, self.weight.shape[1:], eps=self.eps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eps={self.eps}"
