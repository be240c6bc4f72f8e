"""The normalization schemes compared by varprobe, and a factory for a conv under each."""
from __future__ import annotations

from torch import nn

from ..vocabulary import SCHEMES

from . import centered, pws, wn, ws
from .reparam import PLAIN_CONVS, ReparamConvNd, conv_fan, filter_major, kaiming_normal_

__all__ = ["SCHEMES", "ConvNorm", "make_conv", "check_scheme", "check_options", "scheme_conv_class"]

_NORM_AFTER = {"bn", "gn", "ws"}  # schemes whose conv is followed by a normalization layer
_BATCHNORMS = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_OPTIONS = {"pws": {"gamma", "gamma_mode", "fan", "data_init"}, "ws": {"eps"}, "wn": {"eps"}}
_REPARAM = {"ws": ws, "wn": wn, "pws": pws, "centered": centered}  # module holding <Prefix>Conv<N>d classes
_PREFIX = {"ws": "WS", "wn": "WN", "pws": "PWS", "centered": "Centered"}


class ConvNorm(nn.Sequential):
    """A conv (child ``conv``) followed by its normalization layer (child ``norm``, ``nn.Identity`` if none).

    Every scheme builds this same pair, so the conv of a given layer has the same name
    (``<...>.conv``) in every scheme, and runs of different schemes line up layer by layer.
    """

    def __init__(self, conv: nn.Module, norm: nn.Module | None = None) -> None:
        super().__init__()
        self.conv = conv
        self.norm = norm if norm is not None else nn.Identity()


def check_scheme(scheme: str) -> str:
    """Return ``scheme`` if it is one of ``SCHEMES``, else raise ValueError listing them."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; valid schemes: {', '.join(SCHEMES)}")
    return scheme


def check_options(scheme: str, options: dict) -> dict:
    """Return ``options`` if each is a conv option of ``scheme`` (``make_conv``), else raise
    ValueError naming them and the valid ones."""
    accepted = _OPTIONS.get(check_scheme(scheme), set())
    unknown = set(options) - accepted
    if unknown:
        raise ValueError(f"option(s) {sorted(unknown)} not valid for scheme {scheme!r}; "
                         f"valid options: {sorted(accepted) or 'none'}")
    return options


def scheme_conv_class(scheme: str, dims: int = 2, transposed: bool = False) -> type[nn.Module]:
    """The conv class ``make_conv`` builds for ``scheme`` in ``dims`` (1, 2 or 3) spatial dimensions:
    the torch conv for "plain", "plain+gn", "bn", "gn"; ``<Scheme>Conv<dims>d`` or
    ``<Scheme>ConvTranspose<dims>d`` (e.g. ``PWSConv1d``, ``WNConvTranspose3d``) for the others.
    ValueError naming the bad value and the valid ones otherwise."""
    check_scheme(scheme)
    if dims not in (1, 2, 3):
        raise ValueError(f"dims must be 1, 2 or 3, got {dims!r}")
    if scheme not in _REPARAM:
        return PLAIN_CONVS[(dims, bool(transposed))]
    name = f"{_PREFIX[scheme]}Conv{'Transpose' if transposed else ''}{dims}d"
    return getattr(_REPARAM[scheme], name)


def make_conv(scheme: str, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
              *, dilation=1, groups: int = 1, gn_groups: int = 8, dims: int = 2, transposed: bool = False,
              output_padding=0, **options) -> ConvNorm:
    """A conv under ``scheme``, as ``ConvNorm(conv, norm)``, in ``dims`` spatial dimensions (1, 2, 3),
    a transposed conv if ``transposed`` (``output_padding`` is for those only).

    - "plain": the torch conv (``nn.Conv<dims>d``, ``nn.ConvTranspose<dims>d``) with bias,
      Kaiming-normal weight (fan_in = (C_in/groups) * prod(k), ReLU gain), zero bias.
    - "plain+gn": the same conv. The scheme differs from "plain" in the models only, which give it
      exactly the norm layers a PWS network keeps (a control: plain convs plus PWS's GroupNorms).
    - "bn": the same conv without bias, then ``BatchNorm<dims>d``.
    - "gn": the same conv without bias, then ``GroupNorm(gn_groups)``.
    - "ws": ``WSConv<dims>d`` without bias, then ``GroupNorm(gn_groups)``.
    - "wn", "pws", "centered": ``WNConv<dims>d`` / ``PWSConv<dims>d`` / ``CenteredConv<dims>d`` with
      bias, no norm. (``scheme_conv_class`` names them, transposed ones included.) A transposed conv
      with stride > 1 under "ws", "pws" or "centered" raises ValueError with the reason
      (``ReparamConvNd.refusal``).

    ``options`` go to the conv's constructor (``gamma``, ``gamma_mode``, ``fan``, ``data_init`` for PWS,
    ``eps`` for WS/WN).
    """
    conv_cls = scheme_conv_class(scheme, dims, transposed)
    check_options(scheme, options)
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    if transposed:
        geometry["output_padding"] = output_padding
    elif output_padding != 0:
        raise ValueError(f"output_padding is for transposed convs only, got {output_padding!r} with transposed=False")
    conv = conv_cls(in_channels, out_channels, kernel_size, bias=scheme not in _NORM_AFTER, **geometry, **options)
    if not isinstance(conv, ReparamConvNd):
        kaiming_normal_(conv.weight, conv_fan(filter_major(conv.weight, groups, transposed), "fan_in"))
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
    norm = None
    if scheme == "bn":
        norm = _BATCHNORMS[dims](out_channels)
    elif scheme in ("gn", "ws"):
        norm = nn.GroupNorm(gn_groups, out_channels)
    return ConvNorm(conv, norm)
