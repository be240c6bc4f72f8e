"""The normalization schemes compared by varprobe, and a factory for a conv under each."""
from __future__ import annotations

from torch import nn

from ..vocabulary import SCHEMES

from .centered import CenteredConv2d
from .pws import PWSConv2d
from .reparam import conv_fan, kaiming_normal_
from .wn import WNConv2d
from .ws import WSConv2d

__all__ = ["SCHEMES", "ConvNorm", "make_conv", "check_scheme"]

_NORM_AFTER = {"bn", "gn", "ws"}  # schemes whose conv is followed by a normalization layer


class ConvNorm(nn.Sequential):
    """A conv (child ``conv``) followed by its normalization layer (child ``norm``, ``nn.Identity`` if none).

    Every scheme builds this same pair, so the conv of a given layer has the same name
    (``<...>.conv``) in every scheme, and runs of different schemes line up layer by layer.
    """

    def __init__(self, conv: nn.Conv2d, norm: nn.Module | None = None) -> None:
        super().__init__()
        self.conv = conv
        self.norm = norm if norm is not None else nn.Identity()


def check_scheme(scheme: str) -> str:
    """Return ``scheme`` if it is one of ``SCHEMES``, else raise ValueError listing them."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; valid schemes: {', '.join(SCHEMES)}")
    return scheme


def make_conv(scheme: str, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
              *, dilation=1, groups: int = 1, gn_groups: int = 8, **options) -> ConvNorm:
    """A conv under ``scheme``, as ``ConvNorm(conv, norm)``.

    - "plain": ``nn.Conv2d`` with bias, Kaiming-normal weight (fan_in, ReLU gain), zero bias.
    - "plain+gn": the same conv. The scheme differs from "plain" in the models only, which give it
      exactly the norm layers a PWS network keeps (a control: plain convs plus PWS's GroupNorms).
    - "bn": the same conv without bias, then ``BatchNorm2d``.
    - "gn": the same conv without bias, then ``GroupNorm(gn_groups)``.
    - "ws": ``WSConv2d`` without bias, then ``GroupNorm(gn_groups)``.
    - "wn", "pws", "centered": ``WNConv2d`` / ``PWSConv2d`` / ``CenteredConv2d`` with bias, no norm.

    ``options`` go to the conv's constructor (``gamma``, ``gamma_mode``, ``fan``, ``data_init`` for PWS,
    ``eps`` for WS/WN).
    """
    check_scheme(scheme)
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    conv_cls = {"plain": nn.Conv2d, "plain+gn": nn.Conv2d, "bn": nn.Conv2d, "gn": nn.Conv2d, "ws": WSConv2d,
                "wn": WNConv2d, "pws": PWSConv2d, "centered": CenteredConv2d}[scheme]
    accepted = {PWSConv2d: {"gamma", "gamma_mode", "fan", "data_init"}, WSConv2d: {"eps"},
                WNConv2d: {"eps"}}.get(conv_cls, set())
    unknown = set(options) - accepted
    if unknown:
        raise ValueError(f"option(s) {sorted(unknown)} not valid for scheme {scheme!r}; "
                         f"valid options: {sorted(accepted) or 'none'}")
    conv = conv_cls(in_channels, out_channels, kernel_size, bias=scheme not in _NORM_AFTER,
                    **geometry, **options)
    if conv_cls is nn.Conv2d:
        kaiming_normal_(conv.weight, conv_fan(conv.weight, "fan_in"))
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
    norm = None
    if scheme == "bn":
        norm = nn.BatchNorm2d(out_channels)
    elif scheme in ("gn", "ws"):
        norm = nn.GroupNorm(gn_groups, out_channels)
    return ConvNorm(conv, norm)
