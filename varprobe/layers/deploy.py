"""Fold reparametrized convs, and BatchNorms that directly follow a conv, into plain convs."""
from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Sequence

import torch
import torch.fx
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .reparam import ReparamConv2d

__all__ = ["reparameterize", "conv_bn_pairs", "attribute_pairs", "check_pairs", "find_pairs", "replace_module"]


class _ConvBNTracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (nn.Conv2d, _BatchNorm)) or super().is_leaf_module(m, qualname)


def _foldable_bn(bn: nn.Module) -> bool:
    """A BatchNorm2d that uses running statistics in eval mode (one without them normalizes with
    batch statistics and cannot be folded)."""
    return bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None


def _sequential_pairs(model: nn.Module) -> list[tuple[str, str]]:
    # a module reachable by more than one path may run more than once: never fold it
    paths: dict[int, int] = {}
    for _, module in model.named_modules(remove_duplicate=False):
        paths[id(module)] = paths.get(id(module), 0) + 1
    pairs = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (a, ma), (b, mb) in zip(children, children[1:]):
                if (isinstance(ma, nn.Conv2d) and isinstance(mb, nn.BatchNorm2d)
                        and paths[id(ma)] == 1 and paths[id(mb)] == 1):
                    prefix = f"{name}." if name else ""
                    pairs.append((prefix + a, prefix + b))
    return pairs


def _probe_input(conv: nn.Conv2d) -> torch.Tensor:
    p = next(conv.parameters())
    return torch.randn(2, conv.in_channels, 16, 16, device=p.device, dtype=p.dtype)


