"""What a Probe records for each hooked module, decided once when the probe is created.

A :class:`LayerPlan` fixes, for one module, the quantities of every group (input, output,
gradients, weights, kernel, average gradient, decomposition, BatchNorm, norm affine) in the
row order of ``QUANTITIES``, the channel axis, and which reductions its hooks launch (whether the
output's maximum or non-finite count is needed). Hooks and ``step()`` only read these fields.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from ..stats import FILTER_STATS, layer_tap_overlap
from .channel_axis import channel_axis, static_channel_axis
from .quantities import QUANTITIES
from .select import Target

__all__ = ["LayerPlan", "TRAIN", "EVAL", "PENDING", "MODES", "BUCKETS", "DEPTH_ROLES", "make_plans", "first_tensor",
           "tap_overlap_of"]

#: Roles whose layers are one deeper than the deepest probed layer their output was computed from;
#: other layers take that deepest depth (``varprobe.probe.dataflow``).
DEPTH_ROLES = ("conv", "conv_transpose", "linear", "embedding", "attention")
TRAIN, EVAL = "train", "eval"
MODES = (TRAIN, EVAL)
# Internal bucket: forwards of modules in eval mode with grad enabled. Whether they were training
# forwards (a model trained in eval mode, e.g. with frozen BatchNorm) or eval forwards (an
# evaluation without no_grad) is known at step(): training forwards if a backward reached them.
PENDING = "eval+grad"
BUCKETS = (TRAIN, EVAL, PENDING)
_FILTER_K = tuple(f"k.{k}" for k in FILTER_STATS)
_UNSEEN: Any = object()  # LayerPlan.axes: a shape not seen yet


def _decomposable(m: nn.Module) -> bool:
    """Whether dec.* applies: a linear layer, or a conv whose output is a sum over taps of the input."""
    return isinstance(m, nn.Linear) or (isinstance(m, _ConvNd) and not m.transposed)


def tap_overlap_of(m: nn.Module, size: tuple[int, ...]) -> Tensor:
    """``varprobe.stats.layer_tap_overlap`` of layer ``m`` on inputs of spatial ``size``."""
    if isinstance(m, nn.Linear):
        return layer_tap_overlap(size)
    return layer_tap_overlap(size, m.kernel_size, m.stride, m.dilation, m.padding, m.padding_mode)


def first_tensor(obj: Any, depth: int = 3) -> Tensor | None:
    """The tensor a probe records of a module output ``obj``: ``obj`` itself, or the first
    floating-point tensor found depth first (``depth`` levels) in its items (tuple, list), values
    (dict, and so a Hugging Face ``ModelOutput``, an OrderedDict whose None fields are absent) or
    fields (dataclass), in their order (masks and indices are skipped); None if there is none."""
    if isinstance(obj, Tensor):
        return obj
    if depth <= 0:
        return None
    if isinstance(obj, (tuple, list)):
        items = obj
    elif isinstance(obj, Mapping):
        items = obj.values()
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        items = (getattr(obj, f.name, None) for f in dataclasses.fields(obj))
    else:
        return None
    for item in items:
        t = first_tensor(item, depth - 1)
        if t is not None and t.is_floating_point():
            return t
    return None


class LayerPlan:
    """A hooked module and what the probe records for it (fixed at construction)."""

    def __init__(self, idx: int, target: Target, quantities: frozenset[str]) -> None:
        m = target.module
        q = [k for k in QUANTITIES if k in quantities]  # a fixed row order
        self.idx, self.name, self.module, self.role = idx, target.name, m, target.role
        self.table_role = "block" if target.role == "branch" else target.role  # the role column
        self.module_type = target.module_type
        self.view = target.weight  # the weight of the w.*, gw.* rows (varprobe.layouts), or None
        self.part = target.part  # weight statistics of a part of another plan's module only: no hooks
        self.main: LayerPlan | None = None  # a part's module's plan (make_plans)
        self.parts: list[LayerPlan] = []  # a module's plans of its parts (make_plans)
        #: The layer's depth (-1 until the dataflow places it: :meth:`place`); a part has its
        #: module's. A plain attribute: rows read it at every recorded step.
        self.depth = -1
        # The channel axis (varprobe.probe.channel_axis): fixed for every module but a subclass of
        # nn.LayerNorm without data_format, for which it is decided per tensor shape (axis()).
        layout_axis = target.layout.channel_axis if target.layout is not None else None
        self.cdim: int | None = layout_axis if layout_axis is not None else static_channel_axis(m)
        self.axes: dict[tuple[int, ...], int | None] = {}  # shape -> channel axis (cdim None only)
        # Slots (in, out, grad_out, grad_in) of the open step that saw a tensor whose channel axis
        # could not be told: only their whole-tensor statistics are recorded (not ch_*, dead_frac).
        self.whole: dict[str, set[str]] = {b: set() for b in BUCKETS}
        forward_only = self.role in ("block", "branch") or self.part
        self.out_prefix = {"block": "block.out.", "branch": "branch.out."}.get(self.role, "out.")
        self.out_q = [] if self.part else [k[len(self.out_prefix):] for k in q if k.startswith(self.out_prefix)
                                           and k.count(".") == self.out_prefix.count(".")]
        self.in_q = [] if forward_only else [k[3:] for k in q if k.startswith("in.")]
        self.grad_out_q = [] if forward_only else [k[9:] for k in q if k.startswith("grad_out.")]
        self.grad_in = not forward_only and "grad_in.var" in q
        self.weighted = self.view is not None
        self.w_q = [k for k in q if k.startswith("w.") and k != "w.update_ratio"] if self.weighted else []
        # w.update_ratio (varprobe.probe.updates): no hooks, so it does not make the layer active
        self.update = self.weighted and "w.update_ratio" in q
        kq = [k for k in q if k.startswith("k.")] if self.weighted and self.view.kernel is not None else []
        self.k_q = [k for k in kq if k in _FILTER_K]
        # Layer-specific kernel statistics (PWS: alpha_mean, shrink) come from the layer itself.
        self.k_extra = [k for k in kq if k not in _FILTER_K] if callable(getattr(m, "kernel_stats", None)) else []
        self.gw_q = [k for k in q if k.startswith("gw.")] if self.weighted else []
        self.dec_q = ([k for k in q if k.startswith("dec.")]
                      if self.weighted and not self.view.suffix and _decomposable(m) else [])
        self.in_size: tuple[int, ...] = ()  # spatial size of the last training input (dec.*)
        self.bias_corr = "gw.bias_corr" in self.gw_q
        self.bn_q = ([k for k in q if k.startswith("bn.")]
                     if isinstance(m, _BatchNorm) and m.track_running_stats else [])
        self.norm_q = []
        if self.role == "norm":
            if "norm.weight_mean" in q and isinstance(getattr(m, "weight", None), Tensor):
                self.norm_q.append("norm.weight_mean")
            if "norm.bias_mean" in q and isinstance(getattr(m, "bias", None), Tensor):
                self.norm_q.append("norm.bias_mean")
        self.want_in = bool(self.in_q) or self.bias_corr or bool(self.bn_q) or bool(self.dec_q)
        self.want_out = bool(self.out_q) or bool(self.dec_q)
        self.out_max = "dead_frac" in self.out_q  # the one statistic that needs a third read
        self.out_nonfinite = "nonfinite" in self.out_q
        self.want_grad_out = bool(self.grad_out_q) or self.bias_corr
        self.params = bool(self.w_q or self.k_q or self.k_extra or self.gw_q or self.dec_q)
        self.active = (self.want_in or self.want_out or self.want_grad_out or self.grad_in
                       or self.params or bool(self.norm_q))
        self.fires = {b: 0 for b in BUCKETS}  # a part's: those of its module's plan (make_plans)
        self.recomputed = 0
        self.reentrant = 0  # forwards of the step under a reentrant checkpoint whose recomputation is due
        self.sites: dict[str, dict[str, int]] = {b: {} for b in BUCKETS}

    def place(self, depth: int) -> None:
        """Fix the layer's depth, and its parts'; a part's own placing does nothing (it has its
        module's depth)."""
        if self.main is not None:
            return
        self.depth = depth
        for part in self.parts:
            part.depth = depth

    def axis(self, shape: tuple[int, ...]) -> tuple[int | None, bool]:
        """(channel axis of a tensor of ``shape``, whether it was decided just now); cached per shape."""
        if self.cdim is not None:
            return self.cdim, False
        hit = self.axes.get(shape, _UNSEEN)
        if hit is not _UNSEEN:
            return hit, False
        if len(self.axes) > 64:
            self.axes.clear()
        ax = self.axes[shape] = channel_axis(self.module, shape)
        return ax, True

    def reset(self, mode: str) -> None:
        self.fires[mode] = 0
        self.whole[mode].clear()
        if mode == TRAIN:
            self.recomputed = self.reentrant = 0


def make_plans(targets: list[Target], quantities: frozenset[str]) -> list[LayerPlan]:
    """The plans of ``targets`` (``varprobe.probe.select.select``), in order. A part (a weight of
    another target's module: ``nn.MultiheadAttention``'s Q, K, V, out_proj) shares the firing
    counts of its module's plan, which is hooked whenever one of its parts records something."""
    plans = [LayerPlan(i, t, quantities) for i, t in enumerate(targets)]
    owner = {id(p.module): p for p in plans if not p.part and p.role != "branch"}
    for p in plans:
        if p.part:
            p.main = main = owner[id(p.module)]
            main.parts.append(p)
            p.depth = main.depth
            p.fires = main.fires
            main.active = main.active or p.active
    return plans


def in_backward() -> bool:
    """Whether autograd is running a backward pass now (a forward seen now is a recomputation,
    e.g. activation checkpointing). No public torch API says this: ``torch._C._current_graph_task_id``
    is -1 outside a backward and the id of the running graph task inside one;
    tests/probe/test_api.py::test_in_backward_detects_recomputation checks that behaviour."""
    return torch._C._current_graph_task_id() != -1


__all__.append("in_backward")
