"""Which modules of a model a Probe hooks, and in which role.

What a module is recorded as comes from its layout (``varprobe.layouts``): every module whose
type has one, every residual block (a layout of role "block", or a type in ``blocks``), every Tap,
and every other leaf module that owns trainable parameters (role "other", :func:`~varprobe.layouts.fallback`)
is recorded by default. A leaf is a module none of whose children hold parameters (:func:`param_leaf`):
a module whose only children are activations or dropout, such as the fused experts of a Hugging Face
mixture-of-experts layer, is one. A layout's parts (``nn.MultiheadAttention``'s Q, K, V, out_proj) are targets
of their own that record weight statistics only, and the child modules it owns are not probed.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass

from torch import nn
from torch.nn.utils import parametrize

from ..layouts import Layout, WeightView, fallback, layout_of, weight_views
from .tap import Tap

__all__ = ["Target", "WRAPPER_ATTRS", "unwrap", "layer_name", "named_modules", "role_of", "param_leaf",
           "layout_for", "owned", "candidates", "select"]

#: Attributes through which a wrapper holds the module it wraps: torch.compile's ``OptimizedModule``
#: (``_orig_mod``) and FSDP's ``FullyShardedDataParallel`` (``_fsdp_wrapped_module``). Layer names
#: never carry them (DDP / DataParallel's ``module`` is unwrapped at the root by :func:`unwrap`).
WRAPPER_ATTRS = ("_orig_mod", "_fsdp_wrapped_module")


@dataclass(eq=False)
class Target:
    """One probed layer. ``name`` is the ``layer`` column: the module's ``named_modules()`` name
    without wrapper components (:func:`layer_name`); for a block's branch and for a Tap, the name of
    the block they belong to; for a part of a module's weights (``nn.MultiheadAttention``'s Q, K, V,
    out_proj), ``<module name>.<part>``. ``role``: one of ``varprobe.vocabulary.ROLES``, or
    "branch" (a block's branch, stored as role "block"). ``weight``: the weight whose w.*, gw.*
    rows this layer records, or None. ``part``: a part of another target's module, which records
    weight statistics only (no hooks of its own)."""

    name: str
    module: nn.Module
    role: str
    module_type: str
    weight: WeightView | None = None
    part: bool = False
    layout: Layout | None = None


def unwrap(model: nn.Module) -> nn.Module:
    """The module to hook: DDP / DataParallel wrappers are unwrapped (``.module``), so layer names
    are the same with and without them. A ``torch.compile``'d module is refused (ValueError): hooks
    added after compiling are silently skipped by the compiled code."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    compiled = [n for n, m in model.named_modules()
                if hasattr(m, "_orig_mod") or getattr(m, "_compiled_call_impl", None) is not None]
    if compiled:
        where = "the model" if compiled[0] == "" else f"submodule {compiled[0]!r}"
        raise ValueError(
            f"{where} is already torch.compile'd: hooks added now would be skipped by the compiled "
            "code. Create and attach the Probe on the original module before calling torch.compile "
            "(probe = Probe(model); probe.attach(); model_c = torch.compile(model)), or probe the "
            "original (model_c._orig_mod) and run probe steps through it eagerly")
    return model


def _is_wrapper(module: nn.Module) -> bool:
    return any(isinstance(getattr(module, a, None), nn.Module) for a in WRAPPER_ATTRS)


def layer_name(name: str) -> str:
    """A ``named_modules()`` name without its wrapper components (``WRAPPER_ATTRS``):
    ``"_orig_mod.layer1.0._fsdp_wrapped_module.conv1"`` -> ``"layer1.0.conv1"``."""
    return ".".join(part for part in name.split(".") if part not in WRAPPER_ATTRS)


