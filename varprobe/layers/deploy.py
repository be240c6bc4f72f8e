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


def _sequential_pairs(model: nn.Module) -> list[tuple[str, str]]:
    pairs = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (a, ma), (b, mb) in zip(children, children[1:]):
                if isinstance(ma, nn.Conv2d) and isinstance(mb, nn.BatchNorm2d):
                    prefix = f"{name}." if name else ""
                    pairs.append((prefix + a, prefix + b))
    return pairs


def conv_bn_pairs(model: nn.Module) -> tuple[list[tuple[str, str]], str | None]:
    """(conv name, BatchNorm2d name) for each BatchNorm2d whose only input is a conv's output that
    nothing else reads.

    Found with torch.fx where ``model`` traces; otherwise from adjacent children of ``nn.Sequential``
    containers. Returns the pairs and, when tracing failed, the tracing error message.
    """
    try:
        graph = _ConvBNTracer().trace(model)
    except Exception as exc:  # fx raises many types for untraceable control flow
        return _sequential_pairs(model), f"{type(exc).__name__}: {exc}"
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        src = node.args[0] if len(node.args) == 1 else None
        if (isinstance(src, torch.fx.Node) and src.op == "call_module"
                and isinstance(modules[src.target], nn.Conv2d) and len(src.users) == 1):
            pairs.append((src.target, node.target))
    return pairs, None


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted path ``name`` by ``new``."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def reparameterize(model: nn.Module) -> nn.Module:
    """A deploy copy of ``model`` in eval mode with only plain ``nn.Conv2d`` for its convs.

    Each BatchNorm2d right after a conv is folded into it (W * g / sqrt(rv + eps), bias
    (b - rm) * g / sqrt(rv + eps) + beta; the BN becomes ``nn.Identity``), and every remaining
    reparametrized conv becomes an ``nn.Conv2d`` whose weight is its ``kernel()``. In eval mode the
    copy computes what the original computes, up to float rounding. ``model`` is not modified.
    """
    deploy = copy.deepcopy(model).eval()
    pairs, _ = conv_bn_pairs(deploy)
    for conv_name, bn_name in pairs:
        conv = deploy.get_submodule(conv_name)
        plain = conv.to_conv2d() if isinstance(conv, ReparamConv2d) else conv
        replace_module(deploy, conv_name, fuse_conv_bn_eval(plain.eval(), deploy.get_submodule(bn_name)))
        replace_module(deploy, bn_name, nn.Identity())
    for name, module in list(deploy.named_modules()):
        if isinstance(module, ReparamConv2d):
            replace_module(deploy, name, module.to_conv2d().eval())
    return deploy
