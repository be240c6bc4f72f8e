"""Convert a user's own model to a normalization scheme."""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..layers import PWSConv2d, WNConv2d, make_conv
from ..layers.deploy import find_pairs, replace_module
from ..layers.factory import check_scheme

__all__ = ["convert"]


def convert(model: nn.Module, scheme: str, *, drop_batchnorm: bool = False,
            pairs: list[tuple[str, str]] | None = None, **options) -> nn.Module:
    """A copy of ``model`` in which every plain ``nn.Conv2d`` is rebuilt under ``scheme``.

    The new conv keeps the geometry (stride, padding, dilation, groups), copies the raw weight and
    the bias (where the scheme's conv has one), and sets its scale so the kernel's per-filter scale
    equals the old weight's:
    - "pws": alpha_i = sqrt(s_i^2 + gamma') / sqrt(2 / fan), s_i^2 the biased variance of filter i, so
      std(kernel_i) = s_i (the kernel is the old filter minus its mean);
    - "wn": g_i = ||w_i||, so the kernel equals the old weight exactly;
    - "centered": the kernel is the old filter minus its mean; "ws": standardized (its GroupNorm sets
      the scale); "plain", "bn", "gn": the weight itself.
    Schemes with a norm ("bn", "gn", "ws") put a ``ConvNorm(conv, norm)`` where the conv was; the
    others put the bare conv, so module names are unchanged.

    With ``drop_batchnorm=True`` every ``BatchNorm2d`` that directly follows a conv (found with
    torch.fx where the model traces, else inside ``nn.Sequential`` or as the conv and norm children
    of one module called in that order, verified on a forward: ``varprobe.layers.deploy.find_pairs``)
    becomes ``nn.Identity``; ``pairs=[(conv name, bn name), ...]`` names them explicitly instead. A
    BatchNorm2d that cannot be matched to a conv raises ValueError naming it. ``options`` go to
    ``make_conv`` (``gamma``, ``gamma_mode``, ``fan``, ``gn_groups``, ...). ``model`` is not modified.

    The converted kernels keep the old weights' scale, which for PyTorch's default conv init is
    fan * Var = 1/3, not He's 2: without its BatchNorms such a network starts with a vanishing
    signal. Call ``varprobe.layers.init_alpha(converted, batch)`` to rescale PWS convs from data.
    """
    check_scheme(scheme)
    new_model = copy.deepcopy(model)
    if drop_batchnorm:
        pairs, trace_error = find_pairs(new_model, pairs)
        paired = {bn for _, bn in pairs}
        unmatched = [n for n, m in new_model.named_modules() if isinstance(m, nn.BatchNorm2d) and n not in paired]
        if unmatched:
            why = f" (torch.fx could not trace the model: {trace_error})" if trace_error else ""
            raise ValueError(f"cannot drop BatchNorm2d {unmatched}: not directly after a conv{why}")
        for name in paired:
            replace_module(new_model, name, nn.Identity())
    for name, old in list(new_model.named_modules()):
        if type(old) is nn.Conv2d:
            if not name:  # the model is itself a conv: there is no parent to put the new one in
                return _convert_conv(old, scheme, options)
            replace_module(new_model, name, _convert_conv(old, scheme, options))
    return new_model


@torch.no_grad()
def _convert_conv(old: nn.Conv2d, scheme: str, options: dict) -> nn.Module:
    if old.padding_mode != "zeros":
        raise ValueError(f"only padding_mode='zeros' convs can be converted, got {old.padding_mode!r}")
    new = make_conv(scheme, old.in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                    dilation=old.dilation, groups=old.groups, **options)
    conv = new.conv.to(device=old.weight.device, dtype=old.weight.dtype)
    conv.weight.copy_(old.weight)
    if conv.bias is not None:
        conv.bias.copy_(old.bias) if old.bias is not None else conv.bias.zero_()
    if isinstance(conv, PWSConv2d):
        s2 = old.weight.flatten(1).var(dim=1, unbiased=False)
        conv.alpha.copy_(torch.sqrt(s2 + conv.gamma_eff).div(conv.gain).view_as(conv.alpha))
    elif isinstance(conv, WNConv2d):
        conv.g.copy_(torch.linalg.vector_norm(old.weight, dim=(1, 2, 3), keepdim=True))
    new.train(old.training)
    return new if not isinstance(new.norm, nn.Identity) else conv
