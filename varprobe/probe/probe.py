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

from .blocks import FoundBlocks, check_blocks, find_blocks
from .checks import check_fires, check_options, check_step
from .closing import close_mode, drop_skipped
from .coverage import Coverage, coverage
from .hooks import Hooks
from .params import ParamStats
from .plan import EVAL, MODES, PENDING, TRAIN, make_plans
from .quantities import resolve_quantities
from .schedule import as_schedule
from .select import named_modules, select, unwrap
from .sink import ParquetSink, deliver, save_run
from .table import Record, collapse_step, empty_frame, finish, records_to_frame

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
    (``dec.*``, from moments already held: no extra read), the relative update size of each raw
    weight (``w.update_ratio``, from a device copy of the weights kept before a recorded step), BatchNorm batch vs running statistics
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
    When ``.grad`` was already unscaled before :meth:`step` (``scaler.unscale_(optimizer)`` for
    gradient clipping; Lightning and the Hugging Face Trainer do it before their optimizer-step
    hooks), pass ``grads_unscaled=True`` too: the ``.grad``-based statistics (``gw.*``) are then
    not divided again, while the tensor-hook ones (``grad_out.*``, ``grad_in.var``) still are.
    The next step's ``gw.sign_persistence`` compares with the last step not skipped. Under
    ``torch.autocast`` (bf16/fp16 activations) every sum is accumulated in float64 (rows of large
    tensors in float32 first); an overflow shows as ``out.nonfinite`` and never reaches training.

    Activation checkpointing (``torch.utils.checkpoint``): layers inside record as without it.
    Non-reentrant: the forward is recorded, its recomputation during backward is not. Reentrant
    (``use_reentrant=True``, whose first forward runs under no_grad): that forward is recorded as
    training (found from the call stack: ``CheckpointFunction.forward``), and the gradients are
    read from its recomputation. Another library's reentrant checkpoint is not recognized: its
    forwards are recorded as eval.

    Aborted forwards: a forward of the model that raises an Exception (in a hook, a shape error) is
    dropped: what the probe's hooks saw of it is forgotten when the exception leaves the root
    module (a warning says so, once), so a step records only forwards that completed, each with
    its backward. To drop a step's training forwards that completed but will not be
    backpropagated, call :meth:`discard_step`.

    Modes: forwards of modules in training mode with grad enabled are "train"; forwards in eval
    mode or under ``torch.no_grad()`` / ``inference_mode()`` are "eval", recorded apart (forward
    quantities only) whenever they run, stamped with the current step, i.e. the number of
    completed ``step()`` calls (the eval forwards that follow step k's update see the weights that
    step k + 1's training forward sees). ``modes=("train",)`` disables eval recording.

    Hooks of others: what the probe records of a module is the module's own output (what its
    ``forward`` returned) and the input its ``forward`` received, before any forward hook others
    registered on it, whenever and however they registered it (``prepend=True`` included): the
    probe's hook runs first among the module's forward hooks at every forward of the root, so a
    step records the same whatever ``every`` is and whenever other hooks were added. ``grad_out.*``
    is the gradient with respect to that own output. Global hooks
    (``torch.nn.modules.module.register_module_forward_hook``) run before every module's own hooks.

    Schedule: ``every`` is an int k (record steps 0, k, 2k, ...) or a callable step -> bool, e.g.
    :func:`~varprobe.probe.log_schedule`. Layer hooks are attached for recorded steps only.
    Steps are numbered from ``start_step`` (default 0) and the schedule is applied to those numbers:
    a run resumed at global step N passes ``start_step=N``, so its recorded steps are the trainer's.
    Forwards are seen through the root module: eval forwards of a submodule called directly
    (``model.features(x)``) on a step that is not recorded are not recorded.

    Depth (the ``depth`` column) comes from the dataflow, not from call order
    (``varprobe.probe.dataflow``): a conv or linear layer is one deeper than the deepest probed
    layer its output was computed from, any other layer (norm, block) as deep as that layer, and a
    layer computed from no probed layer is at 0; -1 is only for rows of no layer (loss, lr). So
    whenever B consumes A's output, depth(B) >= depth(A), strictly when B is a conv or linear
    layer, and parallel branches (Q, K, V) share a depth. It is read once from the autograd graph
    of the first recorded forward with a graph in which a layer runs (normally the first recorded
    training step) and then fixed; layers with no autograd history there (frozen and fed only by
    tensors that need no gradient), runs with no graph before their first rows (eval-only), and
    modules called at several depths (shared weights: the deepest) are placed as documented there,
    with a warning. A step's rows come in the order of the layers' first calls.

    Residual blocks: every ``varprobe.layers.ResidualBlock`` (and every module of a type in
    ``blocks``, a mapping type -> name of its branch child or None) records its output as
    ``block.out.*`` and its branch's output as ``branch.out.*``, under the block's name. With
    ``layers=None``, repeated modules (two or more children of one type with parameters in a
    ``ModuleList``/``Sequential``: Hugging Face ``BertLayer``, ``ViTLayer``, ``GPT2Block``,
    ``nn.TransformerEncoderLayer``, the blocks of a stage) are found too and record
    ``block.out.*`` once a forward shows that their output adds their input
    (``varprobe.probe.blocks``); a repeated module without that add records nothing and is not in
    :attr:`layers`; ``blocks=False`` turns the search off. Elsewhere, put a
    :class:`~varprobe.probe.Tap` on the add, or pass ``blocks={MyBlock: "branch"}``.

    What is probed, and roles: the layout of each module's type (``varprobe.layouts``; add
    one with ``varprobe.register_layout``) says what it records and its role, stored with every
    row (column ``role``: conv, conv_transpose, linear, attention, embedding, norm, block, other;
    ``""`` for loss and lr). By default every module with a layout, every residual block and Tap,
    and every other leaf module with trainable parameters (role "other": input, output, their
    gradients and whole-tensor weight statistics) is probed. ``w.*`` and ``gw.*`` are per filter
    (output unit) on the layout's filter axis: rows of a Linear, output channels of a conv and of a
    transposed conv (whose weight is ``[in, out/groups, *k]``), columns of an Embedding.
    :attr:`coverage` says where each trainable parameter is recorded, or why it is not; the first
    :meth:`attach` warns once, listing what is not fully recorded.

    Attention (``nn.MultiheadAttention`` named ``attn``): the module's own rows (layer ``attn``):
    ``in.*`` (the query), ``out.*`` (the attention output, first element of its tuple), ``grad_out.*``
    and ``grad_in.var``; and per projection, layers ``attn.q``, ``attn.k``, ``attn.v`` (rows
    [0:E], [E:2E], [2E:3E] of ``in_proj_weight``, or ``q_proj_weight``, ``k_proj_weight``,
    ``v_proj_weight`` when kdim/vdim differ) and ``attn.out_proj``: ``w.*``, ``gw.*`` and
    ``w.update_ratio`` (role "attention", depth that of ``attn``). Not recorded: forward statistics
    of Q, K and V and of the attention weights, which ``F.multi_head_attention_forward`` computes
    inside one call (and the fused fast path of eval forwards, ``torch._native_multi_head_attention``,
    inside one kernel), where no hook sees them; computing them again in a hook would cost three
    matmuls per forward. The attention module's own rows are recorded on the fused fast path too
    (its hook sees its output). ``nn.TransformerEncoderLayer`` turns its own fused fast path (eval,
    no_grad) off while any module inside it has a forward hook: the forwards the probe records
    (layer hooks armed) run its regular path, the same math; forwards it does not record (hooks
    disarmed, ``modes=("train",)``) run as without the probe. Models with separate projection modules (Hugging
    Face BERT and ViT ``query``, ``key``, ``value``) record them as the Linear layers they are,
    forward statistics included.

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
        layers: Which modules: None for every module with a layout (conv, transposed conv, linear,
            embedding, attention, norm), residual block, Tap and other leaf module with trainable
            parameters; or a glob on module names, an exact name, a module type, a module, a
            callable (name, module) -> bool, or a list of these (see ``varprobe.probe.select``).
        every: Positive int or schedule callable.
        quantities: "all" (default), "forward" (output statistics only, plus loss and lr),
            "causes" (what the competing causes of collapse need, ``varprobe.probe.PRESETS``), or an
            iterable of quantity names and globs ("out.*", "gw.shift_ratio", ...).
        modes: Subset of ("train", "eval").
        blocks: Extra residual block types -> branch child name, added to the registered blocks
            (``ResidualBlock``: "branch"); False: no search for repeated residual blocks.
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
        start_step: The number of the first step (a non-negative int): :meth:`step` counts on from
            it, e.g. the global step a training run resumed from.
    """

    def __init__(self, model: nn.Module, layers=None, every: int | Callable[[int], bool] = 1, *,
                 quantities: str | Iterable[str] = "all", modes: Iterable[str] = MODES,
                 blocks: Mapping[type, str | None] | bool | None = None, out: str | os.PathLike | None = None,
                 flush_every: int = 50, meta: dict | None = None, overwrite: bool = False,
                 process_group=None, fused: bool = False, sinks: Sequence[Callable] = (),
                 persistent_hooks: bool = False, start_step: int = 0) -> None:
        if isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 0:
            raise ValueError(f"start_step must be a non-negative int, got {start_step!r}")
        self.model = unwrap(model)
        self._schedule = as_schedule(every)
        self._quantities = resolve_quantities(quantities)
        self._modes, self._flush_every, self._extra_sinks = check_options(modes, flush_every, sinks)
        self._blocks = dict(check_blocks(blocks))
        self._layers_spec = layers
        targets = select(self.model, layers, self._blocks)
        found = find_blocks(self.model, targets) if layers is None and blocks is not False else []
        if found:
            order = {id(m): i for i, (_, m) in enumerate(named_modules(self.model))}
            targets = sorted(targets + found, key=lambda t: order.get(id(t.module), -1))  # stable
        self._layers = make_plans(targets, self._quantities)
        self._coverage = coverage(self.model, targets, layers)
        self._coverage_warned = False
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
        found_ids = {id(t) for t in found}
        self._hooks.flow.blocks = FoundBlocks([p for p, t in zip(self._layers, targets) if id(t) in found_ids],
                                              self._warn_once)
        self._hooks.flow.update_tracing()
        self._hooks.rec_train = TRAIN in modes and bool(self._schedule(start_step))
        self._hooks.rec_eval = EVAL in modes
        self._params = ParamStats(self._layers)
        self._t = self._hooks.t = start_step
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
        """Names of the probed layers (a block appears once even with its branch hooked; a found
        repeated module only once a forward showed its residual add)."""
        listed = self._hooks.flow.blocks.listed
        return list(dict.fromkeys(layer.name for layer in self._layers if listed(layer)))

    @property
    def quantities(self) -> list[str]:
        """The quantities this probe records (where they apply)."""
        return sorted(self._quantities)

    @property
    def current_step(self) -> int:
        """Index of the step in progress: the number of completed ``step()`` calls."""
        return self._t

    attached = property(lambda self: self._hooks.attached)

    @property
    def coverage(self) -> Coverage:
        """Where every trainable parameter of the model is accounted for, decided with the plan
        (``varprobe.probe.coverage``): recorded by a layout, recorded whole (a leaf module of a type
        without a layout), or not recorded and why. ``str(probe.coverage)`` is the report; the
        first :meth:`attach` warns once about what is not fully recorded (except what ``layers=``
        left out)."""
        return self._coverage

    @property
    def _force_train(self) -> bool:  # spp(): no_grad forwards of a model in train mode are "train"
        return self._hooks.force_train

    @_force_train.setter
    def _force_train(self, value: bool) -> None:
        self._hooks.force_train = value

    @property
    def nbytes(self) -> int:
        """Device bytes the probe holds: accumulators and steps buffered since the last flush.
        O((layers x quantities + probed channels) x buffered steps: a step keeps its raw reductions
        until the flush derives its rows); it does not depend on the batch size, and no
        activation is kept."""
        held = sum(a.nbytes() for a in self._hooks.acc.values())
        held += self._params.updates.nbytes  # w.update_ratio snapshots
        return held + sum(r.nbytes for r in self._pending)

    def __repr__(self) -> str:
        return f"Probe({type(self.model).__name__}, {len(self.layers)} layers, step={self._t}, attached={self.attached})"

    # -- attach / remove ---------------------------------------------------------------------------
    def attach(self) -> "Probe":
        """Register the hooks, open the sinks (``open(config)`` where a sink has it: one that
        cannot take the run raises :class:`~varprobe.probe.sink.SinkError` naming it) and create
        the run directory ``out``; all or nothing. Idempotent: attaching an attached probe does nothing."""
        if self._hooks.attached:
            return self
        if self._closed and self._out is not None:
            raise RuntimeError(f"this Probe was closed and its run {self._out} finalized; "
                               "create a new Probe to record more")
        unwrap(self.model)  # refuse a model compiled since the probe was created
        try:  # all or nothing: hooks, then the run directory; on any failure, none of them
            self._hooks.attach()
            self._arm()
            sinks = self._extra_sinks if self._rank == 0 else []
            deliver(sinks, "open", self._config())  # a sink that cannot take the run: before the run exists
            if self._rank == 0 and self._out is not None and self._writer is None:
                self._writer = ParquetSink(self._out, self._config(), overwrite=self._overwrite)
            self._sinks = sinks
        except BaseException:
            self._hooks.remove()
            raise
        text = None if self._coverage_warned else self._coverage.warning()
        self._coverage_warned = True
        if text is not None:
            warnings.warn(text, RuntimeWarning, stacklevel=2)
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
        self._params.updates.clear()  # w.update_ratio: updates made while detached are not seen
        self.flush()

    def close(self, status: str | None = None, **fields: Any) -> None:
        """Close the open eval step, flush, and finalize the run directory and sinks (status
        "finished", or "collapsed" if a non-finite loss or activation was recorded). Idempotent.

        If closing fails (a write error, a bad ``status``), the run is marked "failed" with that
        error, its lock is released and the error is raised."""
        if self._closed:
            return
        try:
            self.remove()
            self._hooks.settle(train=False, recording=self._hooks.rec_eval)  # no step() will settle them
            rec = close_mode(self, EVAL, reset=True)
            if rec is not None:
                self._pending.append(rec)
            self.flush()
            self._closed = True
            if status is None:
                status = "collapsed" if self._collapsed_step is not None else "finished"
            if self._writer is not None:  # the run directory's own errors reach the user unchanged
                self._writer.close(status, **fields)
            deliver(self._sinks, "close", status, **fields)
        except BaseException as exc:
            self._abort(exc)
            raise

    def _abort(self, exc: BaseException) -> None:
        """After a failure inside or around the probe: remove the hooks, write the steps already
        closed if possible, mark the run "failed" with ``exc`` and release its lock. Never raises,
        so ``exc`` is what reaches the user; a further problem on the way is added as a note."""
        notes = []
        self._hooks.remove()
        try:
            self.flush()
        except Exception as err:
            notes.append(f"writing the recorded steps failed: {err!r}")
        if self._writer is not None and not self._writer.writer.closed:
            error = {"type": type(exc).__name__, "message": str(exc)[:2000]}
            try:
                self._writer.close("failed", error=error)  # releases the lock even if meta.json fails
            except Exception as err:
                notes.append(f"marking the run {self._out} as failed failed: {err!r}")
        for sink in self._sinks:
            close = getattr(sink, "close", None)
            if close is not None:
                try:
                    close("failed", error={"type": type(exc).__name__, "message": str(exc)[:2000]})
                except Exception as err:
                    notes.append(f"closing sink {sink!r} failed: {err!r}")
        if self._out is not None or self._sinks:
            self._closed = True
        for note in notes:
            exc.add_note(f"varprobe.Probe: {note}")

    def __enter__(self) -> "Probe":
        return self.attach()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Remove the hooks; with ``out`` (or sinks), close the run. If the body raised, or the
        probe fails here, the run is marked "failed" with that error, the lock is released and the
        error propagates unchanged (nothing raised on the way out hides it)."""
        if exc is not None:
            self._abort(exc)
            return
        try:
            self.remove()
            if self._out is not None or self._sinks:
                self.close()
        except BaseException as err:
            self._abort(err)
            raise

    # -- step --------------------------------------------------------------------------------------
    def step(self, loss: Tensor | float | None = None, lr: float | Tensor | None = None, *,
             scaler: torch.amp.GradScaler | None = None, grads_unscaled: bool = False) -> None:
        """Close the current training step: read parameter gradients and weights if the step is
        recorded, then move to the next step. Call once per optimizer step, after
        ``loss.backward()`` (``scaler.scale(loss).backward()``) and before ``optimizer.step()`` /
        ``scaler.step(optimizer)`` and ``zero_grad()``; before or after ``scaler.unscale_``
        (``grads_unscaled``).

        Args:
            loss: None, a real number or a one-element tensor (the loss backpropagated; inf or NaN
                marks the run collapsed).
            lr: None, or a finite real number or one-element tensor (a device tensor is not read).
            scaler: the ``torch.amp.GradScaler`` that scaled the loss, or None: gradient statistics
                are then recorded unscaled and a skipped step as ``amp.skipped`` (class docstring).
            grads_unscaled: True when ``.grad`` already holds unscaled gradients, e.g. after
                ``scaler.unscale_(optimizer)``: the statistics computed from ``.grad`` (``gw.*``)
                are then not divided by the scale; those of the tensor hooks, which saw the scaled
                gradients during backward, still are. Needs ``scaler``.

        Everything is checked before anything changes: a call that raises leaves the probe as it
        was (the step stays open; call ``step()`` again with valid arguments).

        Raises:
            TypeError, ValueError: a bad ``loss``, ``lr``, ``scaler`` or ``grads_unscaled`` (the
                message names it).
            RuntimeError: the probe is detached or closed; called twice without a training forward
                in between (the message says which forwards ran instead); or, on a recorded step,
                after a training forward whose backward never ran.
        """
        h, t = self._hooks, self._t
        promote = check_step(self, loss, lr, scaler, grads_unscaled)  # checked before anything changes
        self._amp = self._amp or scaler is not None
        h.settle(train=promote, recording=h.recording(TRAIN if promote else EVAL))
        if h.rec_train:
            check_fires(self, t)
            rec = close_mode(self, TRAIN, loss=loss, lr=lr, scaler=scaler,
                             grads_unscaled=grads_unscaled)
            if rec is not None:
                self._pending.append(rec)
        else:
            h.reset(TRAIN)
        rec = close_mode(self, EVAL, reset=True)
        if rec is not None:
            self._pending.append(rec)
        self._t = h.t = t + 1
        h.rec_train = TRAIN in self._modes and bool(self._schedule(self._t))
        if h.rec_train:  # w.update_ratio of step t + 1 needs W_t (after step t's record is built)
            self._params.snapshot(t)
        if h.attached:
            self._arm()
        if len(self._pending) >= self._flush_every:
            self.flush()

    def discard_step(self) -> None:
        """Drop the training statistics of the open step gathered so far: those of its training
        forwards and of the backwards already run or still to run from them (e.g. after a forward
        whose loss you decide not to backpropagate). Its eval forwards stay. The step stays open:
        the next training forward, backward and :meth:`step` record it, as step
        :attr:`current_step`. A forward that raises is dropped without this call (the class
        docstring)."""
        h = self._hooks
        h.dirty.update((TRAIN, PENDING))
        h.reset(TRAIN)
        h.reset(PENDING)
        h.epoch += 1

    def _warn_once(self, name: str, kind: str, message: str) -> None:
        if (name, kind) not in self._warned:
            self._warned.add((name, kind))
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    # -- output ------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Derive the buffered steps' rows (``varprobe.probe.table.finish``), transfer them to the
        host (one copy) and hand them to the sinks (the run directory ``out`` first), or keep them
        (no ``out``). A step whose rows cannot be derived is left out and its error raised after
        the others are delivered."""
        if not self._pending:
            return
        records, self._pending = self._pending, []
        records, error = finish(records)  # a step whose rows cannot be derived is left out, then raised
        frame = records_to_frame(records)
        if self._collapsed_step is None:
            self._note_collapse(collapse_step(frame, records))
        if self._amp:
            frame = drop_skipped(frame)
        if self._out is None:
            self._frames.append(frame)
        if self._writer is not None:
            self._writer(frame)  # first: a sink that raises after it loses nothing of the run
        deliver(self._sinks, None, frame)
        if error is not None:
            raise error

    def _note_collapse(self, step: int | None) -> None:
        if step is not None:
            self._collapsed_step = step
            if self._writer is not None:
                self._writer.update_meta(collapsed_step=step)
            deliver(self._sinks, "update_meta", collapsed_step=step)

    def frame(self) -> pd.DataFrame:
        """The table so far: columns step, layer, depth, mode, module_type, role, quantity, value
        (``varprobe.vocabulary.COLUMNS``; ``role`` one of ``varprobe.vocabulary.ROLES``, ``""`` for
        rows of no layer).

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
            preview = close_mode(self, EVAL, reset=False)
            if preview is not None:
                parts.append(records_to_frame([preview]))
        parts = [p for p in parts if len(p)]
        if not parts:
            return empty_frame()
        return pd.concat(parts, ignore_index=True)

    def save(self, path: str | os.PathLike, *, overwrite: bool = False, status: str | None = None) -> None:
        """Write the whole table so far to a new run directory (``meta.json`` + one Parquet chunk).
        Only rank 0 writes."""
        if self._rank == 0:
            save_run(path, self.frame(), self._config(), self._collapsed_step, overwrite=overwrite, status=status)

    def _config(self) -> dict:
        spec = self._layers_spec
        probe = {"layers": None if spec is None else repr(spec), "every": repr(self._schedule),
                 "quantities": sorted(self._quantities), "modes": list(self._modes),
                 "flush_every": self._flush_every, "n_layers": len(self.layers),
                 "world_size": self._world, "model": type(self.model).__name__, "fused": self._fused}
        return {**self._meta, "probe": probe}

