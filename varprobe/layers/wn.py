"""Weight Normalization (Salimans & Kingma, 2016) of conv filters."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .reparam import ReparamConv2d

__all__ = ["WNConv2d"]


class WNConv2d(ReparamConv2d):
    """Conv2d with kernel_i = g_i * v_i / max(||v_i||, eps), ||.|| the L2 norm over (C_in/groups, kh, kw).

    v (``weight``) is Kaiming-normal (fan_in) and g (shape (C_out, 1, 1, 1)) starts at ||v_i||, so the
    kernel starts equal to the Kaiming weight. The eps floor keeps v = 0 finite (PyTorch's
    ``weight_norm`` has none and returns NaN there). WN fixes each filter's norm, not its sum.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, *, eps: float = 1e-12) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        self.eps = float(eps)
        self.g = nn.Parameter(self._norm().detach().clone())

    def reset_parameters(self) -> None:
        """v Kaiming-normal (fan_in), bias zero, and g = ||v_i|| (once g exists: ``nn.Conv2d.__init__``
        calls this before it is made)."""
        super().reset_parameters()
        if "g" in self._parameters:
            with torch.no_grad():
                self.g.copy_(self._norm())

    def _norm(self) -> Tensor:
        return torch.linalg.vector_norm(self.weight, dim=(1, 2, 3), keepdim=True)

    def kernel(self) -> Tensor:
        return self.weight * (self.g / self._norm().clamp_min(self.eps))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eps={self.eps}"
