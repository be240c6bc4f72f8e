"""``Probe``: per-layer variance, average-gradient shift and weight statistics during training."""
from __future__ import annotations

import functools
import math
import numbers
import os
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

import pandas as pd
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.utils import parametrize

from ..layers import PWSConv2d, ReparamConv2d, raw_weight
from ..stats import (FILTER_STATS, channel_count, channel_max, channel_sums, correlation, count_nonfinite, filter_stats,
                     fused_channel_sums, grad_shift_stats, second_moment_parts, sign_persistence, tap_overlap,
                     within_rounding)
from .buffers import SUMMARY_COLUMNS, Moments
from .quantities import QUANTITIES, resolve_quantities
from .schedule import as_schedule
from .select import DEFAULT_BLOCKS, Target, select, unwrap
from .table import Record, Schema, empty_frame, records_to_frame
from .updates import UpdateRatios  # w.update_ratio

__all__ = ["Probe"]

TRAIN, EVAL = "train", "eval"
MODES = (TRAIN, EVAL)
# Internal bucket: forwards of modules in eval mode with grad enabled. Whether they were training
# forwards (a model trained in eval mode, e.g. with frozen BatchNorm) or eval forwards (an
# evaluation without no_grad) is known at step(): training forwards if a backward reached them.
_PENDING = "eval+grad"
_BUCKETS = (TRAIN, EVAL, _PENDING)
_COL = {name: i for i, name in enumerate(SUMMARY_COLUMNS)}
_NCOL = len(SUMMARY_COLUMNS)
_F64 = torch.float64


class _Reduced:
    """Per-channel sums of one tensor, cached for the step by tensor identity and version."""

    __slots__ = ("ref", "version", "cdim", "n", "channels", "s", "q", "m", "nonfinite", "checked")

    def __init__(self, t: Tensor, cdim: int, s: Tensor, q: Tensor, m: Tensor | None,
                 nonfinite: Tensor | None, checked: bool = False) -> None:
        self.ref = weakref.ref(t)
        self.version = -1 if t.is_inference() else t._version  # inference tensors have no version
        self.cdim = cdim
        self.channels = t.shape[cdim] if t.ndim else 1
        self.n = channel_count(t, cdim)
        self.s, self.q, self.m, self.nonfinite = s, q, m, nonfinite
        self.checked = checked  # whether non-finite elements were looked for


class _Layer:
    """A hooked module and what the probe records for it."""

    def __init__(self, idx: int, target: Target, quantities: frozenset[str]) -> None:
        m = target.module
        q = [k for k in QUANTITIES if k in quantities]  # a fixed row order
        self.idx, self.name, self.module, self.role = idx, target.name, m, target.role
        self.module_type = target.module_type
        self.depth = -1
        self.cdim = -1 if isinstance(m, (nn.Linear, nn.LayerNorm)) else 1
        forward_only = self.role in ("block", "branch")
        self.out_prefix = {"block": "block.out.", "branch": "branch.out."}.get(self.role, "out.")
        self.out_q = [k[len(self.out_prefix):] for k in q if k.startswith(self.out_prefix)
                      and k.count(".") == self.out_prefix.count(".")]
        self.in_q = [] if forward_only else [k[3:] for k in q if k.startswith("in.")]
        self.grad_out_q = [] if forward_only else [k[9:] for k in q if k.startswith("grad_out.")]
        self.grad_in = not forward_only and "grad_in.var" in q
        self.weighted = self.role in ("conv", "linear") and isinstance(getattr(m, "weight", None), Tensor)
        self.w_q = [k for k in q if k.startswith("w.") and k != "w.update_ratio"] if self.weighted else []
        self.update = self.weighted and "w.update_ratio" in q  # w.update_ratio (UpdateRatios)
        self.k_q = [k for k in q if k.startswith("k.")] if self.weighted and _has_kernel(m) else []
        if not isinstance(m, PWSConv2d):
            self.k_q = [k for k in self.k_q if k not in ("k.alpha_mean", "k.shrink")]
        self.gw_q = [k for k in q if k.startswith("gw.")] if self.weighted else []
        self.dec_q = [k for k in q if k.startswith("dec.")] if self.weighted and _decomposable(m) else []
        self.in_size: tuple[int, ...] = ()  # spatial size of the last training input (dec.*)
        self.overlap: tuple[tuple, Tensor] | None = None  # (input size, tap overlap) for dec.*
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
        self.active = (self.want_in or self.want_out or self.want_grad_out or self.grad_in
                       or bool(self.w_q or self.k_q or self.gw_q or self.norm_q or self.dec_q))
        self.fires = {b: 0 for b in _BUCKETS}
        self.recomputed = 0
        self.sites: dict[str, dict[str, int]] = {b: {} for b in _BUCKETS}
        self.running: dict[str, tuple[Tensor, Tensor] | None] = {b: None for b in _BUCKETS}
        self.prev_gi: Tensor | None = None

    def reset(self, mode: str) -> None:
        self.fires[mode] = 0
        self.running[mode] = None
        if mode == TRAIN:
            self.recomputed = 0


def _has_kernel(m: nn.Module) -> bool:
    return (isinstance(m, ReparamConv2d) or parametrize.is_parametrized(m, "weight")
            or isinstance(getattr(m, "weight_v", None), Tensor))


def _decomposable(m: nn.Module) -> bool:
    """Whether dec.* applies: a linear layer, or a conv whose output is a sum over taps of the input."""
    return isinstance(m, nn.Linear) or (isinstance(m, _ConvNd) and not m.transposed)


