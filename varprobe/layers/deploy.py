"""Fold reparametrized convs, and BatchNorms that directly follow a conv, into plain convs, in 1, 2
and 3 dimensions, transposed convs included."""
from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Sequence

import torch
import torch.fx
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.utils import parametrize

from .reparam import PLAIN_CONVS, ReparamConvNd, filter_major, from_filter_major

__all__ = ["reparameterize", "conv_bn_pairs", "attribute_pairs", "check_pairs", "find_pairs", "replace_module",
           "fold_batchnorm", "pairable", "bake_weight", "weight_parametrization", "copy_model"]

_BN_DIMS = ((nn.BatchNorm1d, 1), (nn.BatchNorm2d, 2), (nn.BatchNorm3d, 3))


class _ConvBNTracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (_ConvNd, _BatchNorm)) or super().is_leaf_module(m, qualname)


def _foldable_bn(bn: nn.Module) -> bool:
    """A BatchNorm that uses running statistics in eval mode (one without them normalizes with
    batch statistics and cannot be folded)."""
    return bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None


def pairable(conv: nn.Module, bn: nn.Module) -> str | None:
    """Why BatchNorm ``bn`` cannot be folded into (or dropped after) ``conv`` as a pair, or None if
    it can: ``conv`` must be a conv or transposed conv (``_ConvNd``) and ``bn`` a BatchNorm of the
    same dimensionality (``BatchNorm1d`` for ``Conv1d``, ...; ``SyncBatchNorm`` for any) with as
    many features as the conv has output channels."""
    if not isinstance(conv, _ConvNd):
        return f"its input comes from a {type(conv).__name__}, not a conv"
    if not isinstance(bn, _BatchNorm):
        return f"it is a {type(bn).__name__}, not a BatchNorm"
    dims = len(conv.kernel_size)
    bn_dims = next((d for t, d in _BN_DIMS if isinstance(bn, t)), dims)
    if bn_dims != dims:
        return f"it is a {type(bn).__name__} after a {dims}-D conv ({type(conv).__name__})"
    if bn.num_features != conv.out_channels:
        return f"it has {bn.num_features} features, the conv {conv.out_channels} output channels"
    return None


def _paths(model: nn.Module) -> dict[int, int]:
    """id(module) -> how many paths reach it (more than one: it may run more than once)."""
    paths: dict[int, int] = {}
    for _, module in model.named_modules(remove_duplicate=False):
        paths[id(module)] = paths.get(id(module), 0) + 1
    return paths


