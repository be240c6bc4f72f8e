"""Depth of each probed layer from the dataflow, found once from the autograd graph of a forward.

``depth`` places a layer by what its output was computed from, not by when it was called:

- a weight layer (a role of ``plan.DEPTH_ROLES``: conv, transposed conv, linear, embedding,
  attention) is one deeper than the deepest probed layer its output was computed from, directly or
  through unprobed operations;
- any other layer (a norm, a residual block, a Tap, an "other" module) takes the depth of the
  deepest probed layer its output was computed from (a norm shares its conv's depth, a residual
  block the depth of the deepest layer inside it);
- a layer computed from no probed layer is at depth 0 (the first weight layers, and norms or
  embeddings before them). Depth -1 is left to rows of no layer (``loss``, ``lr``).

So whenever layer B consumes the output of layer A, depth(B) >= depth(A), and depth(B) > depth(A)
when B is a weight layer: the longest path in the DAG of probed layers, counting weight layers.
Parallel branches (Q, K and V of an attention; Inception-style branches) share a depth.

How: during recorded forwards, each probed layer's hook hands its output tensor's ``grad_fn``
(the autograd node that produced it) to :meth:`Dataflow.fired`; when the root forward returns,
:meth:`Dataflow.forward_done` walks ``next_functions`` from those nodes back to the graph's
leaves once and fixes the depth of every layer that fired for the first time. Each layer's depth
is fixed once, at the first recorded forward with an autograd graph in which it ran (normally the
first recorded training step); nothing is traced after every layer has its depth and every found
residual block is decided (:mod:`varprobe.probe.blocks`), so later steps cost one attribute read
per hook.

Where the graph cannot tell (documented and warned, never silent):

- a layer whose output has no ``grad_fn`` in a forward that has a graph (a frozen layer fed only by
  tensors that need no gradient, a layer inside a reentrant checkpoint's no-grad forward): its
  depth follows call order (one more than the layer called before it for a weight layer, the
  same otherwise, 0 for the first), and every layer called after it is placed at least that deep
  (a weight layer one deeper), so the property holds for what may consume it;
- rows built before any forward with a graph was recorded (eval-only probes, ``no_grad`` forwards
  only): the layers that ran get call-order depths the same way, fixed from then on;
- a module called more than once in one forward (weight sharing) at different depths: the deepest
  call's depth, and a warning naming the layer and its depths;
- a layer that did not run in the first recorded training step (a tied copy of a layer that ran, a
  layer whose weight its parent uses directly, one skipped by LayerDrop): the depth of the layer its
  weight is tied to, or else by module order as by call order (:meth:`Dataflow.place_unfired`),
  with the "never fired" warning.

The order of the layers' first calls is kept too (``LayerPlan``-independent, :meth:`Dataflow.row_order`):
rows of a step come in that order, so a frame lists layers by call order, and plots that order
rows by depth (``varprobe.plot._derive.layer_order``) break ties by call order.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import Tensor

from .plan import DEPTH_ROLES, LayerPlan

__all__ = ["Dataflow", "graph_depths"]

Node = Any  # torch.autograd graph node (``Tensor.grad_fn``)
_MAX_SEQ = 1 << 16  # probed calls held between two root forwards (submodules called directly)


def _children(node: Node) -> list[Node]:
    return [c for c, _ in getattr(node, "next_functions", ()) if c is not None]


def _upstream(node: Node, val: dict[Node, int | None]) -> int | None:
    """The deepest probed depth upstream of ``node`` (its children's values), computing and
    memoizing in ``val`` the value of every unowned ancestor not seen yet."""
    stack: list[tuple[Node, bool]] = [(node, False)]
    while stack:
        n, expanded = stack.pop()
        if n is not node and n in val:
            continue
        kids = _children(n)
        if not expanded:
            stack.append((n, True))
            stack.extend((c, False) for c in kids if c not in val)
            continue
        d = max((v for c in kids if (v := val.get(c)) is not None), default=None)
        if n is node:
            return d
        val[n] = d
    return None


def graph_depths(calls: list[tuple[LayerPlan, Node | None]], fixed: Callable[[LayerPlan], int | None],
                 weighted: Callable[[LayerPlan], bool]) -> tuple[dict[LayerPlan, list[int]], list[LayerPlan]]:
    """Depths of the probed calls ``(layer, output node or None)`` of one forward, in call order,
    from the autograd graph (rules: module docstring). ``fixed(layer)``: the layer's depth if
    already fixed, else None. Returns, per layer not fixed, the depth of each of its calls, and
    the layers placed by call order: a call without a node is one deeper than the call before it
    (weight layer) or as deep, and every later call is at least that deep, so that what may
    consume it stays below it."""
    val: dict[Node, int | None] = {}  # the deepest probed depth at or upstream of a node
    found: dict[LayerPlan, list[int]] = {}
    loose: list[LayerPlan] = []
    cur = floor = None
    for p, node in calls:
        d = fixed(p)
        if d is None:
            if node is None:
                d = 0 if cur is None else cur + weighted(p)
                loose.append(p)
            else:  # the node is already valued when an inner module returned the same tensor
                base = val[node] if node in val else _upstream(node, val)
                if floor is not None:
                    base = floor if base is None else max(base, floor)
                d = 0 if base is None else base + weighted(p)
            found.setdefault(p, []).append(d)
        if node is None:
            floor = d if floor is None else max(floor, d)
        else:
            val[node] = d
        cur = d
    return found, loose


class Dataflow:
    """The depth of a probe's layers and their first-call order (module docstring). Driven by the
    probe's hooks: :meth:`fired` per probed call, :meth:`forward_done` / :meth:`forward_aborted`
    when the root forward ends, :meth:`fix_unplaced` before rows are built."""

    def __init__(self, plans: list[LayerPlan], warn: Callable[[str, str, str], None]) -> None:
        self.plans = plans
        self.warn = warn
        self.order: dict[int, int] = {}  # plan idx -> rank of its first call
        self.version = 0  # bumped whenever a depth, an order or a block decision changes
        self.blocks: Any = None  # varprobe.probe.blocks.FoundBlocks, set by the probe
        self.on_drop: Callable[[], None] = lambda: None  # called when found blocks were decided
        self._seq: list[tuple[LayerPlan, Node, Any]] = []
        self._nograd: list[LayerPlan] = []  # call order of the last forward without a graph
        self._unplaced = sum(1 for p in plans if p.active and p.depth < 0)
        self.tracing = self._unplaced > 0

    @staticmethod
    def weighted(p: LayerPlan) -> bool:
        """Whether a layer opens a new depth: its role is one of ``plan.DEPTH_ROLES`` (conv,
        transposed conv, linear, embedding, attention)."""
        return p.role in DEPTH_ROLES

    def update_tracing(self) -> None:
        self.tracing = self._unplaced > 0 or (self.blocks is not None and self.blocks.undecided())

    # -- driven by the hooks -----------------------------------------------------------------------
    def fired(self, p: LayerPlan, args: tuple, y: Tensor | None) -> None:
        """A recorded (not recomputed) call of ``p`` returned ``y`` (its recorded output)."""
        if len(self._seq) >= _MAX_SEQ:
            self._seq.clear()
        node = y.grad_fn if y is not None else None
        extra = self.blocks.capture(p, args) if self.blocks is not None and self.blocks.wants(p) else None
        self._seq.append((p, node, extra))

    def forward_aborted(self) -> None:
        self._seq = []

    def forward_done(self) -> None:
        """The root forward returned: fix the depth of the layers that ran for the first time and
        decide the found blocks that ran, from this forward's graph."""
        seq, self._seq = self._seq, []
        if not seq:
            return
        if all(n is None for _, n, _ in seq):  # no_grad / inference forward: no dataflow to read
            self._nograd = [p for p, _, _ in seq]
            return
        changed = False
        for p, _, _ in seq:
            if p.idx not in self.order:
                self.order[p.idx] = len(self.order)
                changed = True
        if any(p.depth < 0 for p, _, _ in seq):
            found, loose = graph_depths([(p, n) for p, n, _ in seq], lambda q: q.depth if q.depth >= 0 else None,
                                        self.weighted)
            for p, d in found.items():
                self._place(p, max(d))
            shared = {p: d for p, d in found.items() if len(set(d)) > 1}
            if shared:
                listed = "; ".join(f"{p.name!r} at {sorted(set(d))}" for p, d in shared.items())
                self.warn("", "depth_shared", (
                    f"Probe: {len(shared)} layer(s) are called more than once per forward at different "
                    f"dataflow depths (shared weights): {listed}; each is given the depth of its deepest call"))
            if loose:
                names = list(dict.fromkeys(p.name for p in loose))
                self.warn("", "depth_call_order", (
                    f"Probe: {len(names)} layer(s) have no autograd history in the first recorded forward "
                    f"they ran in (frozen and fed only by tensors that need no gradient, inside a reentrant "
                    f"checkpoint, or returning no floating-point tensor): {', '.join(names[:20])}"
                    f"{', ...' if len(names) > 20 else ''}; their depth follows call order, and the layers called "
                    "after them are placed at least as deep"))
            changed = True
        if self.blocks is not None and self.blocks.decide(seq):
            changed = True
            self._unplaced = sum(1 for p in self.plans if p.active and p.depth < 0)
            self.on_drop()
        if changed:
            self.version += 1
        self.update_tracing()

    def fix_unplaced(self) -> None:
        """Before rows are built: layers that ran only in forwards without a graph (eval-only,
        no_grad) get call-order depths, fixed from then on (warned once)."""
        if not self._nograd:
            return
        seq, self._nograd = self._nograd, []
        loose = [p for p in seq if p.depth < 0]
        for p in seq:
            if p.idx not in self.order:
                self.order[p.idx] = len(self.order)
        if loose:
            self._by_call_order(seq)
            self.warn("", "depth_no_graph", (
                f"Probe: rows were built before any recorded forward had an autograd graph (eval or "
                f"no_grad forwards only), so the depth of {len(set(p.name for p in loose))} layer(s) follows "
                "call order instead of the dataflow; it is fixed from now on"))
        self.version += 1
        self.update_tracing()

    def place_unfired(self, weight_of: Callable[[LayerPlan], object]) -> list[LayerPlan]:
        """After a training step whose forwards had a graph: place the active layers that did not
        run in it (no dataflow reaches them: a tied copy of a layer that ran, a layer whose weight
        its parent uses directly, a layer skipped by LayerDrop) so that none of their rows is at
        depth -1. A layer whose weight (``weight_of(layer)``, or None) is that of a placed layer
        takes its depth; any other follows the model's module order as call order does (the layer
        before it, one deeper for a weight layer; 0 for the first). Fixed from then on. Returns
        the layers placed."""
        if not self.order or not self._unplaced:
            return []
        loose = [p for p in self.plans if p.active and not p.part and p.depth < 0]
        if not loose:
            return []
        placed = {}
        for p in self.plans:
            w = weight_of(p) if p.depth >= 0 else None
            if w is not None:
                placed.setdefault(id(w), p.depth)
        for p in loose:
            w = weight_of(p)
            if w is not None and id(w) in placed:
                self._place(p, placed[id(w)])
        self._by_call_order([p for p in self.plans if p.active and not p.part])
        self.version += 1
        self.update_tracing()
        return loose

    # -- placing -----------------------------------------------------------------------------------
    def _place(self, p: LayerPlan, depth: int) -> None:
        if p.depth < 0:
            p.place(depth)
            if p.active:
                self._unplaced -= 1

    def _by_call_order(self, seq: Iterable[LayerPlan]) -> None:
        cur: int | None = None
        for p in seq:
            if p.depth < 0:
                self._place(p, 0 if cur is None else cur + self.weighted(p))
            cur = p.depth

    def row_order(self, plans: list[LayerPlan]) -> list[LayerPlan]:
        """``plans`` in the order of their first recorded call (those never called last, in their
        own order)."""
        n = len(self.order)
        return sorted(plans, key=lambda p: (self.order.get(p.idx, n + p.idx)))
