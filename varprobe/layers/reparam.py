"""Base class for convolutions whose weight is a function of raw parameters."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..probe.layouts import raw_parameter, register_layout

__all__ = ["ReparamConv2d", "conv_fan", "kaiming_normal_", "raw_weight"]


class ReparamConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` whose effective weight is ``kernel()``, a pure function of its parameters.

    Subclasses implement ``kernel()`` and initialise their parameters in ``reset_parameters()``
    (which ``nn.Conv2d.__init__`` calls), so ``module.reset_parameters()`` re-initialises them.
    In training mode the kernel is recomputed on every forward, with autograd; in eval mode on every
    forward too, under ``no_grad`` (no autograd path to the raw parameters), so it is never stale:
    not after an optimizer step (fused optimizers included, which bump no version counter), an
    in-place or ``.data`` write, ``load_state_dict``, ``.to()`` or a change of mode. There is no
    kernel cache (the official PWS code fills one at ``.eval()`` and never refreshes it; a correct
    one needs a process-wide optimizer hook): computing the kernel is O(parameters), about 10% of
    a ResNet-20 eval forward at batch 16 to 128 and 40% at batch 1, and
    ``varprobe.layers.reparameterize`` turns a trained net into plain convs for deployment, as
    fast as any cache (``benchmarks/RESULTS.md``, "Eval kernel").
    """

    def kernel(self) -> Tensor:
        """Effective weight, shape (out_channels, in_channels // groups, kh, kw)."""
        raise NotImplementedError

    @property
    def fan_in(self) -> int:
        """(in_channels / groups) * kh * kw: the number of inputs of one filter."""
        return self.weight[0].numel()

    def reset_parameters(self) -> None:
        """``nn.Conv2d``'s draws (kept: a seeded model is bit-identical to one built before this
        method existed), then the scheme's own: weight Kaiming-normal on fan_in, bias zero.
        Subclasses with other parameters or another fan extend it."""
        super().reset_parameters()
        kaiming_normal_(self.weight, conv_fan(self.weight, "fan_in"))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def eval_kernel(self) -> Tensor:
        """``kernel()`` computed under ``no_grad``: the eval-mode weight, shape as :meth:`kernel`."""
        with torch.no_grad():
            return self.kernel()

    def forward(self, x: Tensor) -> Tensor:
        weight = self.kernel() if self.training else self.eval_kernel()
        return self._conv_forward(x, weight, self.bias)

    def to_conv2d(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` with the same geometry whose weight is ``kernel()``, detached."""
        conv = nn.Conv2d(
            self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
            self.dilation, self.groups, self.bias is not None, self.padding_mode,
            device=self.weight.device, dtype=self.weight.dtype,
        )
        with torch.no_grad():
            conv.weight.copy_(self.kernel())
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv


def kaiming_normal_(weight: Tensor, fan: int) -> Tensor:
    """In-place N(0, 2 / fan): He et al. (2015) for ReLU networks."""
    with torch.no_grad():
        return weight.normal_(0.0, (2.0 / fan) ** 0.5)


def conv_fan(weight: Tensor, mode: str) -> int:
    """fan_in = (C_in / groups) * kh * kw, fan_out = C_out * kh * kw, of a conv weight (O, I/g, kh, kw)."""
    if mode == "fan_in":
        return weight[0].numel()
    if mode == "fan_out":
        return weight.shape[0] * weight[0, 0].numel()
    raise ValueError(f"fan must be 'fan_in' or 'fan_out', got {mode!r}")



def raw_weight(m: nn.Module) -> Tensor:
    """The weight tensor the optimizer updates for a conv or linear layer ``m``: its ``weight``
    (for a ``ReparamConv2d``, the raw V that ``kernel()`` reparametrizes); under a torch
    parametrization, the original of the kernel's shape (``v`` of ``weight_norm``); for the
    legacy ``torch.nn.utils.weight_norm``, ``weight_v`` (``varprobe.probe.layouts.raw_parameter``)."""
    return raw_parameter(m, "weight")


# What a probe records of a reparametrized conv: its raw weight V (``weight``, filters on axis 0)
# and its effective kernel, as for any user layer (varprobe.register_layout).
register_layout(ReparamConv2d, "conv", kernel=lambda m: m.kernel())
