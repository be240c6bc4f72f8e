"""Convert a user's own model to a normalization scheme."""
from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from ..layers import PWSConvNd, ReparamConvNd, WNConvNd, make_conv
from ..layers.deploy import copy_model, find_pairs, replace_module, weight_parametrization
from ..layers.factory import check_options, scheme_conv_class
from ..layers.reparam import PLAIN_CONVS

__all__ = ["convert"]


def convert(model: nn.Module, scheme: str, *, drop_batchnorm: bool = False,
            pairs: list[tuple[str, str]] | None = None, **options) -> nn.Module:
    """A copy of ``model`` in which every plain torch conv (``nn.Conv1d``, ``nn.Conv2d``,
    ``nn.Conv3d`` and ``nn.ConvTranspose1d/2d/3d``) is rebuilt under ``scheme`` in its own
    dimensionality (``varprobe.layers.scheme_conv_class``: ``PWSConv1d``, ``WNConvTranspose2d``, ...).

    The new conv keeps the geometry (stride, padding, dilation, groups, output padding, padding
    mode), copies the raw weight and the bias (where the scheme's conv has one), and sets its scale
    so the kernel's per-filter scale equals the old weight's (a filter: the weights of one output
    channel; for a transposed conv, weight[in of its group, j] for output channel j):
    - "pws": alpha_i = sqrt(s_i^2 + gamma') / sqrt(2 / fan), s_i^2 the biased variance of filter i, so
      std(kernel_i) = s_i (the kernel is the old filter minus its mean);
    - "wn": g_i = ||w_i||, so the kernel equals the old weight exactly;
    - "centered": the kernel is the old filter minus its mean; "ws": standardized (its GroupNorm sets
      the scale); "plain", "bn", "gn": the weight itself.
    Schemes with a norm ("bn", "gn", "ws") put a ``ConvNorm(conv, norm)`` where the conv was; the
    others put the bare conv, so module names are unchanged. A conv reachable by several paths is
    replaced by one new conv on all of them.

    Refused, and named with the reason in one RuntimeWarning (the conv is kept as it was): a
    transposed conv with stride > 1 under "ws", "pws" or "centered" (``ReparamConvNd.refusal``: its
    output positions see one stride phase of each filter, so centring the filter removes no shift),
    a conv already reparametrized or of another subclass (its forward may not be the plain conv's),
    a conv whose weight is computed by ``weight_norm`` or ``spectral_norm`` (a torch parametrization
    or the legacy hooks; rebuilding would drop them),
    and a lazy conv not yet initialised. A convert that changes nothing (no conv converted, no
    BatchNorm dropped) says so in that warning, or, for a model without convs, in its own; it is a
    warning, not an error, so that the rest of a partly convertible model is still converted.

    With ``drop_batchnorm=True`` every BatchNorm (1-, 2- or 3-D) that directly follows a conv of its
    dimensionality (found with torch.fx where the model traces, else inside ``nn.Sequential`` or as
    the conv and norm children of one module called in that order, verified on a forward:
    ``varprobe.layers.deploy.find_pairs``) becomes ``nn.Identity``; ``pairs=[(conv name, bn name),
    ...]`` names them explicitly instead. A BatchNorm that cannot be matched to a conv raises
    ValueError naming it and why, and so does a ``gn_groups`` (default 8) that does not divide the
    output channels of a conv under "gn" or "ws" (naming the convs and the values that fit).
    ``options`` go to ``make_conv`` (``gamma``, ``gamma_mode``, ``fan``, ``gn_groups``, ...).
    ``model`` is not modified.

    The converted kernels keep the old weights' scale, which for PyTorch's default conv init is
    fan * Var = 1/3, not He's 2: without its BatchNorms such a network starts with a vanishing
    signal. Call ``varprobe.layers.init_alpha(converted, batch)`` to rescale PWS convs from data.
    """
    check_options(scheme, {k: v for k, v in options.items() if k != "gn_groups"})
    new_model = copy_model(model)
    dropped = 0
    if drop_batchnorm:
        found, unpaired = find_pairs(new_model, pairs)
        if unpaired:
            why = "; ".join(f"{n}: {r}" for n, r in unpaired.items())
            raise ValueError(f"cannot drop BatchNorm(s) {list(unpaired)}: {why}")
        for _, name in found:
            replace_module(new_model, name, nn.Identity())
        dropped = len(found)
    if scheme in ("gn", "ws"):
        _check_gn_groups(new_model, scheme, options.get("gn_groups", 8))
    refused: dict[str, str] = {}
    new: dict[int, nn.Module] = {}  # one new conv per old module, on all of its paths
    for name, old in list(new_model.named_modules(remove_duplicate=False)):
        if not isinstance(old, _ConvNd):
            continue
        why = _refusal(old, scheme)
        if why is not None:
            refused.setdefault(name or "(the model)", why)
            continue
        if id(old) not in new:
            new[id(old)] = _convert_conv(old, scheme, options)
        if not name:  # the model is itself a conv: there is no parent to put the new one in
            return new[id(old)]
        replace_module(new_model, name, new[id(old)])
    if refused or not new:
        what = "; ".join(f"{n} ({r})" for n, r in refused.items())
        nothing = "convert changed nothing: " if not new and not dropped else ""
        if not refused:
            msg = (f"{nothing}the model has no conv (nn.Conv1d/2d/3d, nn.ConvTranspose1d/2d/3d) to convert"
                   + (f" ({dropped} BatchNorm(s) dropped)" if dropped else ""))
        else:
            msg = f"{nothing}{len(refused)} conv(s) not converted to {scheme!r}, kept as they were: {what}"
        warnings.warn(f"convert: {msg}", RuntimeWarning, stacklevel=2)
    return new_model


