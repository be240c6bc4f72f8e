"""Base classes for convolutions whose weight is a function of raw parameters, in 1, 2 and 3
dimensions, plain and transposed."""
from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

from ..layouts import raw_parameter, register_layout

__all__ = ["ReparamConvNd", "ReparamConv1d", "ReparamConv2d", "ReparamConv3d", "ReparamConvTranspose1d",
           "ReparamConvTranspose2d", "ReparamConvTranspose3d", "PLAIN_CONVS", "conv_fan", "kaiming_normal_",
           "raw_weight", "filter_major", "from_filter_major"]

#: (spatial dimensions, transposed) -> the plain torch conv of that geometry.
PLAIN_CONVS: dict[tuple[int, bool], type[_ConvNd]] = {
    (1, False): nn.Conv1d, (2, False): nn.Conv2d, (3, False): nn.Conv3d,
    (1, True): nn.ConvTranspose1d, (2, True): nn.ConvTranspose2d, (3, True): nn.ConvTranspose3d}

_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def filter_major(weight: Tensor, groups: int, transposed: bool) -> Tensor:
    """``weight`` with one row per output unit (filter): itself for a conv, (C_out, C_in/groups, *k);
    for a transposed conv, whose weight is (C_in, C_out/groups, *k), the (C_out, C_in/groups, *k)
    tensor whose row o = g * C_out/groups + j is ``weight[g*C_in/groups:(g+1)*C_in/groups, j]``, the
    weights that feed output channel o."""
    if not transposed:
        return weight
    c_in, out_g, *k = weight.shape
    grouped = weight.reshape(groups, c_in // groups, out_g, *k).transpose(1, 2)
    return grouped.reshape(groups * out_g, c_in // groups, *k)


def from_filter_major(filters: Tensor, groups: int, transposed: bool) -> Tensor:
    """The inverse of :func:`filter_major`: a filter-major tensor back in the layer's weight layout."""
    if not transposed:
        return filters
    c_out, in_g, *k = filters.shape
    grouped = filters.reshape(groups, c_out // groups, in_g, *k).transpose(1, 2)
    return grouped.reshape(groups * in_g, c_out // groups, *k)


class ReparamConvNd(_ConvNd):
    """A conv whose effective weight is ``kernel()``, a pure function of its parameters; the base of
    the per-dimension classes (``ReparamConv1d`` ... ``ReparamConvTranspose3d``), each also a
    subclass of the matching torch conv (``ReparamConv1d`` is an ``nn.Conv1d``).

    ``kernel()`` has the layout of ``weight``: (C_out, C_in/groups, *k) for a conv, (C_in,
    C_out/groups, *k) for a transposed conv. Per-filter statistics are taken over the inputs of one
    output unit, C_in/groups x *k, on :meth:`filters` (which is ``weight`` itself for a conv).

    Subclasses implement ``kernel()`` and initialise their parameters in ``reset_parameters()``
    (which the torch conv's ``__init__`` calls), so ``module.reset_parameters()`` re-initialises them.
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

    #: Whether the subclass's geometry is a transposed conv (set by the per-dimension classes).
    transposed_layout: ClassVar[bool] = False
    #: Whether ``kernel()`` removes each filter's mean (the scheme's point is then the output's shift).
    centres_filters: ClassVar[bool] = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, **conv_options) -> None:
        reason = self.refusal(stride)
        if reason is not None:
            raise ValueError(f"{type(self).__name__}: {reason}")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=bias, **conv_options)

    @classmethod
    def refusal(cls, stride) -> str | None:
        """Why this class cannot have ``stride`` (None if it can): a transposed conv with a stride > 1
        whose kernel removes each filter's mean. Each of its output positions sums only the taps of
        one stride phase of a filter, so a zero filter sum removes no shift there, and the filter's
        fan is not the number of inputs of an output position."""
        strides = (stride,) if isinstance(stride, int) else tuple(stride)
        if cls.transposed_layout and cls.centres_filters and any(s != 1 for s in strides):
            return (f"stride {stride} > 1 on a transposed conv: each output position sees one stride phase "
                    f"of a filter, so removing the filter's mean does not remove the shift of any output")
        return None

    def kernel(self) -> Tensor:
        """Effective weight, in the layout of ``weight``."""
        raise NotImplementedError

    def filters(self, weight: Tensor) -> Tensor:
        """``weight`` (or a tensor of its layout) as (C_out, C_in/groups, *k), one row per output unit."""
        return filter_major(weight, self.groups, self.transposed_layout)

    def unfilters(self, filters: Tensor) -> Tensor:
        """A (C_out, C_in/groups, *k) tensor in the layout of ``weight`` (inverse of :meth:`filters`)."""
        return from_filter_major(filters, self.groups, self.transposed_layout)

    @property
    def fan_in(self) -> int:
        """(in_channels / groups) * prod(kernel_size): the number of weights of one filter."""
        return self.in_channels // self.groups * math.prod(self.kernel_size)

    def reset_parameters(self) -> None:
        """The torch conv's draws (kept: a seeded model is bit-identical to one built before this
        method existed), then the scheme's own: weight Kaiming-normal on fan_in, bias zero.
        Subclasses with other parameters or another fan extend it."""
        super().reset_parameters()
        kaiming_normal_(self.weight, self.fan_in)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def eval_kernel(self) -> Tensor:
        """``kernel()`` computed under ``no_grad``: the eval-mode weight, shape as :meth:`kernel`."""
        with torch.no_grad():
            return self.kernel()

    def _weight_now(self) -> Tensor:
        return self.kernel() if self.training else self.eval_kernel()

    def conv_with(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """This layer's convolution of ``x`` with ``weight`` (in the layout of ``weight``) and ``bias``."""
        return self._conv_forward(x, weight, bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_with(x, self._weight_now(), self.bias)

    def to_plain(self) -> _ConvNd:
        """A plain torch conv of the same type and geometry whose weight is ``kernel()``, detached."""
        cls = PLAIN_CONVS[(len(self.kernel_size), self.transposed_layout)]
        geometry = dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups,
                        bias=self.bias is not None, padding_mode=self.padding_mode)
        if self.transposed_layout:
            geometry["output_padding"] = self.output_padding
        conv = cls(self.in_channels, self.out_channels, self.kernel_size, **geometry,
                   device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(self.kernel())
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv


class _ReparamTransposed(ReparamConvNd):
    transposed_layout = True

    def conv_with(self, x: Tensor, weight: Tensor, bias: Tensor | None,
                  output_size: list[int] | None = None) -> Tensor:
        n = len(self.kernel_size)
        output_padding = self._output_padding(x, output_size, self.stride, self.padding, self.kernel_size, n,
                                              self.dilation)
        return _CONV_TRANSPOSE[n](x, weight, bias, self.stride, self.padding, output_padding, self.groups,
                                  self.dilation)

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        return self.conv_with(x, self._weight_now(), self.bias, output_size)


class ReparamConv1d(ReparamConvNd, nn.Conv1d):
    """``ReparamConvNd`` as an ``nn.Conv1d``."""


class ReparamConv2d(ReparamConvNd, nn.Conv2d):
    """``ReparamConvNd`` as an ``nn.Conv2d``: an ``nn.Conv2d`` whose effective weight is ``kernel()``."""

    def to_conv2d(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` with the same geometry whose weight is ``kernel()``, detached."""
        return self.to_plain()


class ReparamConv3d(ReparamConvNd, nn.Conv3d):
    """``ReparamConvNd`` as an ``nn.Conv3d``."""


class ReparamConvTranspose1d(_ReparamTransposed, nn.ConvTranspose1d):
    """``ReparamConvNd`` as an ``nn.ConvTranspose1d`` (``kernel()`` of shape (C_in, C_out/groups, k))."""


class ReparamConvTranspose2d(_ReparamTransposed, nn.ConvTranspose2d):
    """``ReparamConvNd`` as an ``nn.ConvTranspose2d``."""


class ReparamConvTranspose3d(_ReparamTransposed, nn.ConvTranspose3d):
    """``ReparamConvNd`` as an ``nn.ConvTranspose3d``."""


def kaiming_normal_(weight: Tensor, fan: int) -> Tensor:
    """In-place N(0, 2 / fan): He et al. (2015) for ReLU networks."""
    with torch.no_grad():
        return weight.normal_(0.0, (2.0 / fan) ** 0.5)


def conv_fan(weight: Tensor, mode: str) -> int:
    """fan_in = (C_in / groups) * prod(k), fan_out = C_out * prod(k), of a filter-major conv weight
    (C_out, C_in/groups, *k) (a transposed conv's weight through :func:`filter_major` first)."""
    if mode == "fan_in":
        return weight[0].numel()
    if mode == "fan_out":
        return weight.shape[0] * weight[0, 0].numel()
    raise ValueError(f"fan must be 'fan_in' or 'fan_out', got {mode!r}")


def raw_weight(m: nn.Module) -> Tensor:
    """The weight tensor the optimizer updates for a conv or linear layer ``m``: its ``weight``
    (for a ``ReparamConvNd``, the raw V that ``kernel()`` reparametrizes); under a torch
    parametrization, the original of the kernel's shape (``v`` of ``weight_norm``); for the
    legacy ``torch.nn.utils.weight_norm``, ``weight_v`` (``varprobe.layouts.raw_parameter``)."""
    return raw_parameter(m, "weight")


# What a probe records of a reparametrized conv: its raw weight V (``weight``) per filter and its
# effective kernel, as for any user layer (varprobe.register_layout); transposed ones per output unit.
for _conv in (ReparamConv1d, ReparamConv2d, ReparamConv3d):
    register_layout(_conv, "conv", kernel=lambda m: m.kernel())
for _conv in (ReparamConvTranspose1d, ReparamConvTranspose2d, ReparamConvTranspose3d):
    register_layout(_conv, "conv_transpose", filters=lambda m, t: m.filters(t), kernel=lambda m: m.kernel())
