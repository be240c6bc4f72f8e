"""What a callback hands ``Probe.step`` about mixed precision: the GradScaler and whether the
optimizer's ``.grad`` was already unscaled by the trainer."""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["inner_optimizer", "grads_unscaled", "active_scaler"]


def inner_optimizer(optimizer: Any) -> Any:
    """The ``torch.optim.Optimizer`` inside a trainer's wrapper (Lightning's ``LightningOptimizer``
    keeps it as ``_optimizer``, accelerate's ``AcceleratedOptimizer`` as ``optimizer``)."""
    seen = 0
    while not isinstance(optimizer, torch.optim.Optimizer) and seen < 4:
        inner = getattr(optimizer, "_optimizer", None) or getattr(optimizer, "optimizer", None)
        if inner is None:
            break
        optimizer, seen = inner, seen + 1
    return optimizer


def active_scaler(scaler: Any) -> torch.amp.GradScaler | None:
    """``scaler`` if it is an enabled ``torch.amp.GradScaler``, else None (bf16 and fp32 runs have none)."""
    return scaler if isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled() else None


def grads_unscaled(scaler: torch.amp.GradScaler, optimizer: Any) -> bool:
    """Whether ``scaler.unscale_(optimizer)`` already ran this step, so ``.grad`` holds unscaled
    gradients while the tensor hooks of the backward saw gradients S times too large.

    Reads the scaler's per-optimizer stage (``torch.amp.grad_scaler.OptState.UNSCALED``), which
    has no public accessor; Lightning unscales before ``on_before_optimizer_step``, and the
    Hugging Face Trainer before ``on_pre_optimizer_step`` (gradient clipping, or the norm it logs).
    """
    from torch.amp.grad_scaler import OptState
    states = getattr(scaler, "_per_optimizer_states", {})
    state = states.get(id(inner_optimizer(optimizer))) if hasattr(states, "get") else None
    return bool(state) and state.get("stage") is OptState.UNSCALED
