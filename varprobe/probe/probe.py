"""``Probe``: per-layer variance, average-gradient shift and weight statistics during training."""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

import pandas as pd
import torch
import torch.distributed as dist
from torch import Tensor, nn

from .buffers import Moments
from .closing import close_mode, drop_skipped
from .hooks import Hooks
from .params import ParamStats
from .plan import EVAL, MODES, TRAIN, LayerPlan
from .quantities import resolve_quantities
from .schedule import as_schedule
from .select import DEFAULT_BLOCKS, select, unwrap
from .sink import ParquetSink, deliver
from .table import Record, collapse_step, empty_frame, records_to_frame

__all__ = ["Probe"]


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

    How: what each module records is planned once, when the probe is created
    (``varprobe.probe.plan``). Forward hooks reduce each probed tensor on its device, once (a tensor
    that is one layer's output and the next one's input is read once), to per-channel sums and
    root sums of squares in float64; ``Tensor.register_hook`` on outputs (and inputs that require
    grad) does the same for gradients, so in-place ops after a probed layer work. Hooks only launch
    those reductions (``varprobe.probe.hooks``); :meth:`step` adds them into preallocated float64
    accumulators and computes the parameter statistics of all layers together, in a fixed number
    of batched kernels (``varprobe.probe.params``). Nothing syncs with the host until a flush,
    which copies every buffered step in one transfer; memory does not depend on the batch size and
    no activation is kept. Layer hooks are registered only around recorded steps (and single eval
    forwards), so a step that is not recorded runs the bare model plus two root hooks.

    Gradient accumulation: every training forward and backward between two :meth:`step` calls
    belongs to that step. Moments merge exactly over all of them, each micro-batch counted once:
    a step's ``out.var`` is the variance over the concatenation of its micro-batches' outputs,
    ``grad_out.*`` over the concatenation of each micro-batch's dL_k/dy (L_k the loss that
    micro-batch backpropagated), and ``gw.*`` are those of the accumulated ``.grad``.

    AMP: pass ``scaler=`` (a ``torch.amp.GradScaler``) to :meth:`step`. Gradients seen by the hooks
    and ``.grad`` are multiplied by the loss scale S; the probe divides first moments (sums,
    ``gw.avg_abs``, ``gw.rms``) by S and second moments by S^2 on the device, so every gradient
    statistic is that of the unscaled loss (ratios are unchanged). A step whose gradients hold an
    inf or NaN in any model parameter (the steps the scaler skips) is recorded with
    ``amp.skipped`` = 1 and its gradient rows (``grad_out.*``, ``grad_in.*``, ``gw.*``) are dropped
    at the flush (found on the device; no sync in ``step()``); its forward and weight rows stay.
    The next step's ``gw.sign_persistence`` compares with the last step not skipped. Under
    ``torch.autocast`` (bf16/fp16 activations) every sum is accumulated in float64 (rows of large
    tensors in float32 first); an overflow shows as ``out.nonfinite`` and never reaches training.

    Modes: forwards of modules in training mode with grad enabled are "train"; forwards in eval
    mode or under ``torch.no_grad()`` / ``inference_mode()`` are "eval", recorded apart (forward
    quantities only) whenever they run, stamped with the current step, i.e. the number of
    completed ``step()`` calls (the eval forwards that follow step k's update see the weights that
    step k + 1's training forward sees). ``modes=("train",)`` disables eval recording.

    Schedule: ``every`` is an int k (record steps 0, k, 2k, ...) or a callable step -> bool, e.g.
    :func:`~varprobe.probe.log_schedule`. Layer hooks are attached for recorded steps only.
    Forwards are seen through the root module: eval forwards of a submodule called directly
    (``model.features(x)``) on a step that is not recorded are not recorded.

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

    ``torch.compile``: create and attach the probe before compiling, with ``persistent_hooks=True``
    unless every step is recorded (compiled code does not see hooks added or removed after it was
    compiled); hooks run eagerly (graph breaks at probed layers), so probed values equal eager
    ones. A module that is already compiled is refused with a ValueError.

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
        out: Run directory to stream to (``meta.json`` + Parquet chunks): the default sink,
            :class:`~varprobe.probe.sink.ParquetSink`.
        sinks: More callables that receive each flushed table (``varprobe.probe.sink``), after
            the run directory; one that raises does not lose what the run directory got, and
            the error (:class:`~varprobe.probe.sink.SinkError`) names it. Rank 0 only.
        flush_every: Recorded steps buffered on the device between transfers (and chunks on disk).
        meta: Run configuration stored in ``meta.json`` (scheme, lr, batch_size, seed, ...).
        overwrite: Replace an existing run directory ``out``.
        process_group: The group to reduce over (default: the world, when initialized).
        fused: Read each probed tensor once with a ``torch.compile``'d kernel that produces row
            sums, sums of squares and maxima together (``varprobe.stats.fused_channel_sums``)
            instead of two or three eager reductions. Compiles at the first probed forward
            (needs a C++ compiler on CPU); falls back to eager reductions with a warning.
        persistent_hooks: Keep layer hooks registered between recorded steps (for torch.compile).
    """

    def __init__(self, model: nn.Module, layers=None, every: int | Callable[[int], bool] = 1, *,
                 quantities: str | Iterable[str] = "all", modes: Iterable[str] = MODES,
                 blocks: Mapping[type, str | None] | None = None, out: str | os.PathLike | None = None,
                 flush_every: int = 50, meta: dict | None = None, overwrite: bool = False,
                 process_group=None, fused: bool = False, sinks: Sequence[Callable] = (),
                 persistent_hooks: bool = False) -> None:
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
        self._extra_sinks = list(sinks)
        for s in self._extra_sinks:
            if not callable(s):
                raise TypeError(f"sinks entries must be callables that take a DataFrame, got {s!r}")
        self._flush_every = flush_every
        self._blocks = {**DEFAULT_BLOCKS, **(blocks or {})}
        self._layers_spec = layers
        self._layers = [LayerPlan(i, t, self._quantities) for i, t in enumerate(select(self.model, layers, self._blocks))]
        self._out = os.fspath(out) if out is not None else None
        self._meta = dict(meta or {})
        self._overwrite = overwrite
        self._fused = bool(fused)
        self._persistent = bool(persistent_hooks)

        self._group = process_group
        distributed = dist.is_available() and dist.is_initialized()
        self._world = dist.get_world_size(process_group) if distributed else 1
        self._rank = dist.get_rank() if distributed else 0
        self._layout_checked: tuple | None = None

        self._hooks = Hooks(self.model, self._layers, self._fused)
        self._hooks.warn = self._warn_once
        self._hooks.rec_train = TRAIN in modes and bool(self._schedule(0))
        self._hooks.rec_eval = EVAL in modes
        self._params = ParamStats(self._layers)
        self._t = 0
        self._warned: set[tuple[str, str]] = set()
        self._pending: list[Record] = []
        self._frames: list[pd.DataFrame] = []
        self._sinks: list = []
        self._writer: ParquetSink | None = None
        self._closed = False
        self._collapsed_step: int | None = None
        self._cache: dict[tuple, Any] = {}
        self._amp = False  # whether a step had a GradScaler (its flushes look for skipped steps)

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
        return self._hooks.attached

    @property
    def _acc(self) -> dict[str, Moments]:
        return self._hooks.acc

    @property
    def _force_train(self) -> bool:  # spp(): no_grad forwards of a model in train mode are "train"
        return self._hooks.force_train

    @_force_train.setter
    def _force_train(self, value: bool) -> None:
        self._hooks.force_train = value

    @property
    def nbytes(self) -> int:
        """Device bytes the probe holds: accumulators and steps buffered since the last flush.
        O(layers x quantities x buffered steps); it does not depend on the batch size, and no
        activation is kept."""
        held = sum(a.nbytes() for a in self._hooks.acc.values())
        return held + sum(r.values.numel() * r.values.element_size() for r in self._pending if r.values is not None)

    def __repr__(self) -> str:
        return (f"Probe({type(self.model).__name__}, {len(self.layers)} layers, every={self._schedule!r}, "
                f"step={self._t}, attached={self.attached})")

    # -- attach / remove ---------------------------------------------------------------------------
    def attach(self) -> "Probe":
        """Register the hooks. Idempotent: attaching an attached probe does nothing."""
        if self._hooks.attached:
            return self
        if self._closed and self._out is not None:
            raise RuntimeError(f"this Probe was closed and its run {self._out} finalized; "
                               "create a new Probe to record more")
        unwrap(self.model)  # refuse a model compiled since the probe was created
        if self._rank == 0 and not self._sinks:
            if self._out is not None:
                self._writer = ParquetSink(self._out, self._config(), overwrite=self._overwrite)
            self._sinks = ([self._writer] if self._writer else []) + self._extra_sinks
        self._hooks.attach()
        self._arm()
        return self

    def _arm(self) -> None:
        if self._persistent or self._hooks.rec_train:
            self._hooks.arm()
        else:
            self._hooks.disarm()

    def remove(self) -> None:
        """Remove every hook and flush recorded steps. The open step's training data is dropped;
        eval forwards of the open step stay pending (in :meth:`frame`, closed by the next
        ``step()`` or :meth:`close`). The probe can be attached again."""
        self._hooks.remove()
        self.flush()

    def close(self, status: str | None = None, **fields: Any) -> None:
        """Close the open eval step, flush, and finalize the run directory and sinks (status
        "finished", or "collapsed" if a non-finite loss or activation was recorded). Idempotent."""
        if self._closed:
            return
        self.remove()
        rec = self._close_mode(EVAL, reset=True)
        if rec is not None:
            self._pending.append(rec)
        try:
            self.flush()
        finally:
            self._closed = True
            if status is None:
                status = "collapsed" if self._collapsed_step is not None else "finished"
            deliver(self._sinks, "close", status, **fields)

    def __enter__(self) -> "Probe":
        return self.attach()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.remove()
        finally:
            if self._out is not None or self._sinks:
                if exc_type is None:
                    self.close()
                else:
                    self.close("failed", error={"type": exc_type.__name__, "message": str(exc)[:2000]})

    # -- step --------------------------------------------------------------------------------------
    def step(self, loss: Tensor | float | None = None, lr: float | Tensor | None = None, *,
             scaler: torch.amp.GradScaler | None = None) -> None:
        """Close the current training step: read parameter gradients and weights if the step is
        recorded, then move to the next step. Call once per optimizer step, after
        ``loss.backward()`` (``scaler.scale(loss).backward()``) and before ``scaler.unscale_``,
        ``optimizer.step()`` / ``scaler.step(optimizer)`` and ``zero_grad()``.

        ``scaler``: the ``torch.amp.GradScaler`` whose scale multiplied the loss, or None; gradient
        statistics are then recorded unscaled and a skipped step as ``amp.skipped`` (class docstring).

        Raises:
            RuntimeError: called twice without a training forward in between, or, on a recorded
                step, after a training forward whose backward never ran.
            TypeError: ``scaler`` is not a GradScaler.
        """
        h, t = self._hooks, self._t
        if scaler is not None and not isinstance(scaler, torch.amp.GradScaler):
            raise TypeError(f"scaler must be a torch.amp.GradScaler or None, got {scaler!r}")
        self._amp = self._amp or scaler is not None
        fired = any(layer.fires[TRAIN] for layer in self._layers)
        if h.root_seen and h.root_calls[TRAIN] == 0 and not fired:
            raise RuntimeError(
                f"Probe.step() called twice without a training forward and backward in between "
                f"(step {t}); call it once per optimizer step, after loss.backward() and before "
                "optimizer.step()")
        if h.rec_train and h.attached and h.grad_hooks and not h.grads_seen:
            raise RuntimeError(
                f"Probe.step() called at step {t} after a training forward but before its backward; "
                "call loss.backward() first (Probe.step() reads gradients)")
        if h.rec_train and h.attached:
            self._check_fires(t)
            rec = self._close_mode(TRAIN, loss=loss, lr=lr, scaler=scaler)
            if rec is not None:
                self._pending.append(rec)
        else:
            h.reset(TRAIN)
        rec = self._close_mode(EVAL, reset=True)
        if rec is not None:
            self._pending.append(rec)
        self._t = h.t = t + 1
        h.rec_train = TRAIN in self._modes and bool(self._schedule(self._t))
        if h.attached:
            self._arm()
        if len(self._pending) >= self._flush_every:
            self.flush()

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
                "model was torch.compile'd and run before the probe was attached (or without "
                "persistent_hooks=True)", RuntimeWarning, stacklevel=3)
        calls = self._hooks.root_calls[TRAIN]
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

    def _close_mode(self, mode: str, *, loss=None, lr=None, scaler=None, reset: bool = True) -> Record | None:
        """Statistics of the open step of ``mode`` as a Record (None if nothing fired)."""
        return close_mode(self, mode, loss=loss, lr=lr, scaler=scaler, reset=reset)

    # -- output ------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Transfer the buffered steps to the host (one copy) and hand them to the sinks (the run
        directory ``out`` first), or keep them (no ``out``)."""
        if not self._pending:
            return
        records, self._pending = self._pending, []
        frame = records_to_frame(records)
        if self._collapsed_step is None:
            self._note_collapse(collapse_step(frame, records))
        if self._amp:
            frame = drop_skipped(frame)
        if self._out is None:
            self._frames.append(frame)
        deliver(self._sinks, None, frame)

    def _note_collapse(self, step: int | None) -> None:
        if step is not None:
            self._collapsed_step = step
            deliver(self._sinks, "update_meta", collapsed_step=step)

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
        h = self._hooks
        if h.acc[EVAL].device is not None or len(h.pending[EVAL]):
            preview = self._close_mode(EVAL, reset=False)
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

