"""``ProbeCallback`` for the Hugging Face ``Trainer``: a Probe attached for the length of ``train()``."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import torch

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - exercised by the import-without-extras test
    raise ImportError("varprobe.integrations.huggingface needs transformers and accelerate: "
                      f"pip install 'varprobe[hf]' ({exc})") from exc

from .compat import make_probe, step_kwargs

__all__ = ["ProbeCallback"]


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
      optimizer step, after all ``gradient_accumulation_steps`` backwards, so recorded steps count
      optimizer steps (``state.global_step``). Under ``fp16=True`` the accelerator's GradScaler (the
      ``scaler`` of the Trainer's ``AcceleratedOptimizer``) is passed as ``scaler=`` where the
      installed Probe takes it (and ``grads_unscaled=``: the Trainer unscales ``.grad`` for
      clipping or its grad-norm log before this hook).
    - ``on_train_end``: the probe is closed. The Trainer has no exception hook: a run that raises
      keeps what was flushed and reads as ``interrupted``.

    Distributed: every process probes and the probe all-reduces training moments; only the main
    process (``state.is_world_process_zero``) writes ``out`` and feeds ``sinks``.

    Args: as :class:`varprobe.integrations.lightning.ProbeCallback` (``out``, ``every``,
    ``quantities``, ``sinks``, ``**probe_kwargs``).
    """

    def __init__(self, out: str | os.PathLike, every: int | Callable[[int], bool] = 1, *,
                 quantities: str | Iterable[str] = "all", sinks: Iterable[Any] = (), **probe_kwargs: Any) -> None:
        self.out = os.fspath(out)
        self.every, self.quantities, self.sinks = every, quantities, list(sinks)
        self.probe_kwargs = probe_kwargs
        self.probe = None
        self._losses: list[torch.Tensor] = []
        self._loss_hook = None

    def _on_output(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        if not (module.training and torch.is_grad_enabled()):
            return
        loss = output.get("loss") if hasattr(output, "get") else getattr(output, "loss", None)
        if isinstance(loss, torch.Tensor):
            self._losses.append(loss.detach())

    def on_train_begin(self, args, state, control, model: torch.nn.Module | None = None, **kwargs: Any) -> None:
        if model is None:
            raise ValueError("ProbeCallback: the Trainer passed no model to on_train_begin")
        meta = {"trainer": "huggingface", "gradient_accumulation_steps": args.gradient_accumulation_steps,
                "fp16": bool(args.fp16), "bf16": bool(args.bf16), "world_size": args.world_size,
                **self.probe_kwargs.get("meta", {})}
        self.probe = make_probe(model, sinks=self.sinks if state.is_world_process_zero else [],
                                owner="ProbeCallback", out=self.out, every=self.every,
                                quantities=self.quantities, meta=meta,
                                **{k: v for k, v in self.probe_kwargs.items() if k != "meta"})
        self.probe.attach()
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
        if self._loss_hook is not None:
            self._loss_hook.remove()
            self._loss_hook = None
        if self.probe is not None:
            probe, self.probe = self.probe, None
            probe.close()
