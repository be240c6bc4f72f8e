"""The hot path of a Probe: module and tensor hooks that launch per-channel reductions.

A hook reads its tensor once (:func:`varprobe.stats.channel_sum_norm`: two kernels for small
tensors, row-wise reductions for large ones) and appends the results, with the site they belong
to, to a :class:`~varprobe.probe.buffers.Pending` list; ``step()`` merges the list into the
float64 accumulators in a few kernels. No hook syncs with the host on an accelerator, parses a
name or builds a dict: what each module records was fixed in its :class:`LayerPlan`.

Layer hooks are registered only while they are needed ("armed"): for the whole of a recorded
training step, and for a single forward of the root module in eval mode (or with a probed
submodule in eval mode) when eval forwards are recorded. Each runs first among its module's
forward hooks (registered with ``prepend=True`` and put back in front at each forward of the
root), so it sees the module's own output whatever hooks others added, and when. Between recorded steps the model runs
with one forward pre-hook and one forward hook on its root, so a step that is not recorded costs
two Python calls.
"""
from __future__ import annotations

import functools
import operator
import sys
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.utils.checkpoint
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ..stats import channel_count, channel_max, channel_sum_norm, count_nonfinite, fused_channel_sums
from .buffers import Moments, Pending
from .dataflow import Dataflow
from .plan import BUCKETS, EVAL, PENDING, TRAIN, LayerPlan, first_tensor, in_backward

__all__ = ["Hooks"]


_TRAINING = operator.attrgetter("training")
_CHECKPOINT = getattr(getattr(torch.utils.checkpoint, "CheckpointFunction", None), "forward", None)
_CHECKPOINT = getattr(_CHECKPOINT, "__code__", None)


def in_reentrant_checkpoint() -> bool:
    """Whether the caller runs inside the first forward of ``torch.utils.checkpoint.checkpoint(...,
    use_reentrant=True)`` (``CheckpointFunction.forward``, which runs the function under no_grad
    and recomputes it with grad during backward). No public API says this: the call stack does."""
    f = sys._getframe(1)
    while f is not None:
        if f.f_code is _CHECKPOINT:
            return True
        f = f.f_back
    return False


class _Entry:
    """Per-channel results of one tensor, cached for the step by identity and version."""

    __slots__ = ("ref", "version", "cdim", "n", "channels", "s", "r", "m", "nf", "checked")

    def __init__(self, t: Tensor, version: int, cdim: int, s: Tensor, r: Tensor, m: Tensor | None) -> None:
        self.ref, self.version, self.cdim = weakref.ref(t), version, cdim
        self.channels = t.shape[cdim] if t.ndim else 1
        self.n = channel_count(t, cdim)
        self.s, self.r, self.m = s, r, m
        self.nf: Tensor | None = None
        self.checked = False  # whether non-finite elements were looked for


def _version(t: Tensor) -> int:
    # ``Tensor._version`` (the in-place write counter) is the only way to tell that a tensor seen
    # by two hooks was modified in between (an in-place ReLU after a conv); inference tensors
    # have none and are never reused from the cache.
    return -1 if t.is_inference() else t._version


class _HostArray:
    """A contiguous CPU tensor as ``numpy.from_dlpack`` reads it, without ``Tensor.__dlpack__``'s
    Python checks (they cost more than the rest of the read on a launch-bound step): the array
    shares the tensor's memory and no aten op runs (``Tensor.numpy()`` dispatches four)."""

    __slots__ = ("t",)
    _versioned = getattr(torch._C, "_to_dlpack_versioned", None)

    def __init__(self, t: Tensor) -> None:
        self.t = t

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        if max_version is not None and max_version[0] >= 1 and self._versioned is not None:
            return self._versioned(self.t)
        return torch._C._to_dlpack(self.t)

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)  # kDLCPU, device 0


def _all_finite(s: Tensor) -> bool:
    """Whether every entry of the contiguous CPU tensor ``s`` is finite, read in place."""
    return bool(np.isfinite(np.from_dlpack(_HostArray(s))).all())


def _hooked(plans: list[LayerPlan]) -> list[LayerPlan]:
    """The plans that get a forward hook: the active ones but parts (a part is recorded by its
    module's plan; a hook of its own would count each call of the module again)."""
    return [p for p in plans if p.active and not p.part]


