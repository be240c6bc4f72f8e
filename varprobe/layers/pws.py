"""Parametric Weights Standardization (Liu et al., AAAI 2021; github.com/lyxzzz/PWSConv)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

from .reparam import (ReparamConv1d, ReparamConv2d, ReparamConv3d, ReparamConvNd, ReparamConvTranspose1d,
                      ReparamConvTranspose2d, ReparamConvTranspose3d, conv_fan, kaiming_normal_)

__all__ = ["PWSConvNd", "PWSConv1d", "PWSConv2d", "PWSConv3d", "PWSConvTranspose1d", "PWSConvTranspose2d",
           "PWSConvTranspose3d"]

GAMMA_MODES = ("raw", "equiv")


class PWSConvNd(ReparamConvNd):
    """A conv with a parametric weight-standardized kernel (any dimensionality; the per-dimension
    classes ``PWSConv1d`` ... ``PWSConvTranspose3d`` are the ones to build).

    For each output filter i, with V_i the raw weight of output unit i (shape (C_in/groups, *k); for
    a transposed conv, the slice of ``weight`` that feeds output channel i, ``filters``):

        kernel_i = sqrt(2 / fan) * alpha_i * (V_i - mean(V_i)) / sqrt(var(V_i) + gamma')

    mean and *biased* variance over (C_in/groups, *k); fan = (C_in/groups)*prod(k) ("fan_in") or
    C_out*prod(k) ("fan_out"); gamma' = gamma ("raw") or gamma * 2 / fan ("equiv"). Hence every filter
    of the kernel sums to zero and fan * Var(kernel_i) = 2 alpha_i^2 s_i^2 / (s_i^2 + gamma'), s_i^2 =
    var(V_i). The raw weight's per-filter average gradient is exactly zero. A transposed PWS conv
    must have stride 1 (``ReparamConvNd.refusal``).

    Parameters: ``weight`` (V, Kaiming-normal on ``fan``), ``alpha`` (C_out, 1, ..., 1) initialised
    to 1 (the authors exclude it from weight decay), ``bias`` initialised to 0.

    ``data_init`` marks the convs whose alpha ``init_alpha`` sets from data (the authors'
    ``initalpha``: stem, first conv of each residual branch, downsample).
    """

    centres_filters = True

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
        groups: int = 1, bias: bool = True, *, gamma: float = 1e-3, gamma_mode: str = "raw",
        fan: str = "fan_in", data_init: bool = True, **conv_options,
    ) -> None:
        if gamma_mode not in GAMMA_MODES:
            raise ValueError(f"gamma_mode must be one of {GAMMA_MODES}, got {gamma_mode!r}")
        if not gamma >= 0.0:
            raise ValueError(f"gamma must be >= 0, got {gamma!r}")
        # plain attributes, set before the torch conv's __init__ calls reset_parameters, which needs the fan
        self.fan = fan
        self.gamma, self.gamma_mode, self.data_init = float(gamma), gamma_mode, data_init
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         **conv_options)
        self.alpha = nn.Parameter(torch.ones(out_channels, *(1,) * (self.weight.dim() - 1)))

    def reset_parameters(self) -> None:
        """V Kaiming-normal on ``fan``, bias zero, alpha 1 (once alpha exists: the torch conv's
        ``__init__`` calls this before it is made)."""
        _ConvNd.reset_parameters(self)  # its draws, as ReparamConvNd's; then V on this conv's fan
        self.fan_value = conv_fan(self.filters(self.weight), self.fan)
        kaiming_normal_(self.weight, self.fan_value)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        if "alpha" in self._parameters:
            with torch.no_grad():
                self.alpha.fill_(1.0)

    @property
    def gamma_eff(self) -> float:
        """gamma' added to the per-filter variance: gamma, or gamma * 2 / fan in "equiv" mode."""
        return self.gamma * 2.0 / self.fan_value if self.gamma_mode == "equiv" else self.gamma

    @property
    def gain(self) -> float:
        """The He constant sqrt(2 / fan)."""
        return (2.0 / self.fan_value) ** 0.5

    def kernel(self) -> Tensor:
        # layer_norm over (C_in/groups, *k) = centre, divide by sqrt(biased var + eps): one fused op.
        v = self.filters(self.weight)
        std = F.layer_norm(v, v.shape[1:], eps=self.gamma_eff)
        return self.unfilters(std * (self.alpha * self.gain))

    def shrink(self) -> Tensor:
        """Per-filter sqrt(s^2 / (s^2 + gamma')), shape (C_out,): how much gamma' shrinks the kernel."""
        s2 = self.filters(self.weight.detach()).flatten(1).var(dim=1, unbiased=False)
        return torch.sqrt(s2 / (s2 + self.gamma_eff))

    def kernel_stats(self) -> dict[str, Tensor]:
        """PWS-specific statistics a probe records with the kernel's (``k.<name>``), float64 0-d:
        ``alpha_mean`` = mean_i alpha_i and ``shrink`` = mean_i of :meth:`shrink`."""
        with torch.no_grad():
            return {"alpha_mean": self.alpha.detach().to(torch.float64).mean(),
                    "shrink": self.shrink().to(torch.float64).mean()}

    @torch.no_grad()
    def init_from_batch(self, x: Tensor) -> Tensor:
        """Set every alpha_i to sqrt(2 / Var(y)), y = this conv (alpha = 1, no bias) applied to ``x``.

        Var is the biased variance over all elements of y (batch, channels, positions), one scalar
        for the layer, as in the authors' ``initalpha``. With zero bias (the initialisation) the
        output variance on ``x`` is then exactly 2. Returns the new alpha value (a 0-d tensor).
        """
        self.alpha.fill_(1.0)
        y = self.conv_with(x, self.kernel(), None)
        var = y.double().var(unbiased=False)
        if not (torch.isfinite(var) and var > 0):
            raise ValueError(f"cannot set alpha from a batch whose output variance is {var.item()!r}")
        value = torch.sqrt(2.0 / var).to(self.alpha.dtype)
        self.alpha.fill_(value)
        return value

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, gamma={self.gamma}, gamma_mode={self.gamma_mode!r}, "
                f"fan={self.fan!r}, data_init={self.data_init}")


class PWSConv1d(PWSConvNd, ReparamConv1d):
    """``PWSConvNd`` as an ``nn.Conv1d``."""


class PWSConv2d(PWSConvNd, ReparamConv2d):
    """``PWSConvNd`` as an ``nn.Conv2d``: a Conv2d with a parametric weight-standardized kernel."""


class PWSConv3d(PWSConvNd, ReparamConv3d):
    """``PWSConvNd`` as an ``nn.Conv3d``."""


class PWSConvTranspose1d(PWSConvNd, ReparamConvTranspose1d):
    """``PWSConvNd`` as an ``nn.ConvTranspose1d`` (stride 1 only)."""


class PWSConvTranspose2d(PWSConvNd, ReparamConvTranspose2d):
    """``PWSConvNd`` as an ``nn.ConvTranspose2d`` (stride 1 only)."""


class PWSConvTranspose3d(PWSConvNd, ReparamConvTranspose3d):
    """``PWSConvNd`` as an ``nn.ConvTranspose3d`` (stride 1 only)."""