def _tap_overlap(m: nn.Module, size: tuple[int, ...]) -> Tensor:
    """``varprobe.stats.tap_overlap`` for layer ``m`` on inputs of spatial ``size`` ([[1]] for linear)."""
    if isinstance(m, nn.Linear):
        return torch.ones(1, 1, dtype=_F64)
    k, dil = m.kernel_size, m.dilation
    taps = math.prod(k)
    if m.padding_mode != "zeros":  # reflect/replicate/circular: every tap reads input entries
        return torch.ones(taps, taps, dtype=_F64)
    if m.padding == "valid":
        pads = [(0, 0)] * len(k)
    elif m.padding == "same":  # as torch: total d (k - 1), the odd one after
        pads = [(d * (kk - 1) // 2, d * (kk - 1) - d * (kk - 1) // 2) for kk, d in zip(k, dil)]
    else:
        pads = [(p, p) for p in m.padding]
    return tap_overlap(size, k, m.stride, dil, pads)


def _weights(m: nn.Module) -> tuple[Tensor, Tensor | None]:
    """(raw weight parameter that the optimizer updates, effective kernel or None)."""
    raw = raw_weight(m)
    if isinstance(m, ReparamConv2d):
        return raw, m.kernel()
    kernel = m.weight  # computed once: under a parametrization each access recomputes it
    return raw, (kernel if kernel is not raw else None)


def _check_number(name: str, v: Any, *, finite: bool) -> None:
    """Refuse a ``Probe.step`` argument that is not None, a real number or a one-element real
    tensor (and, with ``finite``, not finite: numbers and CPU tensors only, reading a device
    tensor would sync). Raises naming the argument and the value; changes nothing."""
    if v is None:
        return
    if isinstance(v, Tensor):
        if v.numel() != 1:
            raise ValueError(f"Probe.step({name}=...) takes a number or a tensor with one element, got a tensor of "
                             f"shape {tuple(v.shape)}; pass the value you backpropagate (e.g. its .mean())")
        if v.is_complex() or v.dtype == torch.bool:
            raise TypeError(f"Probe.step({name}=...) takes a real number, got a tensor of dtype {v.dtype}")
        if finite and v.device.type == "cpu" and not math.isfinite(v.item()):
            raise ValueError(f"Probe.step({name}=...) must be finite, got {v.item()!r}")
        return
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"Probe.step({name}=...) takes None, a real number or a one-element tensor, "
                        f"got {v!r} ({type(v).__name__})")
    if finite and not math.isfinite(float(v)):
        raise ValueError(f"Probe.step({name}=...) must be a finite number, got {v!r}")


def _first_tensor(obj: Any) -> Tensor | None:
    if isinstance(obj, Tensor):
        return obj
    if isinstance(obj, (tuple, list)) and obj and isinstance(obj[0], Tensor):
        return obj[0]
    return None


class Probe:
    """Record per-layer statistics of a model during training into a long-format table.

    Usage::

        probe = Probe(model, every=10)                 # or Probe(model, out="runs/r1") to stream
        with probe:                                    # attach(); remove() and close() on exit
            for x, y in loader:
                loss = loss_fn(model(x), y)
                loss.backward()
                probe.step(loss=loss, lr=lr)           # after backward, before optimizer.step()
                opt.step(); opt.zero_grad()
        frame = probe.frame()

    What is recorded (``varprobe.probe.QUANTITIES`` defines each quantity): the input and output
    moments of every probed module (``in.*``, ``out.*``), of residual blocks and their branches
    (``block.out.*``, ``branch.out.*``), the moments of gradients with respect to module outputs
    and inputs (``grad_out.*``, ``grad_in.var``), filter statistics of raw weights and of effective
    kernels (``w.*``, ``k.*``), the shift of the average gradient (``gw.*``), the split of each
    conv or linear layer's output second moment into its i.i.d., filter-sum and remaining parts
    (``dec.*``, from moments already held: no extra read), BatchNorm batch vs running statistics
    (``bn.*``), norm affine parameters (``norm.*``), and ``loss``/``lr``.

    How: forward hooks reduce each probed tensor on its device, once (a tensor that is one layer's
    output and the next one's input is read once), to per-channel sums and sums of squares added to
    a preallocated float64 buffer; ``Tensor.register_hook`` on outputs (and inputs that require
    grad) does the same for gradients, so in-place ops after a probed layer work. Nothing syncs with
    the host until a flush, which copies every buffered step in one transfer; memory does not depend
    on the batch size and no activation is kept. Several forwards in one step (gradient
    accumulation) merge exactly. Parameter statistics are read in :meth:`step`.

    Modes: forwards of modules in training mode with grad enabled are "train"; forwards under
    ``torch.no_grad()`` / ``torch.inference_mode()`` are "eval", recorded apart (forward
    quantities only) whenever they run, stamped with the current step, i.e. the number of
    completed ``step()`` calls (the eval forwards that follow step k's update see the weights that
    step k + 1's training forward sees). ``modes=("train",)`` disables eval recording. Forwards of
    modules in eval mode with grad enabled are settled at ``step()``, for the step as a whole: if
    a backward reached them they are training forwards of the step (a model trained in eval mode,
    or with frozen BatchNorm layers, is recorded as training, gradients included); otherwise they
    are eval forwards (an evaluation run without ``no_grad``). An evaluation without ``no_grad``
    in the same step as such training forwards is merged into them: evaluate under
    ``torch.no_grad()`` or ``torch.inference_mode()`` to keep it apart. Until the step closes,
    :meth:`frame` does not preview these forwards.

    Schedule: ``every`` is an int k (record steps 0, k, 2k, ...) or a callable step -> bool, e.g.
    :func:`~varprobe.probe.log_schedule`. Hooks stay attached; on steps that are not recorded they
    return at once (about a microsecond per module call).

    Residual blocks: every ``varprobe.layers.ResidualBlock`` (and every module of a type in
    ``blocks``, a mapping type -> name of its branch child or None) records its output as
    ``block.out.*`` and its branch's output as ``branch.out.*``, under the block's name. In a user
    model, put a :class:`~varprobe.probe.Tap` on the add, or pass ``blocks={MyBlock: "branch"}``.

    Distributed: under an initialized ``torch.distributed`` process group, training-mode moments
    (counts, sums, sums of squares, maxima, non-finite counts) are all-reduced at each recorded
    step, so variances are those of the global batch, and gradient moments are scaled by
    1/world_size so they refer to the mean of the rank losses (DDP's averaging). All ranks must run
    the same probed layers and call ``step()`` alike. Eval-mode statistics are not reduced (eval
    often runs on one rank): they are rank-local. Only rank 0 writes (``out``, :meth:`save`).

    ``torch.compile``: create and attach the probe before compiling; hooks run eagerly (graph
    breaks at probed layers), so probed values equal eager ones. A module that is already compiled
    is refused with a ValueError.

    Args:
        model: The module to probe (DDP / DataParallel are unwrapped).
        layers: Which modules: None for every Conv, Linear, BatchNorm/GroupNorm/LayerNorm, residual
            block and Tap; or a glob on module names, an exact name, a module type, a module, a
            callable (name, module) -> bool, or a list of these (see ``varprobe.probe.select``).
        every: Positive int or schedule callable.
        quantities: "all" (default), "forward" (output statistics only, plus loss and lr), or an
            iterable of quantity names and globs ("out.*", "gw.shift_ratio", ...).
        modes: Subset of ("train", "eval").
        blocks: Extra residual block types -> branch child name, added to ``{ResidualBlock: "branch"}``.
        out: Run directory to stream to (``meta.json`` + Parquet chunks, via ``RunWriter``).
        flush_every: Recorded steps buffered on the device between transfers (and chunks on disk).
        meta: Run configuration stored in ``meta.json`` (scheme, lr, batch_size, seed, ...).
        overwrite: Replace an existing run directory ``out``.
        process_group: The group to reduce over (default: the world, when initialized).
        fused: Read each probed tensor once with a ``torch.compile``'d kernel that produces row
            sums, sums of squares and maxima together (``varprobe.stats.fused_channel_sums``)
            instead of two or three eager reductions. Compiles at the first probed forward
            (needs a C++ compiler on CPU); falls back to eager reductions with a warning.
    """

    def __init__(self, model: nn.Module, layers=None, every: int | Callable[[int], bool] = 1, *,
                 quantities: str | Iterable[str] = "all", modes: Iterable[str] = MODES,
                 blocks: Mapping[type, str | None] | None = None, out: str | os.PathLike | None = None,
                 flush_every: int = 50, meta: dict | None = None, overwrite: bool = False,
                 process_group=None, fused: bool = False) -> None:
        self.model = unwrap(model)
        self._schedule = as_schedule(every)
        self._quantities = resolve_quantities(quantities)
        modes = tuple(modes) if not isinstance(modes, str) else (modes,)
        bad = [m for m in modes if m not in MODES]
        if bad or not modes:
            raise ValueError(f"modes must be a non-empty subset of {MODES}, got {modes!r}")
        self._modes = modes
        if isinstance(flush_every, bool) or not isinstance(flush_every, int) or flush_every <= 0:
            raise ValueError(f"flush_every must be a positive int, got {flush_every!r}")
        self._flush_every = flush_every
        self._blocks = {**DEFAULT_BLOCKS, **(blocks or {})}
        self._layers_spec = layers
        targets = select(self.model, layers, self._blocks)
        self._layers = [_Layer(i, t, self._quantities) for i, t in enumerate(targets)]
        self._out = os.fspath(out) if out is not None else None
        self._meta = dict(meta or {})
        self._overwrite = overwrite
        self._fused = bool(fused)

        self._group = process_group
        distributed = dist.is_available() and dist.is_initialized()
        self._world = dist.get_world_size(process_group) if distributed else 1
        self._rank = dist.get_rank() if distributed else 0
        self._layout_checked: tuple | None = None

        self._acc = {b: Moments() for b in _BUCKETS}
        self._handles: list = []
        self._t = 0
        self._rec_train = TRAIN in modes and bool(self._schedule(0))
        self._rec_eval = EVAL in modes
        self._force_train = False  # spp(): no_grad forwards of a model in train mode count as "train"
        self._next_depth = 0
        self._cur_depth = -1
        self._cache: dict[int, _Reduced] = {}
        self._gcache: dict[tuple[int, int], tuple[weakref.ref, int, list]] = {}
        self._root_calls = {b: 0 for b in _BUCKETS}
        self._root_seen = False
        self._grad_hooks = 0  # training-forward tensors watched for gradients in the step
        self._grads_seen = 0  # gradient hook calls for them
        self._pending_hooks = 0  # the same for eval-mode forwards with grad enabled (_PENDING)
        self._pending_grads = 0
        self._pending_seen = False  # whether such a forward ran in the open step
        self._warned: set[tuple[str, str]] = set()
        self._pending: list[Record] = []
        self._frames: list[pd.DataFrame] = []
        self._writer = None
        self._closed = False
        self._collapsed_step: int | None = None
        self._schemas: dict[tuple, tuple[Schema, Tensor | None]] = {}
        self._next_gi: dict[int, Tensor] = {}  # per-filter average gradients of the step being closed
        # w.update_ratio: raw-weight snapshots taken in step() before a recorded step (updates.py)
        self._updates = UpdateRatios()
        self._update_layers = [layer for layer in self._layers if layer.update]

    # -- public state ------------------------------------------------------------------------------
    @property
    def layers(self) -> list[str]:
        """Names of the probed layers (a block appears once even with its branch hooked)."""
        return list(dict.fromkeys(layer.name for layer in self._layers))

    @property
    def quantities(self) -> list[str]:
        """The quantities this probe records (where they apply)."""
        return sorted(self._quantities)

    @property
    def current_step(self) -> int:
        """Index of the step in progress: the number of completed ``step()`` calls."""
        return self._t

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    @property
    def nbytes(self) -> int:
        """Device bytes the probe holds: accumulators, steps buffered since the last flush and the
        per-channel sums cached for the step. O(layers x quantities x buffered steps); it does
        not depend on the batch size, and no activation is kept."""
        held = sum(a.nbytes() for a in self._acc.values())
        held += self._updates.nbytes  # w.update_ratio snapshots
        held += sum(r.values.numel() * r.values.element_size() for r in self._pending if r.values is not None)
        for r in self._cache.values():
            held += sum(t.numel() * t.element_size() for t in (r.s, r.q, r.m, r.nonfinite) if t is not None)
        return held

    def __repr__(self) -> str:
        return (f"Probe({type(self.model).__name__}, {len(self.layers)} layers, every={self._schedule!r}, "
                f"step={self._t}, attached={self.attached})")

    # -- attach / remove ---------------------------------------------------------------------------
    def attach(self) -> "Probe":
        """Register the hooks (and open the run directory ``out``). Idempotent: attaching an
        attached probe does nothing. All or nothing: if anything fails (the model was compiled,
        the run directory cannot be created or is locked, a hook cannot be registered), every
        hook registered so far is removed, the probe stays detached and the error is raised."""
        if self._handles:
            return self
        if self._closed and self._out is not None:
            raise RuntimeError(f"this Probe was closed and its run {self._out} finalized; "
                               "create a new Probe to record more")
        unwrap(self.model)  # refuse a model compiled since the probe was created
        disable = torch.compiler.disable
        handles: list = []
        try:
            handles.append(self.model.register_forward_pre_hook(disable(self._on_root)))
            for layer in self._layers:
                if not layer.active:
                    continue
                handles.append(layer.module.register_forward_hook(
                    disable(functools.partial(self._on_forward, layer))))
                if layer.bn_q:
                    handles.append(layer.module.register_forward_pre_hook(
                        disable(functools.partial(self._on_bn_pre, layer))))
            if self._out is not None and self._rank == 0 and self._writer is None:
                from ..record import RunWriter
                self._writer = RunWriter(self._out, self._config(), overwrite=self._overwrite)
        except BaseException:
            for h in handles:
                h.remove()
            raise
        self._handles = handles
        return self

    def remove(self) -> None:
        """Remove every hook and flush recorded steps. The open step's training data is dropped;
        eval forwards of the open step stay pending (in :meth:`frame`, closed by the next
        ``step()`` after :meth:`attach`, or by :meth:`close`). The probe can be attached again;
        ``step()`` on a detached probe raises."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._cache.clear()
        self._gcache.clear()
        self._updates.clear()  # w.update_ratio: updates made while detached are not seen
        self.flush()

    def close(self, status: str | None = None, **fields: Any) -> None:
        """Close the open eval step, flush, and finalize the run directory (status "finished", or
        "collapsed" if a non-finite loss or activation was recorded). Idempotent.

        If closing fails (a write error, a bad ``status``), the run is marked "failed" with that
        error, its lock is released and the error is raised."""
        if self._closed:
            return
        try:
            self.remove()
            self._settle_pending(train=False)  # no step() will settle them: eval forwards
            rec = self._close_mode(EVAL, reset=True)
            if rec is not None:
                self._pending.append(rec)
            self.flush()
            self._closed = True
            if self._writer is not None:
                if status is None:
                    status = "collapsed" if self._collapsed_step is not None else "finished"
                self._writer.close(status, **fields)
        except BaseException as exc:
            self._abort(exc)
            raise

    def _abort(self, exc: BaseException) -> None:
        """After a failure inside or around the probe: remove the hooks, write the steps already
        closed if possible, mark the run "failed" with ``exc`` and release its lock. Never
        raises, so ``exc`` is what reaches the user; a further problem on the way is added to
        ``exc`` as a note."""
        notes = []
        for h in self._handles:
            try:
                h.remove()
            except Exception as err:  # pragma: no cover - torch's handle removal does not fail
                notes.append(f"removing a hook failed: {err!r}")
        self._handles = []
        self._cache.clear()
        self._gcache.clear()
        try:
            self.flush()
        except Exception as err:
            notes.append(f"writing the recorded steps failed: {err!r}")
        if self._writer is not None and not self._writer.closed:
            error = {"type": type(exc).__name__, "message": str(exc)[:2000]}
            try:
                self._writer.close("failed", error=error)  # releases the lock even if meta.json fails
            except Exception as err:
                notes.append(f"marking the run {self._out} as failed failed: {err!r}")
        if self._out is not None:
            self._closed = True
        for note in notes:
            exc.add_note(f"varprobe.Probe: {note}")

    def __enter__(self) -> "Probe":
        return self.attach()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Remove the hooks; with ``out``, close the run. If the body raised, or the probe fails
        here, the run is marked "failed" with that error, the lock is released and the error
        propagates unchanged (nothing raised on the way out hides it)."""
        if exc is not None:
            self._abort(exc)
            return
        try:
            self.remove()
            if self._out is not None:
                self.close()
        except BaseException as err:
            self._abort(err)
            raise

    # -- hooks (hot path) --------------------------------------------------------------------------
    def _mode(self, module: nn.Module) -> str:
        """TRAIN (training mode, grad enabled), EVAL (no_grad / inference_mode) or _PENDING
        (eval mode, grad enabled: settled at step())."""
        if self._force_train:
            return TRAIN
        if not torch.is_grad_enabled():
            return EVAL
        if module.training:
            return TRAIN
        self._pending_seen = True
        return _PENDING

    def _recording(self, mode: str) -> bool:
        if mode == TRAIN:
            return self._rec_train
        return self._rec_eval if mode == EVAL else self._rec_train or self._rec_eval

    def _on_root(self, module: nn.Module, args: tuple) -> None:
        self._root_calls[self._mode(module)] += 1
        self._root_seen = True

    def _on_bn_pre(self, layer: _Layer, module: _BatchNorm, args: tuple) -> None:
        mode = self._mode(module)
        if not self._recording(mode) or layer.running[mode] is not None:
            return
        if module.running_mean is not None and torch._C._current_graph_task_id() == -1:
            layer.running[mode] = (module.running_mean.detach().clone(), module.running_var.detach().clone())

    def _on_forward(self, layer: _Layer, module: nn.Module, args: tuple, out: Any) -> None:
        mode = self._mode(module)
        if not self._recording(mode):
            return
        if mode != EVAL and torch._C._current_graph_task_id() != -1:
            # A forward re-run inside backward: activation checkpointing recomputation.
            layer.recomputed += 1
            return
        acc = self._acc[mode]
        layer.fires[mode] += 1
        if layer.depth < 0:
            if layer.role in ("conv", "linear"):
                layer.depth, self._next_depth = self._next_depth, self._next_depth + 1
            else:
                layer.depth = self._cur_depth
        if layer.role in ("conv", "linear"):
            self._cur_depth = layer.depth
        x = args[0] if args and isinstance(args[0], Tensor) else None
        y = _first_tensor(out)
        if layer.want_in and x is not None and x.is_floating_point():
            self._add(acc, layer, mode, "in", self._reduce(x, layer.cdim, False))
            if layer.dec_q and mode != EVAL:
                layer.in_size = tuple(x.shape[2:])
        if layer.want_out and y is not None and y.is_floating_point():
            self._add(acc, layer, mode, "out", self._reduce(y, layer.cdim, layer.out_max, layer.out_nonfinite))
        if mode != EVAL and torch.is_grad_enabled():
            if y is not None and y.requires_grad and (layer.want_grad_out or mode == _PENDING):
                # an eval-mode forward's output is watched even without grad quantities: a
                # gradient reaching it makes it a training forward (see step())
                self._watch_grad(y, layer.cdim, (layer, mode, "grad_out" if layer.want_grad_out else None))
            if layer.grad_in and x is not None and x.requires_grad:
                self._watch_grad(x, layer.cdim, (layer, mode, "grad_in"))

    def _sums(self, t: Tensor, cdim: int, with_max: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        if self._fused:
            try:
                return fused_channel_sums(t, cdim, with_max=with_max)
            except Exception as exc:  # no C++ compiler, unsupported backend, ...
                self._fused = False
                warnings.warn(f"Probe(fused=True): the fused reduction could not be compiled ({exc!r:.300}); "
                              "using the eager reductions", RuntimeWarning, stacklevel=2)
        return channel_sums(t, cdim, with_max=with_max)

    def _reduce(self, t: Tensor, cdim: int, with_max: bool, with_nonfinite: bool = False) -> _Reduced:
        cdim = cdim % t.ndim if t.ndim else 0
        inference = t.is_inference()  # no version counter: never cached (it may change in place)
        hit = None if inference else self._cache.get(id(t))
        if (hit is not None and hit.ref() is t and hit.version == t._version and hit.cdim == cdim
                and (hit.m is not None or not with_max) and (hit.checked or not with_nonfinite)):
            return hit
        if with_max and t.device.type == "cpu" and not self._fused:
            # The maximum only serves dead_frac (max <= 0). A positive row mean proves a channel
            # live at no cost; the exact maxima (one more read) only when some channel is unproven.
            s, q, m = channel_sums(t, cdim, max_bound=True)
            if not bool((m > 0).all()):
                m = channel_max(t, cdim)
        else:
            s, q, m = self._sums(t, cdim, with_max)
        nonfinite = None
        if with_nonfinite:
            if t.device.type != "cpu":
                nonfinite = count_nonfinite(t)  # sync-free: always count on accelerators
            elif not math.isfinite(q.sum()):  # on CPU a check costs no sync: count only then
                nonfinite = count_nonfinite(t)
        r = _Reduced(t, cdim, s, q, m, nonfinite, with_nonfinite)
        if inference:
            return r
        if len(self._cache) > 4 * len(self._layers) + 16:
            self._cache.clear()
        self._cache[id(t)] = r
        return r

    def _add(self, acc: Moments, layer: _Layer, mode: str, slot: str, r: _Reduced,
             scale: float = 1.0) -> None:
        sites = layer.sites[mode]
        i = sites.get(slot)
        if i is None:
            i = sites[slot] = acc.site((layer.idx, slot), r.channels, r.s.device)
        if acc.channels[i] != r.channels:
            self._warn_once(layer.name, "channels", f"Probe: layer {layer.name!r} {slot} has {r.channels} "
                            f"channels, {acc.channels[i]} before; the tensor is not recorded")
            return
        if scale != 1.0:
            acc.add(i, r.n, r.s * scale, r.q * (scale * scale), r.m, r.nonfinite)
        else:
            acc.add(i, r.n, r.s, r.q, r.m, r.nonfinite)

    def _watch_grad(self, t: Tensor, cdim: int, consumer: tuple[_Layer, str, str | None]) -> None:
        """Reduce the gradient of ``t`` into the consumer's (layer, bucket, slot); slot None only
        counts that a gradient arrived."""
        cdim = cdim % t.ndim if t.ndim else 0
        if consumer[1] == TRAIN:
            self._grad_hooks += 1
        else:
            self._pending_hooks += 1
        key = (id(t), t._version)
        hit = self._gcache.get(key)
        if hit is not None and hit[0]() is t and hit[1] == cdim:
            hit[2].append(consumer)
            return
        consumers = [consumer]
        t.register_hook(functools.partial(self._on_grad, consumers, cdim, self._t))
        self._gcache[key] = (weakref.ref(t), cdim, consumers)

    def _on_grad(self, consumers: list, cdim: int, step: int, g: Tensor) -> None:
        if step != self._t or not self._handles:
            return  # a backward of a forward from a closed step, or after remove()
        r = None
        scale = 1.0 / self._world if self._world > 1 else 1.0
        train = pending = False
        for layer, mode, slot in consumers:
            if mode == TRAIN:
                train = True
            else:
                pending = True
            if slot is None:
                continue
            if r is None:
                s, q, _ = self._sums(g, cdim, False)
                r = _Reduced(g, cdim, s, q, None, None)
            self._add(self._acc[mode], layer, mode, slot, r, scale)
        self._grads_seen += train
        self._pending_grads += pending

    # -- step --------------------------------------------------------------------------------------
    def step(self, loss: Tensor | float | None = None, lr: float | Tensor | None = None) -> None:
        """Close the current training step: read parameter gradients and weights if the step is
        recorded, then move to the next step. Call once per optimizer step, after
        ``loss.backward()`` and before ``optimizer.step()`` / ``zero_grad()``.

        Args:
            loss: None, a real number or a tensor with one element (the loss backpropagated; it
                may be inf or NaN, which marks the run collapsed).
            lr: None, or a finite real number or one-element tensor (finiteness is checked for
                numbers and CPU tensors; a device tensor is not read, to avoid a sync).

        Everything is checked before anything changes: a call that raises leaves the probe as it
        was (the step stays open; call ``step()`` again with valid arguments).

        Raises:
            TypeError, ValueError: a bad ``loss`` or ``lr`` (the message names it).
            RuntimeError: the probe is detached or closed; called twice without a training
                forward in between (the message says which forwards ran instead, e.g. only
                under ``torch.no_grad()``); or, on a recorded step, after a training forward
                whose backward never ran.
        """
        _check_number("loss", loss, finite=False)
        _check_number("lr", lr, finite=True)
        t = self._t
        if not self._handles:
            if self._closed:
                raise RuntimeError(f"Probe.step() called at step {t} after the probe was closed (close() ran or "
                                   "its `with` block ended); nothing more is recorded. Call step() inside "
                                   "`with probe:`, or create a new Probe")
            raise RuntimeError(f"Probe.step() called at step {t} while the probe is detached (remove() ran, or "
                               "its `with` block ended, or it was never attached): no hook saw this step. Call "
                               "step() inside `with probe:` or after probe.attach()")
        fired = self._root_calls[TRAIN] > 0 or any(layer.fires[TRAIN] for layer in self._layers)
        pending = self._pending_seen
        # Eval-mode forwards with grad enabled that a backward reached are training forwards of
        # this step (a model trained in eval mode, or with frozen BatchNorm layers); otherwise
        # they are eval forwards (an evaluation without no_grad).
        promote = pending and self._pending_grads > 0
        # Eval-mode forwards that nothing watched (a step recorded in no mode, or outputs that do
        # not require grad) cannot be told apart: nothing of them is recorded, no error.
        if self._root_seen and not fired and not promote and not (pending and not self._pending_hooks):
            evals = self._root_calls[EVAL] + self._root_calls[_PENDING]
            if pending:
                raise RuntimeError(
                    f"Probe.step() called at step {t} without a training forward since the last step(): "
                    f"the forward(s) ran with the model in eval mode (module.training is False) and no "
                    "backward reached them, so they are recorded as eval. A model trained in eval mode "
                    "(e.g. frozen BatchNorm) is recorded as training once loss.backward() runs before "
                    "step(); otherwise call model.train() before the training forward")
            if evals or any(layer.fires[EVAL] for layer in self._layers):
                raise RuntimeError(
                    f"Probe.step() called at step {t} without a training forward since the last step(): "
                    f"the {evals or 'probed'} forward(s) since then ran under torch.no_grad() or "
                    "torch.inference_mode() (or in eval mode), so they were recorded as eval. A training "
                    "forward needs grad enabled, then loss.backward(), then step()")
            raise RuntimeError(
                f"Probe.step() called twice without a training forward and backward in between "
                f"(step {t}); call it once per optimizer step, after loss.backward() and before "
                "optimizer.step()")
        if self._rec_train and not promote and self._grad_hooks and not self._grads_seen:
            raise RuntimeError(
                f"Probe.step() called at step {t} after a training forward but before its backward; "
                "call loss.backward() first (Probe.step() reads gradients)")
        self._settle_pending(train=promote)
        if self._rec_train:
            self._check_fires(t)
            rec = self._close_mode(TRAIN, loss=loss, lr=lr)
            if rec is not None:
                self._pending.append(rec)
        else:
            self._reset(TRAIN)
        rec = self._close_mode(EVAL, reset=True)
        if rec is not None:
            self._pending.append(rec)
        self._t = t + 1
        self._rec_train = TRAIN in self._modes and bool(self._schedule(self._t))
        if self._rec_train and self._update_layers:  # w.update_ratio of step t + 1 needs W_t
            self._updates.snapshot([layer.module for layer in self._update_layers], t)
        if len(self._pending) >= self._flush_every:
            self.flush()

    def _settle_pending(self, train: bool) -> None:
        """Merge the step's eval-mode forwards with grad enabled into the TRAIN bucket (``train``:
        a backward reached them) or, forward moments (in, out) only, into the EVAL bucket. Exact:
        sums add, maxima max, as for two batches."""
        if not self._pending_seen:
            return
        dst_mode = TRAIN if train else EVAL
        slots = ("in", "out", "grad_out", "grad_in") if train else ("in", "out")
        src, dst = self._acc[_PENDING], self._acc[dst_mode]
        if self._recording(dst_mode) and len(src):
            for layer in self._layers:
                sites, into = layer.sites[_PENDING], layer.sites[dst_mode]
                for slot in slots:
                    i = sites.get(slot)
                    if i is None or not src.fired(i):
                        continue
                    j = into.get(slot)
                    if j is None:
                        j = into[slot] = dst.site((layer.idx, slot), src.channels[i], src.device)
                    if dst.channels[j] != src.channels[i]:
                        self._warn_once(layer.name, "channels", f"Probe: layer {layer.name!r} {slot} has "
                                        f"{src.channels[i]} channels, {dst.channels[j]} before; the tensor is "
                                        "not recorded")
                        continue
                    dst.add_site(j, src, i)
                layer.fires[dst_mode] += layer.fires[_PENDING]
                if layer.running[dst_mode] is None:
                    layer.running[dst_mode] = layer.running[_PENDING]
            self._root_calls[dst_mode] += self._root_calls[_PENDING]
        if train:
            self._grad_hooks += self._pending_hooks
            self._grads_seen += self._pending_grads
        self._reset(_PENDING)

    def _reset(self, mode: str) -> None:
        self._acc[mode].reset()
        for layer in self._layers:
            layer.reset(mode)
        self._root_calls[mode] = 0
        if mode == _PENDING:
            self._pending_hooks = self._pending_grads = 0
            self._pending_seen = False
        if mode == TRAIN:
            self._grad_hooks = self._grads_seen = 0
            self._gcache.clear()
            self._cache.clear()

    def _warn_once(self, name: str, kind: str, message: str) -> None:
        if (name, kind) not in self._warned:
            self._warned.add((name, kind))
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    def _check_fires(self, t: int) -> None:
        active = [layer for layer in self._layers if layer.active]
        never = [layer.name for layer in active if not layer.fires[TRAIN] and not layer.recomputed
                 and (layer.name, "never") not in self._warned]
        if never:
            self._warned.update((n, "never") for n in never)
            warnings.warn(
                f"Probe: {len(never)} probed layer(s) never fired during training step {t}: "
                f"{', '.join(never[:20])}{', ...' if len(never) > 20 else ''}. They are not called in "
                "the forward, are called through module.forward() directly (which skips hooks), or the "
                "model was torch.compile'd and run before the probe was attached", RuntimeWarning,
                stacklevel=3)
        calls = self._root_calls[TRAIN]
        for layer in active:
            if layer.recomputed:
                self._warn_once(layer.name, "twice", (
                    f"Probe: layer {layer.name!r} fired again during backward at step {t} ({layer.recomputed} "
                    "time(s)): activation checkpointing recomputes its forward; recomputations are not "
                    "recorded"))
            elif calls and layer.fires[TRAIN] > calls:
                self._warn_once(layer.name, "twice", (
                    f"Probe: layer {layer.name!r} fired {layer.fires[TRAIN]} times in step {t} for {calls} "
                    "forward(s) of the model: it is called more than once per forward (its calls are "
                    "merged into one record), or its forward is recomputed (activation checkpointing)"))

    def _schema(self, rows: list[tuple], index: list[int] | None, device) -> tuple[Schema, Tensor | None]:
        key = (tuple(rows), None if index is None else tuple(index))
        hit = self._schemas.get(key)
        if hit is None:
            idx = torch.tensor(index, dtype=torch.long).to(device) if index else None
            hit = self._schemas[key] = (Schema(key[0]), idx)
            if len(self._schemas) > 64:
                self._schemas.pop(next(iter(self._schemas)))
        return hit

    def _close_mode(self, mode: str, *, loss=None, lr=None, reset: bool = True) -> Record | None:
        """Statistics of the open step of ``mode`` as a Record (None if nothing fired)."""
        acc = self._acc[mode]
        fired = any(acc.counts)
        if mode == TRAIN and self._world > 1 and len(acc):
            self._check_layout(acc)
            acc.all_reduce_(self._group)
        rows: list[tuple] = []
        index: list[int] = []
        values: list[Tensor] = []
        summary = acc.summary() if fired else None
        for layer in self._layers:
            sites = layer.sites[mode]
            for slot, prefix, names in (("in", "in.", layer.in_q), ("out", layer.out_prefix, layer.out_q),
                                        ("grad_out", "grad_out.", layer.grad_out_q),
                                        ("grad_in", "grad_in.", ["var"] if layer.grad_in else [])):
                i = sites.get(slot)
                if i is None or not names or not acc.fired(i):
                    continue
                for name in names:
                    rows.append((layer.name, layer.depth, layer.module_type, prefix + name))
                    index.append(i * _NCOL + _COL[name])
        extra_rows: list[tuple] = []
        self._next_gi: dict[int, Tensor] = {}
        for layer in self._layers:
            for name, value in self._extras(layer, mode, acc):
                extra_rows.append((layer.name, layer.depth, layer.module_type, name))
                values.append(value)
        host_rows: list[tuple] = []
        host_values: list[float] = []
        if mode == TRAIN and loss is not None and self._world > 1 and "loss" in self._quantities:
            loss = torch.as_tensor(loss).detach().to(acc.device or "cpu", _F64).mean()
            dist.all_reduce(loss, op=dist.ReduceOp.SUM, group=self._group)
            loss = loss / self._world  # the global loss: mean of the rank losses
        if mode == TRAIN:
            for name, v in (("loss", loss), ("lr", lr)):
                if v is None or name not in self._quantities:
                    continue
                if isinstance(v, Tensor):
                    extra_rows.append(("", -1, "", name))
                    values.append(v.detach().to(_F64).mean())
                else:
                    host_rows.append(("", -1, "", name))
                    host_values.append(float(v))
        # w.update_ratio of every weighted layer in one batched computation (varprobe.probe.updates)
        update_rows: list[tuple] = []
        updates = None
        if mode == TRAIN and self._update_layers:
            updates = self._updates.ratios([layer.module for layer in self._update_layers], self._t)
            update_rows = [(layer.name, layer.depth, layer.module_type, "w.update_ratio")
                           for layer in self._update_layers]
        record = None
        if rows or extra_rows or host_rows or update_rows:
            device = acc.device or (values[0].device if values else updates.device if updates is not None
                                    else torch.device("cpu"))
            schema, idx = self._schema(rows + extra_rows + update_rows, index, device)
            parts = [summary.flatten()[idx]] if idx is not None else []
            if values:  # 0-d statistics of weights, gradients, norms and the loss
                parts.append(torch.stack([v.to(device, _F64) for v in values]))
            if updates is not None:  # w.update_ratio, float64, one per weighted layer
                parts.append(updates.to(device))
            record = Record(self._t, mode, schema, torch.cat(parts) if parts else None,
                            Schema(tuple(host_rows)) if host_rows else None, host_values)
        for layer in self._layers:  # only now that nothing can fail: the step's state moves on
            if layer.idx in self._next_gi:
                layer.prev_gi = self._next_gi[layer.idx]
        if reset:
            self._reset(mode)
        return record

    def _extras(self, layer: _Layer, mode: str, acc: Moments) -> list[tuple[str, Tensor]]:
        """Weight, kernel, gradient, BatchNorm and norm statistics of one layer for the step."""
        out: list[tuple[str, Tensor]] = []
        sites = layer.sites[mode]
        if layer.bn_q and layer.running[mode] is not None and sites.get("in") is not None \
                and acc.fired(sites["in"]):
            i = sites["in"]
            s, q = acc.channel_sums(i)
            n = acc.count(i)
            mu_b = s / n
            var_b = (q / n - mu_b * mu_b).clamp_min(0.0)
            rm, rv = (r.to(_F64) for r in layer.running[mode])
            eps = layer.module.eps
            if "bn.mean_gap" in layer.bn_q:
                out.append(("bn.mean_gap", ((mu_b - rm).abs() / (rv + eps).sqrt()).mean()))
            if "bn.var_ratio" in layer.bn_q:
                out.append(("bn.var_ratio", (var_b / rv).mean()))
        if mode != TRAIN:
            return out
        m = layer.module
        for name in layer.norm_q:
            p = m.weight if name == "norm.weight_mean" else m.bias
            out.append((name, p.detach().to(_F64).mean()))
        if not layer.weighted or not (layer.w_q or layer.k_q or layer.gw_q or layer.dec_q):
            return out
        with torch.no_grad():
            raw, kernel = _weights(m)
            if layer.w_q:
                st = filter_stats(raw)
                out += [(f"w.{k}", st[j]) for j, k in enumerate(FILTER_STATS)
                        if f"w.{k}" in layer.w_q]
            if layer.k_q and kernel is not None:
                st = filter_stats(kernel)
                out += [(f"k.{k}", st[j]) for j, k in enumerate(FILTER_STATS)
                        if f"k.{k}" in layer.k_q]
                if "k.alpha_mean" in layer.k_q:
                    out.append(("k.alpha_mean", m.alpha.detach().to(_F64).mean()))
                if "k.shrink" in layer.k_q:
                    out.append(("k.shrink", m.shrink().to(_F64).mean()))
            if layer.dec_q:
                out += self._decomposition(layer, acc, kernel if kernel is not None else raw)
            grad = raw.grad
            if layer.gw_q and grad is not None and layer.fires[TRAIN]:
                gi, st = grad_shift_stats(grad)
                for j, k in enumerate(("gw.avg_abs", "gw.rms", "gw.shift_ratio")):
                    if k in layer.gw_q:
                        out.append((k, st[j]))
                # Average gradients that are zero up to rounding (PWS) have no sign or correlation.
                rms_i = grad.detach().flatten(1).to(_F64).square().mean(1).sqrt()
                signal = ~within_rounding(gi, rms_i, grad.dtype).all()
                if "gw.sign_persistence" in layer.gw_q and layer.prev_gi is not None \
                        and layer.prev_gi.shape == gi.shape:
                    out.append(("gw.sign_persistence",
                                torch.where(signal, sign_persistence(gi, layer.prev_gi), torch.nan)))
                self._next_gi[layer.idx] = gi  # becomes layer.prev_gi once the step's record is built
                if layer.bias_corr:
                    i_in, i_g = sites.get("in"), sites.get("grad_out")
                    if i_in is not None and i_g is not None and acc.fired(i_in) and acc.fired(i_g):
                        s_in, _ = acc.channel_sums(i_in)
                        mu = s_in.sum() / (acc.count(i_in) * acc.channels[i_in])
                        db, q = acc.channel_sums(i_g)
                        if db.shape == gi.shape:
                            # A channel sum within rounding of zero carries no signal (a conv
                            # followed by BatchNorm in training mode has sum dL/dy_i = 0 exactly).
                            ok = signal & ~within_rounding(db, (acc.count(i_g) * q).sqrt(), grad.dtype).all()
                            out.append(("gw.bias_corr", torch.where(ok, correlation(gi, mu * db), torch.nan)))
        return out

    def _decomposition(self, layer: _Layer, acc: Moments, kernel: Tensor) -> list[tuple[str, Tensor]]:
        """dec.*: the step's output second moment without bias, and its i.i.d., filter-sum and
        remaining parts (``varprobe.stats.second_moment_parts``) from the step's input moments."""
        sites = layer.sites[TRAIN]
        i_in, i_out = sites.get("in"), sites.get("out")
        if i_in is None or i_out is None or not (acc.fired(i_in) and acc.fired(i_out)):
            return []
        s_in, q_in = acc.channel_sums(i_in)
        n_in = acc.count(i_in) * acc.channels[i_in]
        mean = s_in.sum() / n_in
        var = (q_in.sum() / n_in - mean * mean).clamp_min(0.0)
        s, q = acc.channel_sums(i_out)
        n = acc.count(i_out)
        bias = layer.module.bias
        b = bias.detach().to(_F64) if isinstance(bias, Tensor) else torch.zeros((), dtype=_F64, device=s.device)
        # E[(y_c - b_c)^2] >= 0 per channel: clamped at 0 against the cancellation of its three terms
        measured = (q / n - 2 * b * s / n + b * b).clamp_min(0.0).mean()
        if layer.overlap is None or layer.overlap[0] != layer.in_size:
            layer.overlap = (layer.in_size, _tap_overlap(layer.module, layer.in_size).to(s.device))
        iid, shift = second_moment_parts(kernel, layer.overlap[1], mean, var)
        iid, shift = iid.mean(), shift.mean()
        parts = {"dec.measured": measured, "dec.iid": iid, "dec.shift": shift, "dec.rest": measured - iid - shift}
        return [(k, parts[k]) for k in layer.dec_q]

    def _check_layout(self, acc: Moments) -> None:
        signature = acc.signature()
        if self._layout_checked == signature:  # checked once per layout (new sites: again)
            return
        mine = torch.tensor(signature, dtype=torch.long)
        if acc.device is not None and acc.device.type != "cpu" and dist.get_backend(self._group) == "nccl":
            mine = mine.to(acc.device)
        everyone = [torch.zeros_like(mine) for _ in range(self._world)]
        dist.all_gather(everyone, mine, group=self._group)
        sigs = [tuple(e.tolist()) for e in everyone]
        if len(set(sigs)) > 1:
            raise RuntimeError(f"Probe: ranks recorded different layers (sites, channels, layout hash per "
                               f"rank: {sigs}); every rank must run the same probed layers in the same order")
        self._layout_checked = signature

    # -- output ------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Transfer the buffered steps to the host (one copy) and write them (``out``) or keep them."""
        if not self._pending:
            return
        records, self._pending = self._pending, []
        frame = records_to_frame(records)
        self._note_collapse(frame)
        if self._writer is not None:
            self._writer.append(frame)
        elif self._out is None:
            self._frames.append(frame)

    def _note_collapse(self, frame: pd.DataFrame) -> None:
        if self._collapsed_step is not None or frame.empty:
            return
        q, v = frame["quantity"], frame["value"]
        bad = ((q == "loss") & ~v.map(math.isfinite)) | (q.str.endswith("nonfinite") & (v > 0))
        if bad.any():
            self._collapsed_step = int(frame.loc[bad, "step"].min())
            if self._writer is not None:
                self._writer.update_meta(collapsed_step=self._collapsed_step)

    def frame(self) -> pd.DataFrame:
        """The table so far: columns step, layer, depth, mode, module_type, quantity, value.

        Flushes first. Eval forwards of the open step are included without closing it. With
        ``out``, the table is read back from the run directory on rank 0; other ranks, which do
        not write, keep nothing and return only the open step's eval rows."""
        self.flush()
        parts = []
        if self._out is not None and self._writer is not None:
            from ..record import load_run
            parts.append(load_run(self._out).frame)
        else:
            parts += self._frames
        preview = self._close_mode(EVAL, reset=False) if self._acc[EVAL].device is not None else None
        if preview is not None:
            parts.append(records_to_frame([preview]))
        parts = [p for p in parts if len(p)]
        if not parts:
            return empty_frame()
        return pd.concat(parts, ignore_index=True)

    def save(self, path: str | os.PathLike, *, overwrite: bool = False, status: str | None = None) -> None:
        """Write the whole table so far to a new run directory (``meta.json`` + one Parquet chunk).
        Only rank 0 writes."""
        if self._rank != 0:
            return
        from ..record import RunWriter
        frame = self.frame()
        writer = RunWriter(path, self._config(), overwrite=overwrite)
        try:
            writer.append(frame)
        except BaseException:
            writer.close("failed")
            raise
        if status is None:
            status = "collapsed" if self._collapsed_step is not None else "finished"
        fields = {"collapsed_step": self._collapsed_step} if self._collapsed_step is not None else {}
        writer.close(status, **fields)

    def _config(self) -> dict:
        spec = self._layers_spec
        probe = {"layers": None if spec is None else repr(spec), "every": repr(self._schedule),
                 "quantities": sorted(self._quantities), "modes": list(self._modes),
                 "flush_every": self._flush_every, "n_layers": len(self.layers),
                 "world_size": self._world, "model": type(self.model).__name__, "fused": self._fused}
        return {**self._meta, "probe": probe}
