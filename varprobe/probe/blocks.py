"""Residual blocks found in a model: repeated modules whose output adds their input, checked on a forward.

A *repeated block* is a child of an ``nn.ModuleList`` or ``nn.Sequential`` that holds two or more
children of its type with parameters and submodules: Hugging Face ``BertLayer``, ``ViTLayer`` and
``GPT2Block``, ``nn.TransformerEncoderLayer``, the blocks of a timm-style stage; one that holds a
block already probed (a ``ResidualBlock``, a type in ``blocks=``) is not a candidate. A candidate
is never assumed residual: the probe records it provisionally and decides at the first recorded
forward with an autograd graph in which it runs (:meth:`FoundBlocks.decide`). It is a residual
block when its output's autograd graph reaches its input along a path of weight-free operations
(adds, norms, activations, dropout, casts, views: no matmul, conv, embedding or attention) that
passes through an add of two tensors: ``x + f(x)``, pre-norm (``x + f(norm(x))``) and post-norm
(``norm(x + f(x))``) blocks alike. A block of the type of blocks shown residual beside it (same
container) whose skip path holds weights after the add (a projection shortcut ``proj(x) + f(x)``:
the first block of a ResNet stage) is residual too. Then its output is recorded as ``block.out.*`` under its name,
like ``varprobe.layers.ResidualBlock``, with the channel axis of the last conv, linear or norm
inside it (:func:`block_channel_axis`: the last axis for transformer layers); otherwise it records
nothing, is unhooked and leaves ``Probe.layers``. Where residual candidates nest (a stage of
residual blocks in a list of stages), the innermost are kept; a non-residual candidate inside a
residual one (the repeated conv layers of a block's branch) does not hide it.

A block whose input needs no gradient (the first block of a stack fed by the raw input) takes the
decision of its checked siblings (same type, same container: the same ``forward``). Not found:
blocks that add into their input in place (``x += f(x)``), blocks with no sibling checked whose
input needs no gradient (rows held back, a warning names them), blocks run only under
``no_grad`` (eval-only probes), and compiled regions (their graph is opaque).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from torch import Tensor, nn

from .channel_axis import static_channel_axis
from .plan import LayerPlan, first_tensor
from .select import WRAPPER_ATTRS, Target, named_modules

__all__ = ["check_blocks", "find_blocks", "is_residual", "block_channel_axis", "FoundBlocks"]

Node = Any
#: Autograd nodes a residual (skip) path never crosses: operations with weights.
_WEIGHT_OPS = re.compile(r"^(Mm|Addmm|Bmm|Baddbmm|Addbmm|Mv|Addmv|Dot|Vdot|Matmul|Linear|Einsum|Embedding|"
                         r"EmbeddingBag|\w*Convolution\w*|\w*Attention\w*)Backward|CompiledFunction|^BackwardCFunction$")
_UNDECIDED, _KEPT, _DROPPED = "undecided", "kept", "dropped"


def _op(node: Node) -> str:
    name = getattr(node, "name", None)
    return name() if callable(name) else type(node).__name__


def _children(node: Node) -> list[Node]:
    return [c for c, _ in getattr(node, "next_functions", ()) if c is not None]


def _is_add(node: Node) -> bool:
    """An add of two tensors that both carry gradient (not ``x + eps``)."""
    return _op(node).startswith("AddBackward") and len(_children(node)) >= 2


def _is_node(target: Node, node: Node) -> bool:
    return node is target


def _is_leaf(leaf: Tensor, node: Node) -> bool:
    """Whether ``node`` is the AccumulateGrad node of the leaf tensor ``leaf``."""
    return getattr(node, "variable", None) is leaf


def is_residual(out_node: Node, is_input: Callable[[Node], bool], *, through_weights: bool = False) -> bool:
    """Whether the graph from ``out_node`` reaches a node ``is_input`` accepts along weight-free
    nodes, through at least one add of two tensors (the module docstring). ``through_weights``:
    along any nodes after the add (the skip path of a projection shortcut holds a conv or linear)."""
    if out_node is None or _WEIGHT_OPS.search(_op(out_node)):
        return False
    stack, seen = [(out_node, False)], set()
    while stack:
        node, added = stack.pop()
        if (node, added) in seen:
            continue
        seen.add((node, added))
        added = added or _is_add(node)
        for child in _children(node):
            if is_input(child):
                if added:
                    return True
                continue
            if not _WEIGHT_OPS.search(_op(child)) or (added and through_weights):
                stack.append((child, added))
    return False


def _unwrapped(m: nn.Module) -> nn.Module:
    """The module a torch.compile or FSDP wrapper holds (``WRAPPER_ATTRS``), or ``m``."""
    while True:
        inner = next((w for a in WRAPPER_ATTRS if isinstance(w := getattr(m, a, None), nn.Module)), None)
        if inner is None:
            return m
        m = inner


def check_blocks(blocks: object) -> Mapping[type, str | None]:
    """The block types a ``blocks=`` argument adds: None and False add none (False also turns the
    search for repeated blocks off), a mapping {type: branch child name or None} adds its types.
    Raises TypeError naming the bad value and the valid ones."""
    if blocks is None or blocks is False:
        return {}
    if isinstance(blocks, Mapping) and all(isinstance(t, type) and (b is None or isinstance(b, str))
                                           for t, b in blocks.items()):
        return blocks
    raise TypeError(f"blocks must be None, False or a mapping {{block type: name of its branch child or None}}, "
                    f"got {blocks!r}")


def block_channel_axis(block: nn.Module) -> int:
    """The channel axis of a found block's output: that of the last conv, linear or norm it holds
    (in definition order: a transformer layer's final LayerNorm or output Linear, -1; a conv
    block's conv or BatchNorm, 1); 1 when it holds none."""
    axes = [static_channel_axis(m) for m in block.modules()
            if m is not block and isinstance(m, (nn.Linear, nn.modules.conv._ConvNd, nn.modules.batchnorm._NormBase,
                                                 nn.GroupNorm, nn.LayerNorm))]
    axes = [a for a in axes if a is not None]
    return axes[-1] if axes else 1


def find_blocks(model: nn.Module, targets: list[Target]) -> list[Target]:
    """Targets (role "block") of the repeated-block candidates of ``model`` (module docstring)
    that are not already probed: not a target module, and not the owner of a Tap's rows."""
    named = named_modules(model)
    name_of: dict[int, str] = {}
    for n, m in named:
        name_of.setdefault(id(m), n)
    taken = {id(t.module) for t in targets} | {t.name for t in targets}
    found: dict[int, nn.Module] = {}
    for _, parent in named:
        if not isinstance(parent, (nn.ModuleList, nn.Sequential)):
            continue
        groups: dict[type, list[nn.Module]] = {}
        for child in map(_unwrapped, parent.children()):
            if isinstance(child, (nn.ModuleList, nn.ModuleDict)):  # containers: never called
                continue
            if next(child.children(), None) is not None and next(child.parameters(), None) is not None:
                groups.setdefault(type(child), []).append(child)
        for kids in groups.values():
            if len(kids) >= 2:
                found.update((id(k), k) for k in kids)
    declared = {id(t.module) for t in targets if t.role == "block"}
    inner = [m for m in found.values() if not any(id(d) in declared for d in m.modules() if d is not m)]
    return [Target(name_of[id(m)], m, "block", type(m).__name__) for m in inner
            if id(m) in name_of and id(m) not in taken and name_of[id(m)] not in taken]


class FoundBlocks:
    """Decisions on found block candidates: their ``block.out.*`` rows are held back (empty
    ``out_q``, though their outputs are reduced) until a forward shows whether they are residual."""

    def __init__(self, plans: list[LayerPlan], warn: Callable[[str, str, str], None]) -> None:
        self.warn, self.plans = warn, plans
        self.state: dict[int, str] = {p.idx: _UNDECIDED for p in plans}
        self._inside: dict[int, list[LayerPlan]] = {}  # candidate -> the candidates it holds
        for p in plans:
            held = {id(m) for m in p.module.modules() if m is not p.module}
            self._inside[p.idx] = [q for q in plans if id(q.module) in held]
        self._held: dict[int, list[str]] = {}
        for p in plans:
            self._held[p.idx], p.out_q = p.out_q, []
            p.cdim = block_channel_axis(p.module)

    def wants(self, p: LayerPlan) -> bool:
        return self.state.get(p.idx) == _UNDECIDED

    def undecided(self) -> bool:
        return _UNDECIDED in self.state.values()

    def listed(self, p: LayerPlan) -> bool:
        """Whether ``p`` is listed in ``Probe.layers``: not a candidate, or one shown residual."""
        return self.state.get(p.idx, _KEPT) == _KEPT

    def capture(self, p: LayerPlan, args: tuple) -> tuple[Node, Tensor | None] | None:
        """What identifies the input of a call of ``p`` in the graph: its node, or the tensor
        itself when it is a leaf that requires grad; None when it needs no gradient."""
        x = first_tensor(args)
        if x is None or not x.requires_grad:
            return None
        return (x.grad_fn, None) if x.grad_fn is not None else (None, x)

    def decide(self, seq: list[tuple[LayerPlan, Node, Any]]) -> bool:
        """Decide the undecided candidates called in a forward with a graph (``seq``: the
        forward's probed calls, (plan, output node, captured input)); True if any was. A candidate
        whose input or output has no graph (the first block of a stack fed by the raw input)
        takes the decision of its siblings: the candidates of its type in the same container,
        which run the same ``forward``, when all those decided agree."""
        unknown: dict[int, LayerPlan] = {}
        checked: dict[int, tuple[LayerPlan, bool, Node, Callable[[Node], bool]]] = {}
        for p, node, x in seq:
            if not self.wants(p) or p.idx in checked:
                continue
            if node is None or x is None:
                unknown[p.idx] = p
                continue
            in_node, leaf = x
            is_input = partial(_is_leaf, leaf) if leaf is not None else partial(_is_node, in_node)
            checked[p.idx] = (p, is_residual(node, is_input), node, is_input)
        # a projection shortcut (the first block of a stage): of the type of blocks shown residual
        # beside it, and its output reaches its input through an add, past the projection's weights
        residual_groups = {self._group(p) for p, ok, _, _ in checked.values() if ok}
        residual_groups |= {self._group(q) for q in self.plans if self.state[q.idx] == _KEPT}
        for p, ok, node, is_input in checked.values():
            self._set(p, ok or (self._group(p) in residual_groups
                                and is_residual(node, is_input, through_weights=True)))
        decided = bool(checked)
        for p in list(unknown.values()):
            group = self._group(p)
            verdicts = {self.state[q.idx] for q in self.plans if self._group(q) == group} - {_UNDECIDED}
            if len(verdicts) == 1:
                self._set(p, verdicts == {_KEPT})
                del unknown[p.idx]
                decided = True
        for p in self.plans:  # innermost residual candidates only
            if self.state[p.idx] == _KEPT and any(self.state[q.idx] == _KEPT for q in self._inside[p.idx]):
                self._set(p, False)
        if unknown:
            names = [p.name for p in unknown.values()]
            self.warn("", "block_undecided", (
                f"Probe: {len(names)} repeated module(s) could not be checked for a residual add (their input "
                f"or output has no autograd history: frozen inputs, no_grad, and no sibling of their type "
                f"decided): {', '.join(names[:20])}{', ...' if len(names) > 20 else ''}; their block.out.* rows "
                "are held back until a recorded forward shows the add"))
        return decided

    @staticmethod
    def _group(p: LayerPlan) -> tuple[str, str]:
        return p.name.rpartition(".")[0], p.module_type

    def _set(self, p: LayerPlan, residual: bool) -> None:
        if residual:
            self.state[p.idx] = _KEPT
            p.out_q = self._held[p.idx]
        else:  # no hook for it any more (Dataflow.on_drop)
            self.state[p.idx] = _DROPPED
            p.out_q = []
            p.want_out = p.active = False
