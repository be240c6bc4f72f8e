"""Weight Normalization (Salimans & Kingma, 2016) of conv filters."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .reparam import (ReparamConv1d, ReparamConv2d, ReparamConv3d, ReparamConvNd, ReparamConvTranspose1d,
                      ReparamConvTranspose2d, ReparamConvTranspose3d)

__all__ = ["WNConvNd", "WNConv1d", "WNConv2d", "WNConv3d", "WNConvTranspose1d", "WNConvTranspose2d",
           "WNConvTranspose3d"]


class WNConvNd(ReparamConvNd):
    """A conv with kernel_i = g_i * v_i / max(||v_i||, eps), ||.|| the L2 norm over (C_in/groups, *k)
    of output filter i (``filters``; for a transposed conv, the weights that feed output channel i).

    v (``weight``) is Kaiming-normal (fan_in) and g (shape (C_out, 1, ..., 1)) starts at ||v_i||, so the
    kernel starts equal to the Kaiming weight. The eps floor keeps v = 0 finite (PyTorch's
    ``weight_norm`` has none and returns NaN there). WN fixes each filter's norm, not its sum, so
    transposed convs of any stride are allowed.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, *, eps: float = 1e-12, **conv_options) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         **conv_options)
        self.eps = float(eps)
        self.g = nn.Parameter(self._norm().detach().clone())

    def reset_parameters(self) -> None:
        """v Kaiming-normal (fan_in), bias zero, and g = ||v_i|| (once g exists: the torch conv's
        ``__init__`` calls this before it is made)."""
        super().reset_parameters()
        if "g" in self._parameters:
            with torch.no_grad():
                self.g.copy_(self._norm())

    def _norm(self) -> Tensor:
        v = self.filters(self.weight)
        return torch.linalg.vector_norm(v, dim=tuple(range(1, v.dim())), keepdim=True)

    def kernel(self) -> Tensor:
        return self.unfilters(self.filters(self.weight) * (self.g / self._norm().clamp_min(self.eps)))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eps={self.eps}"


class WNConv1d(WNConvNd, ReparamConv1d):
    """``WNConvNd`` as an ``nn.Conv1d``."""


class WNConv2d(WNConvNd, ReparamConv2d):
    """``WNConvNd`` as an ``nn.Conv2d``: a Conv2d with weight-normalized filters."""


class WNConv3d(WNConvNd, ReparamConv3d):
    """``WNConvNd`` as an ``nn.Conv3d``."""


class WNConvTranspose1d(WNConvNd, ReparamConvTranspose1d):
    """``WNConvNd`` as an ``nn.ConvTranspose1d``."""


class WNConvTranspose2d(WNConvNd, ReparamConvTranspose2d):
    """``WNConvNd`` as an ``nn.ConvTranspose2d``."""


class WNConvTranspose3d(WNConvNd, ReparamConvTranspose3d):
    """``WNConvNd`` as an ``nn.ConvTranspose3d``."""