def attribute_pairs(model: nn.Module, skip: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(conv name, BatchNorm2d name) for each module that holds exactly one ``nn.Conv2d`` and one
    ``nn.BatchNorm2d`` as direct children (transformers' ``ResNetConvLayer``: ``convolution``,
    ``normalization``), verified on a forward of that module, never assumed: on a deep copy in
    eval mode, with a random (2, C_in, 16, 16) input, hooks must see the conv called once, then the
    BatchNorm called once on exactly the conv's output tensor. A module whose forward fails on that
    input, or runs them otherwise, gives no pair. Modules reachable by more than one path, and
    BatchNorms named in ``skip``, are left out.
    """
    paths: dict[int, int] = {}
    for _, module in model.named_modules(remove_duplicate=False):
        paths[id(module)] = paths.get(id(module), 0) + 1
    skip = set(skip)
    pairs = []
    for name, module in model.named_modules():
        kids = list(module.named_children())
        convs = [(n, m) for n, m in kids if isinstance(m, nn.Conv2d)]
        bns = [(n, m) for n, m in kids if isinstance(m, nn.BatchNorm2d)]
        if len(convs) != 1 or len(bns) != 1 or isinstance(module, nn.Sequential):
            continue
        (cn, conv), (bn_name, bn) = convs[0], bns[0]
        prefix = f"{name}." if name else ""
        if prefix + bn_name in skip or paths[id(conv)] != 1 or paths[id(bn)] != 1:
            continue
        trial = copy.deepcopy(module).eval()
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
    """``pairs`` as a list after checking that each names an ``nn.Conv2d`` and an ``nn.BatchNorm2d``
    of ``model`` with as many channels; ValueError naming the first bad pair otherwise."""
    modules = dict(model.named_modules())
    out = []
    for pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ValueError(f"pairs entries must be (conv name, batchnorm name), got {pair!r}")
        c, b = pair
        conv, bn = modules.get(c), modules.get(b)
        if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
            convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)][:8]
            raise ValueError(f"pair {pair!r}: need an nn.Conv2d and an nn.BatchNorm2d of the model; "
                             f"got {type(conv).__name__} and {type(bn).__name__} (convs: {', '.join(convs)}, ...)")
        if conv.out_channels != bn.num_features:
            raise ValueError(f"pair {pair!r}: the conv has {conv.out_channels} output channels, "
                             f"the BatchNorm {bn.num_features}")
        out.append((c, b))
    return out


def find_pairs(model: nn.Module, pairs: Sequence[tuple[str, str]] | None = None
               ) -> tuple[list[tuple[str, str]], str | None]:
    """The (conv, BatchNorm2d) pairs to fold or drop: ``pairs`` given explicitly (checked), else
    ``conv_bn_pairs`` (torch.fx, or adjacent ``nn.Sequential`` children) plus
    ``attribute_pairs`` for the BatchNorms those left unmatched. Returns them and the fx error."""
    if pairs is not None:
        return check_pairs(model, pairs), None
    found, err = conv_bn_pairs(model)
    if err is not None:
        found += attribute_pairs(model, skip=[b for _, b in found])
    return found, err


def conv_bn_pairs(model: nn.Module) -> tuple[list[tuple[str, str]], str | None]:
    """(conv name, BatchNorm2d name) for each BatchNorm2d whose only input is a conv's output that
    nothing else reads, where the conv and the BatchNorm each run exactly once (a shared module
    cannot be folded into, or dropped for, one of its call sites).

    Found with torch.fx where ``model`` traces; otherwise from adjacent children of ``nn.Sequential``
    containers. Returns the pairs and, when tracing failed, the tracing error message.
    """
    try:
        graph = _ConvBNTracer().trace(model)
    except Exception as exc:  # fx raises many types for untraceable control flow
        return _sequential_pairs(model), f"{type(exc).__name__}: {exc}"
    modules = dict(model.named_modules())
    calls: dict[int, int] = {}  # a module called twice (shared) cannot be folded into one neighbour
    for node in graph.nodes:
        if node.op == "call_module":
            calls[id(modules[node.target])] = calls.get(id(modules[node.target]), 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        src = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if (isinstance(src, torch.fx.Node) and src.op == "call_module"
                and isinstance(modules[src.target], nn.Conv2d) and len(src.users) == 1
                and calls[id(modules[src.target])] == 1 and calls[id(modules[node.target])] == 1):
            pairs.append((src.target, node.target))
    return pairs, None


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted path ``name`` by ``new``."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def reparameterize(model: nn.Module, *, pairs: Sequence[tuple[str, str]] | None = None) -> nn.Module:
    """A deploy copy of ``model`` in eval mode with only plain ``nn.Conv2d`` for its convs.

    Each BatchNorm2d right after a conv (as ``conv_bn_pairs`` finds them) is folded into it
    (W * g / sqrt(rv + eps), bias (b - rm) * g / sqrt(rv + eps) + beta; the BN becomes
    ``nn.Identity``); one without running statistics is kept, since in eval mode it still
    normalizes with the batch's statistics. Every remaining
    reparametrized conv becomes an ``nn.Conv2d`` whose weight is its ``kernel()``. In eval mode the
    copy computes what the original computes, up to float rounding. ``model`` is not modified.

    ``pairs``: explicit ``[(conv name, batchnorm name), ...]`` to fold; by default they are found
    with ``find_pairs`` (torch.fx, ``nn.Sequential``, then modules holding a conv and a BatchNorm
    called in that order, verified on a forward). A RuntimeWarning names every BatchNorm left
    unfolded and why.
    """
    deploy = copy.deepcopy(model).eval()
    pairs, trace_error = find_pairs(deploy, pairs)
    kept: list[str] = []
    for conv_name, bn_name in pairs:
        if not _foldable_bn(deploy.get_submodule(bn_name)):  # eval uses batch statistics: keep it
            kept.append(f"{bn_name} (no running statistics)")
            continue
        conv = deploy.get_submodule(conv_name)
        plain = conv.to_conv2d() if isinstance(conv, ReparamConv2d) else conv
        replace_module(deploy, conv_name, fuse_conv_bn_eval(plain.eval(), deploy.get_submodule(bn_name)))
        replace_module(deploy, bn_name, nn.Identity())
    paired = {b for _, b in pairs}
    kept += [n for n, m in deploy.named_modules() if isinstance(m, _BatchNorm) and n not in paired]
    if kept:
        why = f"; torch.fx could not trace the model: {trace_error}" if trace_error else ""
        warnings.warn(f"reparameterize: {len(kept)} BatchNorm(s) not folded: {', '.join(kept)} (not found "
                      f"directly after a conv; pass pairs=[(conv, bn), ...]{why})", RuntimeWarning, stacklevel=2)
    converted: dict[int, nn.Conv2d] = {}  # one plain conv per module, shared by all of its paths
    for name, module in list(deploy.named_modules(remove_duplicate=False)):
        if isinstance(module, ReparamConv2d):
            if id(module) not in converted:
                converted[id(module)] = module.to_conv2d().eval()
            replace_module(deploy, name, converted[id(module)])
    return deploy.eval()  # the new modules (Identity in place of each folded BN) too