def _check_gn_groups(model: nn.Module, scheme: str, groups) -> None:
    """Raise ValueError, naming the convs and the ``gn_groups`` that fit them all, when the GroupNorm
    of ``scheme`` ("gn", "ws") cannot have ``groups`` groups after a conv that would be converted."""
    convs = {n: m.out_channels for n, m in model.named_modules()
             if isinstance(m, _ConvNd) and _refusal(m, scheme) is None}
    bad = {n: c for n, c in convs.items() if not isinstance(groups, int) or groups < 1 or c % groups}
    if bad:
        fit = [g for g in range(1, min(convs.values()) + 1) if all(c % g == 0 for c in convs.values())]
        listed = ", ".join(f"{n or '(the model)'} ({c})" for n, c in bad.items())
        raise ValueError(f"convert: gn_groups={groups!r} does not divide the output channels of {listed}: the "
                         f"GroupNorm of {scheme!r} needs it to; gn_groups that fit every conv: "
                         f"{', '.join(map(str, fit))}")


def _refusal(old: _ConvNd, scheme: str) -> str | None:
    """Why ``old`` is not rebuilt under ``scheme``, or None."""
    dims, transposed = len(old.kernel_size), bool(old.transposed)
    computed = weight_parametrization(old)
    if computed is not None:
        return (f"its weight is computed by {computed}, which rebuilding would drop; "
                "varprobe.layers.deploy.bake_weight(conv) gives the plain conv of its current weight")
    if type(old) is not PLAIN_CONVS.get((dims, transposed)):
        if isinstance(old, ReparamConvNd):
            return f"already a {type(old).__name__}: only plain torch convs are rebuilt"
        if isinstance(old, nn.modules.lazy.LazyModuleMixin) and old.has_uninitialized_params():
            return f"a {type(old).__name__} not yet initialised: run a forward first"
        return (f"a {type(old).__name__}, a subclass of a torch conv whose forward may differ from the "
                f"plain conv's: only plain torch convs are rebuilt")
    cls = scheme_conv_class(scheme, dims, transposed)
    return cls.refusal(old.stride) if issubclass(cls, ReparamConvNd) else None


@torch.no_grad()
def _convert_conv(old: _ConvNd, scheme: str, options: dict) -> nn.Module:
    transposed = bool(old.transposed)
    extra = {"output_padding": old.output_padding} if transposed else {}
    new = make_conv(scheme, old.in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                    dilation=old.dilation, groups=old.groups, dims=len(old.kernel_size), transposed=transposed,
                    **extra, **options)
    new.to(device=old.weight.device, dtype=old.weight.dtype)  # the norm too: a float64 model stays float64
    conv = new.conv
    conv.padding_mode = old.padding_mode  # _ConvNd keeps the padding for every mode; forward reads this
    conv.weight.copy_(old.weight)
    if conv.bias is not None:
        conv.bias.copy_(old.bias) if old.bias is not None else conv.bias.zero_()
    if isinstance(conv, PWSConvNd):
        s2 = conv.filters(old.weight).flatten(1).var(dim=1, unbiased=False)
        conv.alpha.copy_(torch.sqrt(s2 + conv.gamma_eff).div(conv.gain).view_as(conv.alpha))
    elif isinstance(conv, WNConvNd):
        f = conv.filters(old.weight)
        conv.g.copy_(torch.linalg.vector_norm(f, dim=tuple(range(1, f.dim())), keepdim=True))
    new.train(old.training)
    return new if not isinstance(new.norm, nn.Identity) else conv
