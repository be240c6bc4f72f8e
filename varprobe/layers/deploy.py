"""Fold reparametrized convs, and BatchNorms that directly follow a conv, into plain convs."""
from __future__ import annotations

import copy

import torch.fx
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .reparam import ReparamConv2d

__all__ = ["reparameterize", "conv_bn_pairs", "replace_module"]


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


def reparameterize(model: nn.Module) -> nn.Module:
    """A deploy copy of ``model`` in eval mode with only plain ``nn.Conv2d`` for its convs.

    Each BatchNorm2d right after a conv (as ``conv_bn_pairs`` finds them) is folded into it
    (W * g / sqrt(rv + eps), bias (b - rm) * g / sqrt(rv + eps) + beta; the BN becomes
    ``nn.Identity``); one without running statistics is kept, since in eval mode it still
    normalizes with the batch's statistics. Every remaining
    reparametrized conv becomes an ``nn.Conv2d`` whose weight is its ``kernel()``. In eval mode the
    copy computes what the original computes, up to float rounding. ``model`` is not modified.
    """
    deploy = copy.deepcopy(model).eval()
    pairs, _ = conv_bn_pairs(deploy)
    for conv_name, bn_name in pairs:
        if not _foldable_bn(deploy.get_submodule(bn_name)):  # eval uses batch statistics: keep it
            continue
        conv = deploy.get_submodule(conv_name)
        plain = conv.to_conv2d() if isinstance(conv, ReparamConv2d) else conv
        replace_module(deploy, conv_name, fuse_conv_bn_eval(plain.eval(), deploy.get_submodule(bn_name)))
        replace_module(deploy, bn_name, nn.Identity())
    converted: dict[int, nn.Conv2d] = {}  # one plain conv per module, shared by all of its paths
    for name, module in list(deploy.named_modules(remove_duplicate=False)):
        if isinstance(module, ReparamConv2d):
            if id(module) not in converted:
                converted[id(module)] = module.to_conv2d().eval()
            replace_module(deploy, name, converted[id(module)])
    return deploy.eval()  # the new modules (Identity in place of each folded BN) too