def _sequential_pairs(model: nn.Module) -> tuple[list[tuple[str, str]], dict[str, str]]:
    # a module reachable by more than one path may run more than once: never fold it
    paths = _paths(model)
    pairs, reasons = [], {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            prefix = f"{name}." if name else ""
            for (a, ma), (b, mb) in zip(children, children[1:]):
                if not isinstance(mb, _BatchNorm):
                    continue
                why = pairable(ma, mb)
                if why is None and (paths[id(ma)] != 1 or paths[id(mb)] != 1):
                    why = "it or the conv before it is reachable by more than one path (shared)"
                if why is None:
                    pairs.append((prefix + a, prefix + b))
                else:
                    reasons[prefix + b] = f"in nn.Sequential {name or '(the model)'}: {why}"
    return pairs, reasons


def _probe_input(conv: _ConvNd) -> torch.Tensor:
    p = next(conv.parameters())
    size = {1: (16,), 2: (16, 16), 3: (8, 8, 8)}[len(conv.kernel_size)]
    return torch.randn(2, conv.in_channels, *size, device=p.device, dtype=p.dtype)


def attribute_pairs(model: nn.Module, skip: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(conv name, BatchNorm name) for each module that holds exactly one conv (``_ConvNd``) and one
    BatchNorm of its dimensionality (``pairable``) as direct children (transformers'
    ``ResNetConvLayer``: ``convolution``, ``normalization``), verified on a forward of that module,
    never assumed: on a deep copy in eval mode, with a random (2, C_in, 16) / (2, C_in, 16, 16) /
    (2, C_in, 8, 8, 8) input, hooks must see the conv called once, then the BatchNorm called once on
    exactly the conv's output tensor. A module whose forward fails on that input, or runs them
    otherwise, gives no pair. Modules reachable by more than one path, and BatchNorms named in
    ``skip``, are left out.
    """
    paths = _paths(model)
    skip = set(skip)
    pairs = []
    for name, module in model.named_modules():
        kids = list(module.named_children())
        convs = [(n, m) for n, m in kids if isinstance(m, _ConvNd)]
        bns = [(n, m) for n, m in kids if isinstance(m, _BatchNorm)]
        if len(convs) != 1 or len(bns) != 1 or isinstance(module, nn.Sequential):
            continue
        (cn, conv), (bn_name, bn) = convs[0], bns[0]
        prefix = f"{name}." if name else ""
        if (prefix + bn_name in skip or paths[id(conv)] != 1 or paths[id(bn)] != 1
                or pairable(conv, bn) is not None):
            continue
        trial = copy_model(module).eval()
        t_conv, t_bn = getattr(trial, cn), getattr(trial, bn_name)
        calls: list[tuple[str, object, object]] = []  # (which, input, output): the tensors themselves
        hooks = [t_conv.register_forward_hook(lambda m, a, o: calls.append(("conv", a[0], o))),
                 t_bn.register_forward_hook(lambda m, a, o: calls.append(("bn", a[0], o)))]
        try:
            with torch.no_grad():
                trial(_probe_input(t_conv))
        except Exception:
            continue
        finally:
            for h in hooks:
                h.remove()
        if [c[0] for c in calls] == ["conv", "bn"] and calls[1][1] is calls[0][2]:
            pairs.append((prefix + cn, prefix + bn_name))
    return pairs


def check_pairs(model: nn.Module, pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """``pairs`` as a list after checking that each names a conv and a BatchNorm of ``model`` that
    ``pairable`` accepts; ValueError naming the first bad pair otherwise."""
    modules = dict(model.named_modules())
    out = []
    for pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ValueError(f"pairs entries must be (conv name, batchnorm name), got {pair!r}")
        c, b = pair
        conv, bn = modules.get(c), modules.get(b)
        if not isinstance(conv, _ConvNd) or not isinstance(bn, _BatchNorm):
            convs = [n for n, m in modules.items() if isinstance(m, _ConvNd)][:8]
            raise ValueError(f"pair {pair!r}: need a conv and a BatchNorm of the model; "
                             f"got {type(conv).__name__} and {type(bn).__name__} (convs: {', '.join(convs)}, ...)")
        why = pairable(conv, bn)
        if why is not None:
            raise ValueError(f"pair {pair!r}: {why}")
        out.append((c, b))
    return out


def find_pairs(model: nn.Module, pairs: Sequence[tuple[str, str]] | None = None
               ) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """The (conv, BatchNorm) pairs to fold or drop, and for every other BatchNorm of ``model`` the
    reason it is in no pair. The pairs are ``pairs`` given explicitly (checked), else those of
    ``conv_bn_pairs`` (torch.fx, or adjacent ``nn.Sequential`` children) plus ``attribute_pairs``
    for the BatchNorms those left unmatched."""
    if pairs is not None:
        found, reasons = check_pairs(model, pairs), {}
        default = "not in the pairs given"
    else:
        found, reasons, err = _pairs_and_reasons(model)
        if err is not None:
            found += attribute_pairs(model, skip=[b for _, b in found])
        default = ("not found directly after a conv: not in an nn.Sequential right after one, nor the norm "
                   "of a module holding one conv that feeds it (checked on a forward)")
        if err is not None:
            default += f"; torch.fx could not trace the model: {err}"
            reasons = {n: f"{r}; torch.fx could not trace the model: {err}" for n, r in reasons.items()}
    paired = {b for _, b in found}
    unpaired = {n: reasons.get(n, default) for n, m in model.named_modules()
                if isinstance(m, _BatchNorm) and n not in paired}
    return found, unpaired


def _describe(node: object, modules: dict[str, nn.Module]) -> str:
    if not isinstance(node, torch.fx.Node):
        return f"a constant ({node!r})"
    if node.op == "call_module":
        return f"{node.target} ({type(modules[node.target]).__name__})"
    if node.op == "placeholder":
        return f"the model's input {node.target!r}"
    if node.op == "call_function":
        return f"the function {getattr(node.target, '__name__', node.target)}"
    if node.op == "call_method":
        return f"the tensor method .{node.target}()"
    return f"{node.op} {node.target}"


def _pairs_and_reasons(model: nn.Module) -> tuple[list[tuple[str, str]], dict[str, str], str | None]:
    """``conv_bn_pairs`` plus, per BatchNorm it did not pair, the reason."""
    try:
        graph = _ConvBNTracer().trace(model)
    except Exception as exc:  # fx raises many types for untraceable control flow
        pairs, reasons = _sequential_pairs(model)
        return pairs, reasons, f"{type(exc).__name__}: {exc}"
    modules = dict(model.named_modules())
    calls: dict[int, int] = {}  # a module called twice (shared) cannot be folded into one neighbour
    for node in graph.nodes:
        if node.op == "call_module":
            calls[id(modules[node.target])] = calls.get(id(modules[node.target]), 0) + 1
    pairs, reasons = [], {}
    for n, m in modules.items():
        if isinstance(m, _BatchNorm) and id(m) not in calls:
            reasons[n] = "it never runs in the model's forward (traced with torch.fx)"
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], _BatchNorm):
            continue
        bn = modules[node.target]
        src = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if src is None:
            why = "it is called with more than one argument"
        elif not (isinstance(src, torch.fx.Node) and src.op == "call_module"
                  and isinstance(modules[src.target], _ConvNd)):
            why = f"its input is the output of {_describe(src, modules)}, not of a conv"
        else:
            conv = modules[src.target]
            why = pairable(conv, bn)
            if why is None and calls[id(conv)] != 1:
                why = f"the conv before it, {src.target}, runs {calls[id(conv)]} times"
            elif why is None and len(src.users) != 1:
                others = ", ".join(_describe(u, modules) for u in src.users if u is not node)
                why = f"the output of the conv before it, {src.target}, is also read by {others}"
        if why is None and calls[id(bn)] != 1:
            why = f"it runs {calls[id(bn)]} times (a shared BatchNorm belongs to no one conv)"
        if why is None:
            pairs.append((src.target, node.target))
        else:
            reasons.setdefault(node.target, why)
    return pairs, reasons, None


def conv_bn_pairs(model: nn.Module) -> tuple[list[tuple[str, str]], str | None]:
    """(conv name, BatchNorm name) for each BatchNorm whose only input is the output of a conv
    (1-, 2- or 3-D, plain or transposed, ``pairable``) that nothing else reads, where the conv and
    the BatchNorm each run exactly once (a shared module cannot be folded into, or dropped for, one
    of its call sites).

    Found with torch.fx where ``model`` traces; otherwise from adjacent children of ``nn.Sequential``
    containers. Returns the pairs and, when tracing failed, the tracing error message.
    """
    pairs, _, err = _pairs_and_reasons(model)
    return pairs, err


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted path ``name`` by ``new``."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def copy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)``, also after a forward of a legacy ``torch.nn.utils.weight_norm``
    module (its ``weight`` attribute is then a non-leaf tensor, which ``deepcopy`` refuses): such
    tensors are copied detached (the copy's first forward recomputes them). ``model`` is not modified."""
    memo: dict[int, object] = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(model, memo)


def _legacy_hooks(conv: nn.Module) -> list:
    return [h for h in conv._forward_pre_hooks.values()
            if type(h).__name__ in ("WeightNorm", "SpectralNorm") and getattr(h, "name", None) == "weight"]


def weight_parametrization(conv: nn.Module) -> str | None:
    """What computes ``conv``'s weight from other tensors at each forward, named for a message
    (``"torch.nn.utils.parametrizations.spectral_norm (_SpectralNorm)"``, ``"torch.nn.utils.weight_norm"``),
    or None for a weight used as it is."""
    if parametrize.is_parametrized(conv, "weight"):
        kinds = ", ".join(type(p).__name__ for p in conv.parametrizations.weight)
        return f"a torch parametrization ({kinds})"
    legacy = [type(h).__name__ for h in _legacy_hooks(conv)]
    if legacy:
        return " and ".join({"WeightNorm": "torch.nn.utils.weight_norm",
                             "SpectralNorm": "torch.nn.utils.spectral_norm"}[k] for k in legacy)
    return None


@torch.no_grad()
def bake_weight(conv: _ConvNd) -> _ConvNd:
    """A new plain torch conv (``nn.Conv1d`` ... ``nn.ConvTranspose3d``) of ``conv``'s geometry whose
    weight is the weight ``conv``'s forward computes now from a torch parametrization
    (``torch.nn.utils.parametrizations.weight_norm``, ``spectral_norm``, any ``parametrize``) or
    the legacy hooks of ``torch.nn.utils.weight_norm`` / ``spectral_norm``, detached; spectral norm
    uses its current singular vectors (no power iteration). ``conv`` is not modified (torch's
    ``remove_parametrizations`` would also strip the weight from every deep copy's class)."""
    legacy = _legacy_hooks(conv)
    if legacy:
        hook = legacy[-1]
        weight = (hook.compute_weight(conv) if type(hook).__name__ == "WeightNorm"
                  else hook.compute_weight(conv, do_power_iteration=False))
    else:
        weight = conv.weight
    transposed = bool(conv.transposed)
    geometry = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                    bias=conv.bias is not None, padding_mode=conv.padding_mode)
    if transposed:
        geometry["output_padding"] = conv.output_padding
    plain = PLAIN_CONVS[(len(conv.kernel_size), transposed)](
        conv.in_channels, conv.out_channels, conv.kernel_size, **geometry, device=weight.device, dtype=weight.dtype)
    plain.weight.copy_(weight)
    if conv.bias is not None:
        plain.bias.copy_(conv.bias)
    return plain.train(conv.training)


@torch.no_grad()
def fold_batchnorm(conv: _ConvNd, bn: _BatchNorm) -> _ConvNd:
    """A copy of plain conv ``conv`` computing ``bn(conv(x))`` with ``bn``'s running statistics:
    each output unit's filter times s = g / sqrt(rv + eps), bias (b - rm) * s + beta (g = 1, beta =
    0 without affine). A transposed conv's output units are the filter-major rows of its weight. A
    conv whose weight is parametrized (``weight_norm``, ``spectral_norm``) is folded with the weight
    it computes now (:func:`bake_weight`)."""
    if weight_parametrization(conv) is not None:
        conv = bake_weight(conv)
    fused = copy_model(conv)
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = bn.weight * scale
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    w = filter_major(conv.weight, conv.groups, conv.transposed)
    w = w * scale.reshape(-1, *(1,) * (w.dim() - 1))
    dtype = conv.weight.dtype
    fused.weight = nn.Parameter(from_filter_major(w, conv.groups, conv.transposed).to(dtype),
                                conv.weight.requires_grad)
    bias = conv.bias * scale + shift if conv.bias is not None else shift
    fused.bias = nn.Parameter(bias.to(dtype), conv.weight.requires_grad)
    return fused


def reparameterize(model: nn.Module, *, pairs: Sequence[tuple[str, str]] | None = None) -> nn.Module:
    """A deploy copy of ``model`` in eval mode with only plain torch convs (``nn.Conv1d`` ...
    ``nn.ConvTranspose3d``) for its convs.

    Each BatchNorm right after a conv of its dimensionality (as ``find_pairs`` finds them) is folded
    into it (``fold_batchnorm``; the BN becomes ``nn.Identity``); one without running statistics is
    kept, since in eval mode it still normalizes with the batch's statistics. Every remaining
    reparametrized conv becomes the plain conv whose weight is its ``kernel()``, and every conv whose
    weight is a torch parametrization (``weight_norm``, ``spectral_norm``, legacy or not) the plain
    conv of the weight it computes in eval mode (:func:`bake_weight`). In eval mode the
    copy computes what the original computes, up to float rounding. ``model`` is not modified.

    ``pairs``: explicit ``[(conv name, batchnorm name), ...]`` to fold; by default they are found
    with ``find_pairs`` (torch.fx, ``nn.Sequential``, then modules holding a conv and a BatchNorm
    called in that order, verified on a forward). A RuntimeWarning names every BatchNorm left
    unfolded and the reason ``find_pairs`` gives for it.
    """
    deploy = copy_model(model).eval()
    baked: dict[int, nn.Module] = {}  # one plain conv per parametrized conv, on all of its paths
    for name, module in list(deploy.named_modules(remove_duplicate=False)):
        if isinstance(module, _ConvNd) and weight_parametrization(module) is not None:
            if id(module) not in baked:
                baked[id(module)] = bake_weight(module)
            if not name:
                return baked[id(module)].eval()
            replace_module(deploy, name, baked[id(module)])
    pairs, unpaired = find_pairs(deploy, pairs)
    kept = {}
    for conv_name, bn_name in pairs:
        bn = deploy.get_submodule(bn_name)
        if not _foldable_bn(bn):  # eval uses batch statistics: keep it
            kept[bn_name] = "no running statistics: in eval mode it normalizes with the batch's"
            continue
        conv = deploy.get_submodule(conv_name)
        plain = conv.to_plain() if isinstance(conv, ReparamConvNd) else conv
        replace_module(deploy, conv_name, fold_batchnorm(plain.eval(), bn))
        replace_module(deploy, bn_name, nn.Identity())
    kept.update(unpaired)
    if kept:
        names = "; ".join(f"{n} ({why})" for n, why in kept.items())
        hint = " To fold one the search missed, pass pairs=[(conv, bn), ...]." if unpaired else ""
        warnings.warn(f"reparameterize: {len(kept)} BatchNorm(s) not folded: {names}.{hint}", RuntimeWarning,
                      stacklevel=2)
    converted: dict[int, nn.Module] = {}  # one plain conv per module, shared by all of its paths
    for name, module in list(deploy.named_modules(remove_duplicate=False)):
        if isinstance(module, ReparamConvNd):
            if id(module) not in converted:
                converted[id(module)] = module.to_plain().eval()
            replace_module(deploy, name, converted[id(module)])
    return deploy.eval()  # the new modules (Identity in place of each folded BN) too
