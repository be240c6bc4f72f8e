"""``ProbeCallback`` for the Hugging Face ``Trainer``: a Probe attached for the length of ``train()``."""
from __future__ import annotations

import functools
import os
import sys
import warnings
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import torch

try:
    from transformers import Trainer, TrainerCallback
except ImportError as exc:  # pragma: no cover - exercised by the import-without-extras test
    raise ImportError("varprobe.integrations.huggingface needs transformers and accelerate: "
                      f"pip install 'varprobe[hf]' ({exc})") from exc

from .compat import check_probe_kwargs, make_probe, step_kwargs

__all__ = ["ProbeCallback"]


def _calling_trainer(callback: TrainerCallback) -> Trainer | None:
    """The ``Trainer`` whose callback handler is calling ``callback`` now, found among the caller
    frames (a Trainer event passes no trainer), or None when no Trainer is calling it."""
    frame = sys._getframe(1)
    for _ in range(32):
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        if isinstance(owner, Trainer) and any(c is callback for c in owner.callback_handler.callbacks):
            return owner
        frame = frame.f_back
    return None


class ProbeCallback(TrainerCallback):
    """Record a :class:`varprobe.Probe` run while a Hugging Face ``Trainer`` trains.

    - ``on_train_begin``: the probe is created on the ``model`` the Trainer passes (the unwrapped
      model, so names are its ``named_modules()`` names) and attached, on every process.
    - The loss: a Trainer callback never sees it. A forward hook on the model reads the ``loss``
      field of the model's output (transformers models compute it when the batch has labels) in
      training forwards, and the probe records ``loss`` as its mean over the step's forwards (the
      micro-batches of a gradient-accumulation window). A model whose output has no ``loss``
      (a custom ``compute_loss``) gets no ``loss`` rows.
    - ``on_pre_optimizer_step``: ``probe.step(loss=..., lr=param_groups[0]["lr"])``, once per
      optimizer step, after all ``gradient_accumulation_steps`` backwards, so recorded steps are
      optimizer steps, numbered as ``state.global_step``: the probe starts at the ``global_step``
      of ``on_train_begin`` (``Probe(start_step=)``), which ``train(resume_from_checkpoint=...)``
      has restored by then, so a resumed run records the same step numbers, and the same ``every``
      schedule, as one that never stopped. Under ``fp16=True`` the accelerator's GradScaler (the
      ``scaler`` of the Trainer's ``AcceleratedOptimizer``) is passed as ``scaler=`` where the
      installed Probe takes it (and ``grads_unscaled=``: the Trainer unscales ``.grad`` for
      clipping or its grad-norm log before this hook).
    - ``on_train_end``: the probe is closed (status "finished" or "collapsed").
    - An exception out of ``train()``: the probe is closed with status "failed" and the error, its
      hooks removed and the run's lock released; what was flushed is kept, and ``train()`` can be
      called again (into the same ``out`` with ``overwrite=True``, as for any existing run). The
      Trainer has no exception event: when the Trainer calls ``on_init_end`` (the callback was
      given to its constructor) or ``on_train_begin``, the callback wraps that Trainer's ``train``
      (on the instance, once) to close the probe when it raises. A callback added with
      ``add_callback`` is wrapped from its first ``train()`` on, for the calls after it; if that
      first call raises, the next ``train()`` closes the left-over run as "failed" (with a
      warning) before it starts.

    Distributed: every process probes and the probe all-reduces training moments; only the main
    process (``state.is_world_process_zero``) writes ``out`` and feeds ``sinks``.

    Args: as :class:`varprobe.integrations.lightning.ProbeCallback` (``out``, ``every``,
    ``quantities``, ``sinks``, ``**probe_kwargs``).
    """

    def __init__(self, out: str | os.PathLike, every: int | Callable[[int], bool] = 1, *,
                 quantities: str | Iterable[str] = "all", sinks: Iterable[Any] = (), **probe_kwargs: Any) -> None:
        check_probe_kwargs(probe_kwargs, "ProbeCallback")
        self.out = os.fspath(out)
        self.every, self.quantities, self.sinks = every, quantities, list(sinks)
        self.probe_kwargs = probe_kwargs
        self.probe = None
        self._losses: list[torch.Tensor] = []
        self._loss_hook = None
        self._guarded: weakref.WeakSet = weakref.WeakSet()

    def _guard(self, trainer: Trainer | None) -> None:
        """Wrap ``trainer.train`` (once per trainer) so that an exception out of it closes the probe
        as failed (:meth:`_fail`) and then propagates unchanged."""
        if trainer is None or trainer in self._guarded:
            return
        train = trainer.train

        @functools.wraps(train)
        def train_closing_the_probe_on_error(*args: Any, **kwargs: Any) -> Any:
            try:
                return train(*args, **kwargs)
            except BaseException as exc:
                self._fail(exc)
                raise

        trainer.train = train_closing_the_probe_on_error
        self._guarded.add(trainer)

    def _fail(self, exc: BaseException) -> None:
        """Remove the loss hook and close the open probe, if any, as "failed" with ``exc``. Never
        raises: a failure on the way is added to ``exc`` as a note."""
        self._remove_loss_hook()
        if self.probe is None:
            return
        probe, self.probe = self.probe, None
        try:
            probe.close("failed", error={"type": type(exc).__name__, "message": str(exc)[:2000]})
        except Exception as err:
            exc.add_note(f"varprobe ProbeCallback: closing the run {self.out} as failed failed: {err!r}")

    def _remove_loss_hook(self) -> None:
        if self._loss_hook is not None:
            self._loss_hook.remove()
            self._loss_hook = None

    def _on_output(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        if not (module.training and torch.is_grad_enabled()):
            return
        loss = output.get("loss") if hasattr(output, "get") else getattr(output, "loss", None)
        if isinstance(loss, torch.Tensor):
            self._losses.append(loss.detach())

    def on_init_end(self, args, state, control, **kwargs: Any) -> None:
        self._guard(_calling_trainer(self))

    def on_train_begin(self, args, state, control, model: torch.nn.Module | None = None, **kwargs: Any) -> None:
        self._guard(_calling_trainer(self))
        if self.probe is not None:
            warnings.warn(f"ProbeCallback: the previous train() raised before on_train_end; its run {self.out} "
                          "is closed now as failed", RuntimeWarning, stacklevel=2)
            self._fail(RuntimeError("train() raised before on_train_end (the callback did not see the error)"))
        if model is None:
            raise ValueError("ProbeCallback: the Trainer passed no model to on_train_begin")
        meta = {"trainer": "huggingface", "gradient_accumulation_steps": args.gradient_accumulation_steps,
                "fp16": bool(args.fp16), "bf16": bool(args.bf16), "world_size": args.world_size,
                **self.probe_kwargs.get("meta", {})}
        probe = make_probe(model, sinks=self.sinks if state.is_world_process_zero else [],
                           owner="ProbeCallback", start_step=state.global_step, out=self.out, every=self.every,
                           quantities=self.quantities, meta=meta,
                           **{k: v for k, v in self.probe_kwargs.items() if k != "meta"})
        self.probe = probe.attach()
        self._losses = []
        self._loss_hook = model.register_forward_hook(self._on_output)

    def on_pre_optimizer_step(self, args, state, control, optimizer: Any = None, **kwargs: Any) -> None:
        if self.probe is None:
            return
        losses, self._losses = self._losses, []
        loss = torch.stack([v.float().mean() for v in losses]).mean() if losses else None
        scaler = getattr(optimizer, "scaler", None)
        extra = step_kwargs(scaler, optimizer, "ProbeCallback")
        groups = getattr(optimizer, "param_groups", None)
        lr = groups[0]["lr"] if groups else None
        self.probe.step(loss=loss, lr=lr, **extra)

    def on_train_end(self, args, state, control, **kwargs: Any) -> None:
        self._remove_loss_hook()
        if self.probe is not None:
            probe, self.probe = self.probe, None
            probe.close()