def named_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``model.named_modules()`` with names as :func:`layer_name` gives them and without the
    wrapper modules themselves (each wrapped module takes its wrapper's name), so a model has the
    same layer names with and without ``torch.compile`` or FSDP around it or its parts."""
    return [(layer_name(n), m) for n, m in model.named_modules() if not _is_wrapper(m)]


def layout_for(module: nn.Module, blocks: Mapping[type, str | None]) -> Layout | None:
    """The layout a Probe records ``module`` by: a block of a type in ``blocks``, the layout of its
    type (``varprobe.layouts.layout_of``), or for a module without one, the fallback."""
    for t, branch in blocks.items():
        if isinstance(module, t):
            return Layout("block", weight=None, branch=branch)
    return layout_of(module)


def role_of(module: nn.Module, blocks: Mapping[type, str | None]) -> str | None:
    """The role of a module a Probe records by default, or None: a Tap's kind, the role of its
    layout (:func:`layout_for`), or "other" for a leaf module that owns trainable parameters."""
    if isinstance(module, Tap):
        return module.kind
    layout = layout_for(module, blocks)
    if layout is not None:
        return layout.role
    if param_leaf(module) and any(p.requires_grad for p in module.parameters(recurse=False)):
        return "other"
    return None


def param_leaf(module: nn.Module) -> bool:
    """Whether ``module`` is a leaf for the probe: none of its child modules holds a parameter
    (children that are activations, dropout or other parameter-free modules do not count), so
    every parameter it owns is used in its own forward, which its hooks see."""
    return not any(True for c in module.children() for _ in c.parameters())


def owned(model: nn.Module) -> dict[int, str]:
    """id -> name of the modules recorded through another module: the children a layout owns
    (``nn.MultiheadAttention.out_proj``) and everything inside a parametrized module's
    ``parametrizations`` (its parameters are the module's raw weight)."""
    out: dict[int, str] = {}
    for n, m in named_modules(model):
        inner = [m.parametrizations] if parametrize.is_parametrized(m) else []
        layout = layout_of(m)
        if layout is not None:
            inner += [c for c in (getattr(m, a, None) for a in layout.owns) if isinstance(c, nn.Module)]
        for c in inner:
            for sub in c.modules():
                out.setdefault(id(sub), n)
    return out


def _parent(name: str) -> str:
    return name.rpartition(".")[0]


def candidates(model: nn.Module, blocks: Mapping[type, str | None] | None = None
               ) -> list[tuple[str, nn.Module, str]]:
    """(name, module, role) of every module recorded by default, in ``named_modules()`` order."""
    blocks = blocks or {}
    skip = owned(model)
    return [(n, m, r) for n, m in named_modules(model)
            if id(m) not in skip and (r := role_of(m, blocks)) is not None]


def _targets(by_name: Mapping[str, nn.Module], name: str, module: nn.Module, role: str,
             blocks: Mapping[type, str | None]) -> list[Target]:
    if isinstance(module, Tap):
        parent = _parent(name)
        owner = by_name.get(parent, module) if parent else module
        return [Target(parent or name, module, module.kind, type(owner).__name__)]
    kind = type(module).__name__
    layout = layout_for(module, blocks) or fallback(module)
    if role == "block":
        out = [Target(name, module, "block", kind, layout=layout)]
        branch = getattr(module, layout.branch, None) if layout.branch else None
        if isinstance(branch, nn.Module):
            out.append(Target(name, branch, "branch", kind, layout=layout))
        return out
    views = weight_views(module, layout)
    if layout.parts is None:
        return [Target(name, module, role, kind, views[0] if views else None, layout=layout)]
    return [Target(name, module, role, kind, layout=layout)] + [
        Target(f"{name}.{v.suffix}" if name else v.suffix, module, role, kind, v, part=True, layout=layout)
        for v in views]


def _describe(model: nn.Module, blocks: Mapping[type, str | None], limit: int = 40) -> str:
    found = candidates(model, blocks)
    if not found:
        names = [f"{n} ({type(m).__name__})" for n, m in named_modules(model) if n][:limit]
        return ("the model has no probe-able module (a module with a layout: conv, linear, embedding, "
                "attention, norm, residual block; a Tap; or a leaf module with trainable parameters); its "
                f"modules: {', '.join(names) or 'none'}")
    listed = ", ".join(f"{n or '<root>'} ({type(m).__name__})" for n, m, _ in found[:limit])
    more = f", ... ({len(found)} in all)" if len(found) > limit else ""
    return f"probe-able modules: {listed}{more}"


def _match(model: nn.Module, sel, blocks: Mapping[type, str | None]) -> list[tuple[str, nn.Module]]:
    named = named_modules(model)
    if isinstance(sel, str):
        if not any(ch in sel for ch in "*?["):
            return [(n, m) for n, m in named if n == sel]
        return [(n, m, ) for n, m, _ in candidates(model, blocks) if fnmatch.fnmatchcase(n, sel)]
    if isinstance(sel, type):
        return [(n, m) for n, m in named if isinstance(m, sel)]
    if isinstance(sel, nn.Module):
        return [(n, m) for n, m in named if m is sel]
    if callable(sel):
        return [(n, m) for n, m in named if sel(n, m)]
    raise TypeError(f"layers entries must be a name or glob, a module type, a module or a "
                    f"callable (name, module) -> bool, got {sel!r}")


def select(model: nn.Module, layers=None, blocks: Mapping[type, str | None] | None = None
           ) -> list[Target]:
    """The targets a Probe hooks for a ``layers`` selection.

    ``layers``: None (every module :func:`candidates` lists: those with a layout, residual blocks
    (a layout of role "block" or a type in ``blocks``, a mapping type -> branch child name), Taps,
    and leaf modules with trainable parameters), a glob on module names (among those), an exact
    module name (any module), a module type, a module, a callable ``(name, module) -> bool``, or a
    list of these. Modules selected explicitly that have no role above are recorded as "other"
    (input, output and their gradients, and whole-tensor statistics of a weight they own). Names are those of :func:`named_modules` (no ``_orig_mod.`` or
    ``_fsdp_wrapped_module.`` components; wrappers themselves are never selected). Raises ValueError, listing the probe-able modules, when the selection or one
    of its entries matches nothing.
    """
    blocks = blocks or {}
    if layers is None:
        chosen = [(n, m) for n, m, _ in candidates(model, blocks)]
        if not chosen:
            raise ValueError(_describe(model, blocks))
    else:
        entries = list(layers) if isinstance(layers, (list, tuple, set, frozenset)) else [layers]
        if not entries:
            raise ValueError(f"layers={layers!r} selects nothing; {_describe(model, blocks)}")
        chosen, seen = [], set()
        for sel in entries:
            hits = _match(model, sel, blocks)
            if not hits:
                raise ValueError(f"layers entry {sel!r} matches no module; {_describe(model, blocks)}")
            for n, m in hits:
                if id(m) not in seen:
                    seen.add(id(m))
                    chosen.append((n, m))
        order = {id(m): i for i, (_, m) in enumerate(named_modules(model))}
        chosen.sort(key=lambda nm: order[id(nm[1])])
    by_name = dict(named_modules(model))
    targets: list[Target] = []
    for n, m in chosen:
        targets += _targets(by_name, n, m, role_of(m, blocks) or "other", blocks)
    return targets
