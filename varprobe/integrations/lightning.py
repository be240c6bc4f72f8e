"""``ProbeCallback`` for PyTorch Lightning: a Probe attached for the length of ``trainer.fit``."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import torch

try:
    import lightning.pytorch as pl
except ImportError as exc:  # pragma: no cover - exercised by the import-without-extras test
    raise ImportError("varprobe.integrations.lightning needs PyTorch Lightning: "
                      f"pip install 'varprobe[lightning]' ({exc})") from exc

from .compat import check_probe_kwargs, make_probe, step_kwargs

__all__ = ["ProbeCallback"]


class ProbeCallback(pl.Callback):
    """Record a :class:`varprobe.Probe` run while a Lightning ``Trainer`` fits.

    - ``on_train_start``: the probe is created on the LightningModule (or its submodule ``module``,
      a dotted name, e.g. ``"net"``, so layer names are those of the network rather than
      ``net.``-prefixed) and attached, on every rank. This is after Lightning restored a
      checkpoint's loop state (``fit(ckpt_path=...)``): the probe starts at ``trainer.global_step``
      (``Probe(start_step=)``), so a resumed fit records the same step numbers, and the same
      ``every`` schedule, as one that never stopped. The sanity-check validation before it is not
      recorded.
    - ``on_before_backward``: the loss Lightning backpropagates is summed over the step's
      micro-batches (Lightning has already divided each by ``accumulate_grad_batches``, so the sum
      is the mean micro-batch loss; under 16-bit AMP it is divided by the loss scale).
    - ``on_before_optimizer_step``: ``probe.step(loss=..., lr=param_groups[0]["lr"])``: once per
      optimizer step, after every micro-batch of an ``accumulate_grad_batches`` window, so recorded
      steps are optimizer steps, numbered as ``trainer.global_step``. Under ``precision="16-mixed"`` the
      trainer's GradScaler (``trainer.precision_plugin.scaler``) is passed as ``scaler=`` where the
      installed Probe takes it (the tensor hooks saw scaled gradients during backward; Lightning
      unscales ``.grad`` before this hook, which is reported as ``grads_unscaled=`` where ``step``
      takes it).
    - ``on_fit_end``: the probe is closed (status "finished" or "collapsed"); ``on_exception``:
      closed with status "failed" and the error. What was flushed before is kept either way.

    Distributed (DDP): every rank probes, and the probe all-reduces training moments across ranks
    (global-batch statistics); only rank 0 (``trainer.is_global_zero``) writes ``out`` and feeds
    ``sinks``.

    Args:
        out: Run directory (``meta.json`` + Parquet chunks), the source of truth.
        every: Record every k-th optimizer step (int) or a schedule callable step -> bool.
        quantities: As ``Probe(quantities=)``.
        sinks: Extra sinks (``varprobe.sinks``) given to ``Probe(sinks=)`` on rank 0.
        module: Dotted name of the submodule of the LightningModule to probe (None: all of it).
        **probe_kwargs: Any other ``Probe`` argument (``layers``, ``flush_every``, ``meta``, ...).
    """

    def __init__(self, out: str | os.PathLike, every: int | Callable[[int], bool] = 1, *,
                 quantities: str | Iterable[str] = "all", sinks: Iterable[Any] = (), module: str | None = None,
                 **probe_kwargs: Any) -> None:
        super().__init__()
        check_probe_kwargs(probe_kwargs, "ProbeCallback")
        self.out = os.fspath(out)
        self.every, self.quantities, self.sinks = every, quantities, list(sinks)
        self.module, self.probe_kwargs = module, probe_kwargs
        self.probe = None
        self._loss: torch.Tensor | None = None

    def _target(self, pl_module: pl.LightningModule) -> torch.nn.Module:
        if not self.module:
            return pl_module
        try:
            return pl_module.get_submodule(self.module)
        except AttributeError:
            names = [n for n, _ in pl_module.named_children()]
            raise ValueError(f"ProbeCallback(module={self.module!r}): no such submodule of "
                             f"{type(pl_module).__name__}; its children: {', '.join(names) or 'none'}") from None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        meta = {"trainer": "lightning", "accumulate_grad_batches": trainer.accumulate_grad_batches,
                "precision": str(trainer.precision), "world_size": trainer.world_size,
                **self.probe_kwargs.get("meta", {})}
        probe = make_probe(self._target(pl_module), sinks=self.sinks if trainer.is_global_zero else [],
                           owner="ProbeCallback", start_step=trainer.global_step, out=self.out, every=self.every,
                           quantities=self.quantities, meta=meta,
                           **{k: v for k, v in self.probe_kwargs.items() if k != "meta"})
        self.probe = probe.attach()
        self._loss = None

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        if self.probe is not None:
            loss = loss.detach()
            self._loss = loss if self._loss is None else self._loss + loss

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        if self.probe is None:
            return
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        kwargs = step_kwargs(scaler, optimizer, "ProbeCallback")
        loss, self._loss = self._loss, None
        if loss is not None and isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled():
            loss = loss / scaler.scale(torch.ones((), device=loss.device))  # no host sync
        lr = optimizer.param_groups[0]["lr"] if optimizer.param_groups else None
        self.probe.step(loss=loss, lr=lr, **kwargs)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.probe is not None:
            probe, self.probe = self.probe, None
            probe.close()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self.probe is not None:
            probe, self.probe = self.probe, None
            probe.close("failed", error={"type": type(exception).__name__, "message": str(exception)[:2000]})