class Hooks:
    """Hooks of one Probe and the open step's pending reductions; see the module docstring."""

    def __init__(self, model: nn.Module, plans: list[LayerPlan], fused: bool) -> None:
        self.model, self.plans, self.fused = model, plans, fused
        self.active = _hooked(plans)
        self._active_modules = [p.module for p in self.active]
        self.bns = [p for p in plans if p.bn_q]
        self.acc = {b: Moments() for b in BUCKETS}
        self.pending = {b: Pending() for b in BUCKETS}
        self.grad_sites: dict[str, dict[int, None]] = {b: {} for b in BUCKETS}  # gradient sites (AMP scaling)
        self.rec_train = self.rec_eval = self.force_train = False
        self.t = 0
        self.root_calls = {b: 0 for b in BUCKETS}
        self.root_seen = False
        self.grad_hooks = self.grads_seen = 0  # training-forward tensors watched, their gradient calls
        self.pending_hooks = self.pending_grads = 0  # the same for PENDING forwards
        self.pending_seen = False  # whether a PENDING forward ran in the open step
        self.dirty: set[str] = set()  # buckets a recording forward wrote to since their reset
        self.running: dict[str, Tensor | None] = {b: None for b in BUCKETS}  # BN running stats snapshot
        self.warn: Callable[[str, str, str], None] = lambda name, kind, msg: None
        self.flow = Dataflow(plans, lambda name, kind, msg: self.warn(name, kind, msg))  # depth, found blocks
        self.flow.on_drop = self._refresh_active
        self._cache: dict[int, _Entry] = {}
        self._gcache: dict[tuple[int, int], tuple[weakref.ref, int, list]] = {}
        self._root: list = []
        self._layer: list = []
        self._wrapped: list | None = None
        self._led: int | None = None  # RemovableHandle.next_id when the layer hooks were last put first
        self._temporary = False
        self.epoch = 0  # bumped by a discarded step: gradients of its forwards are not recorded
        self.merges = {b: 0 for b in BUCKETS}  # pending lists merged during forwards (rollback)
        self._depth = 0  # root forwards running (nested calls of the root)
        self._mark: tuple | None = None
        self._fired: list[tuple[dict, str]] = []  # (fires, mode) of each layer call in the open root forward
        self._root_ckpt: bool | None = None  # a no_grad root forward: inside a reentrant checkpoint?

    # -- arming ------------------------------------------------------------------------------------
    @property
    def attached(self) -> bool:
        return bool(self._root)

    def attach(self) -> None:
        disable = torch.compiler.disable
        self._root = [self.model.register_forward_pre_hook(disable(self._on_root)),
                      self.model.register_forward_hook(disable(self._on_root_done), always_call=True)]

    def arm(self) -> None:
        if self._layer or not self._root:
            return
        if self._wrapped is None:  # built once: wrapping costs more than registering
            disable = torch.compiler.disable
            self._wrapped = [disable(functools.partial(self._on_forward, p)) for p in self.active]
        handles: list = []
        try:
            for p, fn in zip(self.active, self._wrapped):
                handles.append(p.module.register_forward_hook(fn, prepend=True))
        except BaseException:  # all or nothing
            for h in handles:
                h.remove()
            raise
        self._layer = handles
        self._led = RemovableHandle.next_id  # registered with prepend=True: first

    def _refresh_active(self) -> None:
        """Hook only the plans still active (a found block shown not residual is dropped)."""
        active = _hooked(self.plans)
        if len(active) == len(self.active):
            return
        armed, temporary = bool(self._layer), self._temporary
        self.disarm()
        self.active, self._active_modules, self._wrapped = active, [p.module for p in active], None
        if armed:
            self.arm()
            self._temporary = temporary

    def lead(self) -> None:
        """Put the probe's forward hook first among each module's forward hooks, so that it sees
        the module's own output whenever others registered theirs (even with ``prepend=True``,
        after the probe armed). Nothing to do while no hook was registered anywhere since the
        last look: each registration takes the next ``RemovableHandle.next_id``."""
        if RemovableHandle.next_id == self._led:
            return
        for p, h in zip(reversed(self.active), reversed(self._layer)):
            hooks = p.module._forward_hooks
            if next(iter(hooks)) != h.id:
                hooks.move_to_end(h.id, last=False)
        self._led = RemovableHandle.next_id

    def disarm(self) -> None:
        for h in self._layer:
            h.remove()
        self._layer = []
        self._temporary = False

    def remove(self) -> None:
        self.disarm()
        for h in self._root:
            h.remove()
        self._root = []
        self._cache.clear()
        self._gcache.clear()

    def mode(self, module: nn.Module) -> str:
        """TRAIN (training mode, grad enabled), EVAL (no_grad / inference_mode) or PENDING (eval
        mode, grad enabled: settled at step())."""
        if self.force_train:
            return TRAIN
        if not torch.is_grad_enabled() and not (
                self._root_ckpt if self._root_ckpt is not None else in_reentrant_checkpoint()):
            return EVAL
        if module.training:
            return TRAIN
        self.pending_seen = True
        return PENDING

    def recording(self, mode: str) -> bool:
        if mode == TRAIN:
            return self.rec_train
        return self.rec_eval if mode == EVAL else self.rec_train or self.rec_eval

    def _on_root(self, module: nn.Module, args: tuple) -> None:
        self._depth += 1
        if self._depth == 1 and not torch.is_grad_enabled():
            self._root_ckpt = in_reentrant_checkpoint()  # once per forward, not per module
        seen = self.pending_seen
        mode = self.mode(module)
        if not self._layer and self.rec_eval and (
                mode != TRAIN or not all(map(_TRAINING, self._active_modules))):
            self.arm()  # eval forwards are recorded whenever they run: hooks for this forward only
            self._temporary = True
        elif self._layer:
            self.lead()
        if self._depth == 1:  # only where hooks record (a step not recorded costs nothing more)
            self._mark = self.mark(seen) if self._layer else None
        self.root_calls[mode] += 1
        self.root_seen = True
        if self.bns and self.running[mode] is None and self.recording(mode):
            # BatchNorm running statistics before the mode's first forward of the step, all at once.
            # Two ops: one cat of the buffers (they need no grad), one cast.
            with torch.no_grad():
                self.running[mode] = torch.cat([t for p in self.bns for t in (p.module.running_mean,
                                                                              p.module.running_var)]
                                               ).to(torch.float64)

    def _on_root_done(self, module: nn.Module, args: tuple, out: Any) -> None:
        self._depth = max(self._depth - 1, 0)
        if self._depth == 0 and out is None and sys.exc_info()[0] is not None and self._mark is not None:
            # called by torch from the handler of an exception raised in the forward (always_call)
            whole = self.rollback(self._mark)
            self.warn("", "aborted", (
                f"Probe: a forward of the model raised at step {self.t}; what the probe saw of it is dropped"
                + (f" along with the rest of step {self.t}'s {', '.join(whole)} statistics (too many forwards "
                   "to separate it)" if whole else "") + ", so no step merges a forward that never reached "
                "a backward; the probe records the forwards that complete"))
        if self._depth == 0:
            self._mark = self._root_ckpt = None
            self._fired.clear()
            if self.flow.tracing:
                if out is None and sys.exc_info()[0] is not None:
                    self.flow.forward_aborted()
                else:
                    self.flow.forward_done()
        if self._temporary:
            self.disarm()

    def mark(self, pending_seen: bool) -> tuple:
        """What :meth:`rollback` needs to forget a forward of the root: the pending lists' lengths,
        the element counts, the layer calls so far (their firing counts are undone from
        ``_fired``) and call counters, taken when the forward starts."""
        return ([(len(self.pending[b]), len(self.pending[b].max_sites), len(self.pending[b].nf_sites),
                  list(self.acc[b].counts), self.merges[b]) for b in BUCKETS],
                len(self._fired), dict(self.root_calls), dict(self.running),
                self.grad_hooks, self.pending_hooks, pending_seen)

    def rollback(self, mark: tuple) -> list[str]:
        """Forget what hooks recorded since ``mark`` (a forward that raised). Returns the buckets
        whose pending results were merged meanwhile, which are reset whole."""
        buckets, fires, self.root_calls, self.running, self.grad_hooks, self.pending_hooks, \
            self.pending_seen = mark
        self.root_calls, self.running = dict(self.root_calls), dict(self.running)
        for f, mode in self._fired[fires:]:
            f[mode] -= 1
        del self._fired[fires:]
        whole = []
        for b, (n, n_max, n_nf, counts, merges) in zip(BUCKETS, buckets):
            if self.merges[b] != merges:
                whole.append(b)
                self.dirty.add(b)
                self.reset(b)
                continue
            pend, acc = self.pending[b], self.acc[b]
            for lst, k in ((pend.sites, n), (pend.s, n), (pend.r, n), (pend.max_sites, n_max), (pend.m, n_max),
                           (pend.nf_sites, n_nf), (pend.nf, n_nf)):
                del lst[k:]
            acc.counts = counts + [0] * (len(acc.counts) - len(counts))
        return whole

    # -- forward -----------------------------------------------------------------------------------
    def _on_forward(self, p: LayerPlan, module: nn.Module, args: tuple, out: Any) -> None:
        mode = self.mode(module)
        if not self.recording(mode):
            return
        self.dirty.add(mode)
        if mode != EVAL and in_backward():  # a forward re-run inside backward: activation checkpointing
            p.recomputed += 1
            if p.reentrant:  # its first forward ran under no_grad: the gradients flow through this one
                p.reentrant -= 1
                self._watch_grads(p, mode, args, first_tensor(out))
            return
        p.fires[mode] += 1
        if self._depth:
            self._fired.append((p.fires, mode))
        x = args[0] if args and isinstance(args[0], Tensor) else None
        y = first_tensor(out)
        if self.flow.tracing:
            self.flow.fired(p, args, y)
        acc, pend, sites = self.acc[mode], self.pending[mode], p.sites[mode]
        if p.want_in and x is not None and x.is_floating_point():
            cdim = p.cdim if p.cdim is not None else self._axis(p, x, mode, "in")
            self._put(acc, pend, p, sites, "in", self._reduce(x, cdim, False, False), False, False)
            if p.dec_q and mode != EVAL:
                p.in_size = tuple(x.shape[2:])
        if p.want_out and (y is None or not y.is_floating_point()):
            self.warn(p.name, "output", (
                f"Probe: layer {p.name!r} ({type(module).__name__}) returned "
                f"{type(out).__name__ if y is None else f'a {y.dtype} tensor'}: no floating-point tensor to "
                "record (the output, or the first tensor in it: varprobe.probe.plan.first_tensor), so its "
                f"{p.out_prefix}*{' and grad_out.*' if p.want_grad_out else ''} rows are not recorded"))
        elif p.want_out:
            cdim = p.cdim if p.cdim is not None else self._axis(p, y, mode, "out")
            e = self._reduce(y, cdim, p.out_max, p.out_nonfinite)
            self._put(acc, pend, p, sites, "out", e, p.out_max, p.out_nonfinite)
        if mode != EVAL:
            if not torch.is_grad_enabled():  # reentrant checkpointing: gradients at the recomputation
                p.reentrant += 1
            else:
                self._watch_grads(p, mode, args, y)
        if len(pend) > 4096:  # many forwards in one step (eval loops): bound what is held
            acc.merge(pend)
            self.merges[mode] += 1

    def _watch_grads(self, p: LayerPlan, mode: str, args: tuple, y: Tensor | None) -> None:
        x = args[0] if args and isinstance(args[0], Tensor) else None
        if y is not None and y.requires_grad and (p.want_grad_out or mode == PENDING):
            # a PENDING forward's output is watched even without gradient quantities: a
            # gradient reaching it makes it a training forward (see step())
            self._watch(y, p, mode, "grad_out" if p.want_grad_out else None)
        if p.grad_in and x is not None and x.requires_grad:
            self._watch(x, p, mode, "grad_in")

    def _axis(self, p: LayerPlan, t: Tensor, mode: str, slot: str | None) -> int:
        """Channel axis of ``t`` at ``slot`` of a layer whose axis depends on the shape
        (``LayerPlan.axis``). When it cannot be told: warn once naming the layer, mark the slot
        whole-tensor-only for the step (its mean, var, sq_mean, nonfinite stay exact whatever axis
        is reduced over) and reduce over the last axis."""
        ax, new = p.axis(tuple(t.shape))
        if ax is None:
            if new:
                self.warn(p.name, "channel_axis", (
                    f"Probe: layer {p.name!r} ({type(p.module).__name__}, normalized_shape "
                    f"{tuple(getattr(p.module, 'normalized_shape', ()))}) got a tensor of shape {tuple(t.shape)} "
                    "whose channel axis cannot be told (axis 1 and the last axis both fit, or neither, and "
                    "the module has no data_format); only its whole-tensor statistics are recorded "
                    "(no ch_var, ch_sq_mean, dead_frac)"))
            if slot is not None:
                p.whole[mode].add(slot)
            return -1
        return ax

    def _sums(self, t: Tensor, cdim: int, with_max: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        """Per-channel sum, root sum of squares and (``with_max``) maxima of ``t``: one read per
        statistic, with grad mode off (no ``detach`` op; switched directly, not through a
        ``torch.no_grad()`` object, which costs more Python per hook than the op it saves)."""
        if not torch.is_grad_enabled():  # backward hooks: the engine runs them with grad mode off
            return self._sums_nograd(t, cdim, with_max)
        torch._C._set_grad_enabled(False)
        try:
            return self._sums_nograd(t, cdim, with_max)
        finally:
            torch._C._set_grad_enabled(True)

    def _sums_nograd(self, t: Tensor, cdim: int, with_max: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        if self.fused:
            try:
                s, q, m = fused_channel_sums(t, cdim, with_max=with_max)
                return s, q.sqrt(), m
            except Exception as exc:  # no C++ compiler, unsupported backend, ...
                self.fused = False
                self.warn("", "fused", f"Probe(fused=True): the fused reduction could not be compiled "
                          f"({exc!r:.300}); using the eager reductions")
        if with_max and t.device.type == "cpu" and t.numel() > 1 << 15:
            # dead_frac only needs max <= 0: a positive row mean proves a channel live at no cost;
            # the exact maxima (one more read) only when some channel is unproven (CPU: no sync).
            s, r, m = channel_sum_norm(t, cdim, max_bound=True)
            if not bool((m > 0).all()):
                m = channel_max(t, cdim)
            return s, r, m
        return channel_sum_norm(t, cdim, with_max=with_max)

    def _reduce(self, t: Tensor, cdim: int, with_max: bool, with_nf: bool) -> _Entry:
        cdim = cdim % t.ndim if t.ndim else 0
        v = _version(t)
        e = self._cache.get(id(t))
        if e is None or e.ref() is not t or e.version != v or v < 0 or e.cdim != cdim:
            s, r, m = self._sums(t, cdim, with_max)
            e = _Entry(t, v, cdim, s, r, m)
            if len(self._cache) > 4 * len(self.plans) + 16:
                self._cache.clear()
            self._cache[id(t)] = e
        elif with_max and e.m is None:
            with torch.no_grad():
                e.m = channel_max(t, cdim)
        if with_nf and not e.checked:
            e.checked = True
            if t.device.type != "cpu":
                with torch.no_grad():
                    e.nf = count_nonfinite(t)  # sync-free: always count on accelerators
            elif not _all_finite(e.s):  # a finite float64 sum proves every element finite
                with torch.no_grad():
                    e.nf = count_nonfinite(t)
        return e

    def _site(self, acc: Moments, p: LayerPlan, sites: dict, slot: str, channels: int, device) -> int | None:
        i = sites.get(slot)
        if i is None:
            i = sites[slot] = acc.site((p.idx, slot), channels, device)
        if acc.channels[i] != channels:
            self.warn(p.name, "channels", f"Probe: layer {p.name!r} {slot} has {channels} channels, "
                      f"{acc.channels[i]} before; the tensor is not recorded")
            return None
        return i

    def _put(self, acc: Moments, pend: Pending, p: LayerPlan, sites: dict, slot: str, e: _Entry,
             with_max: bool, with_nf: bool) -> None:
        i = self._site(acc, p, sites, slot, e.channels, e.s.device)
        if i is None:
            return
        pend.sites.append(i)
        pend.s.append(e.s)
        pend.r.append(e.r)
        if with_max:
            pend.max_sites.append(i)
            pend.m.append(e.m)
        if with_nf and e.nf is not None:
            pend.nf_sites.append(i)
            pend.nf.append(e.nf)
        acc.counts[i] += e.n

    # -- backward ----------------------------------------------------------------------------------
    def _watch(self, t: Tensor, p: LayerPlan, mode: str, slot: str | None) -> None:
        """Reduce the gradient of ``t`` into the site ``slot`` of ``p`` in bucket ``mode``; slot
        None only counts that a gradient arrived."""
        cdim = p.cdim if p.cdim is not None else self._axis(p, t, mode, slot)
        cdim = cdim % t.ndim if t.ndim else 0
        i = None
        if slot is not None:
            i = self._site(self.acc[mode], p, p.sites[mode], slot, t.shape[cdim] if t.ndim else 1, t.device)
            if i is None:
                return
            self.grad_sites[mode][i] = None
        if mode == TRAIN:
            self.grad_hooks += 1
        else:
            self.pending_hooks += 1
        key = (id(t), _version(t))
        hit = self._gcache.get(key)
        if hit is not None and hit[0]() is t and hit[1] == cdim:
            hit[2].append((mode, i))
            return
        consumers = [(mode, i)]
        t.register_hook(functools.partial(self._on_grad, consumers, cdim, (self.t, self.epoch)))
        self._gcache[key] = (weakref.ref(t), cdim, consumers)

    def _on_grad(self, consumers: list[tuple[str, int | None]], cdim: int, stamp: tuple[int, int],
                 g: Tensor) -> None:
        if stamp != (self.t, self.epoch) or not self._root:
            return  # a backward of a forward from a closed or discarded step, or after remove()
        s = r = None
        n = channel_count(g, cdim)
        train = pending = False
        for mode, i in consumers:
            if mode == TRAIN:
                train = True
            else:
                pending = True
            if i is None:
                continue
            if s is None:
                s, r, _ = self._sums(g, cdim, False)
            pend = self.pending[mode]
            pend.sites.append(i)
            pend.s.append(s)
            pend.r.append(r)
            self.acc[mode].counts[i] += n
        self.grads_seen += train
        self.pending_grads += pending

    def settle(self, train: bool, recording: bool) -> None:
        """Merge the step's PENDING forwards into the TRAIN bucket (``train``: a backward reached
        them) or, forward moments (in, out) only, into the EVAL bucket; exact: sums add, maxima
        max, as for two batches. ``recording``: whether the target bucket is recorded."""
        if not self.pending_seen:
            return
        dst_mode = TRAIN if train else EVAL
        slots = ("in", "out", "grad_out", "grad_in") if train else ("in", "out")
        src, dst = self.acc[PENDING], self.acc[dst_mode]
        src.merge(self.pending[PENDING])
        dst.merge(self.pending[dst_mode])
        if recording and len(src):
            self.dirty.add(dst_mode)
            for p in self.plans:
                sites, into = p.sites[PENDING], p.sites[dst_mode]
                for slot in slots:
                    i = sites.get(slot)
                    if i is None or not src.fired(i):
                        continue
                    j = self._site(dst, p, into, slot, src.channels[i], src.device)
                    if j is None:
                        continue
                    if slot.startswith("grad"):
                        self.grad_sites[dst_mode][j] = None
                    if slot in p.whole[PENDING]:
                        p.whole[dst_mode].add(slot)
                    dst.add_site(j, src, i)
                p.fires[dst_mode] += p.fires[PENDING]
            if self.running[dst_mode] is None:  # PENDING modules inside a training-mode root: its snapshot
                self.running[dst_mode] = (self.running[PENDING] if self.running[PENDING] is not None
                                          else self.running[TRAIN])
            self.root_calls[dst_mode] += self.root_calls[PENDING]
        if train:
            self.grad_hooks += self.pending_hooks
            self.grads_seen += self.pending_grads
        self.reset(PENDING)

    # -- end of step -------------------------------------------------------------------------------
    def reset(self, mode: str) -> None:
        if mode in self.dirty:  # a step no hook recorded in (between recorded steps) skips this
            self.dirty.discard(mode)
            self.acc[mode].reset()
            self.pending[mode].clear()
            for p in self.plans:
                p.reset(mode)
        self.root_calls[mode] = 0
        self.running[mode] = None
        if mode == PENDING:
            self.pending_hooks = self.pending_grads = 0
            self.pending_seen = False
        if mode == TRAIN:
            self.grad_hooks = self.grads_seen = 0
            self._gcache.clear()
            self._cache.clear()
