"""What ``Probe.step()`` checks before it changes anything, and the diagnostics of a closed step."""
from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import torch
from torch import Tensor

from .plan import EVAL, MODES, PENDING, TRAIN

__all__ = ["check_options", "check_step", "check_fires"]


def check_options(modes: Any, flush_every: Any, sinks: Any) -> tuple[tuple[str, ...], int, list]:
    """The ``modes`` (a non-empty subset of ``MODES``), ``flush_every`` (a positive int) and
    ``sinks`` (callables) of a new Probe, as stored; ValueError or TypeError naming a bad one."""
    modes = tuple(modes) if not isinstance(modes, str) else (modes,)
    if not modes or any(m not in MODES for m in modes):
        raise ValueError(f"modes must be a non-empty subset of {MODES}, got {modes!r}")
    if isinstance(flush_every, bool) or not isinstance(flush_every, int) or flush_every <= 0:
        raise ValueError(f"flush_every must be a positive int, got {flush_every!r}")
    sinks = list(sinks)
    for s in sinks:
        if not callable(s):
            raise TypeError(f"sinks entries must be callables that take a DataFrame, got {s!r}")
    return modes, flush_every, sinks


def check_step(probe, loss: Any, lr: Any, scaler: Any, grads_unscaled: Any = False) -> bool:
    """Raise (naming the bad value or the missing call) if ``probe.step(loss, lr, scaler=scaler,
    grads_unscaled=grads_unscaled)`` cannot close the step; changes nothing. Returns whether the
    step's eval-mode forwards with grad enabled are its training forwards (a backward reached them)."""
    h, t = probe._hooks, probe._t
    _check_number("loss", loss, finite=False)
    _check_number("lr", lr, finite=True)
    if scaler is not None and not isinstance(scaler, torch.amp.GradScaler):
        raise TypeError(f"Probe.step(scaler=...) takes a torch.amp.GradScaler or None, got {scaler!r}")
    if not isinstance(grads_unscaled, bool):
        raise TypeError(f"Probe.step(grads_unscaled=...) takes True or False, got {grads_unscaled!r}")
    if grads_unscaled and scaler is None:
        raise ValueError("Probe.step(grads_unscaled=True) needs scaler= too: the tensor hooks saw the "
                         "gradients of the scaled loss, and only the scaler says by how much")
    if not h.attached:
        if probe._closed:
            raise RuntimeError(f"Probe.step() called at step {t} after the probe was closed (close() ran or "
                               "its `with` block ended); nothing more is recorded. Call step() inside "
                               "`with probe:`, or create a new Probe")
        raise RuntimeError(f"Probe.step() called at step {t} while the probe is detached (remove() ran, or "
                           "its `with` block ended, or it was never attached): no hook saw this step. Call "
                           "step() inside `with probe:` or after probe.attach()")
    fired = h.root_calls[TRAIN] > 0 or any(layer.fires[TRAIN] for layer in probe._layers)
    pending = h.pending_seen
    # Eval-mode forwards with grad enabled that a backward reached are training forwards of
    # this step (a model trained in eval mode, or with frozen BatchNorm layers); otherwise
    # they are eval forwards (an evaluation without no_grad).
    promote = pending and h.pending_grads > 0
    # Eval-mode forwards that nothing watched (a step recorded in no mode, or outputs that do
    # not require grad) cannot be told apart: nothing of them is recorded, no error.
    if h.root_seen and not fired and not promote and not (pending and not h.pending_hooks):
        evals = h.root_calls[EVAL] + h.root_calls[PENDING]
        if pending:
            raise RuntimeError(
                f"Probe.step() called at step {t} without a training forward since the last step(): "
                f"the forward(s) ran with the model in eval mode (module.training is False) and no "
                "backward reached them, so they are recorded as eval. A model trained in eval mode "
                "(e.g. frozen BatchNorm) is recorded as training once loss.backward() runs before "
                "step(); otherwise call model.train() before the training forward")
        if evals or any(layer.fires[EVAL] for layer in probe._layers):
            raise RuntimeError(
                f"Probe.step() called at step {t} without a training forward since the last step(): "
                f"the {evals or 'probed'} forward(s) since then ran under torch.no_grad() or "
                "torch.inference_mode() (or in eval mode), so they were recorded as eval. A training "
                "forward needs grad enabled, then loss.backward(), then step()")
        raise RuntimeError(
            f"Probe.step() called twice without a training forward and backward in between "
            f"(step {t}); call it once per optimizer step, after loss.backward() and before "
            "optimizer.step()")
    if h.rec_train and not promote and h.grad_hooks and not h.grads_seen:
        raise RuntimeError(
            f"Probe.step() called at step {t} after a training forward but before its backward; "
            "call loss.backward() first (Probe.step() reads gradients)")
    return promote


def check_fires(probe, t: int) -> None:
    active = [layer for layer in probe._layers if layer.active and not layer.part]
    silent = [layer for layer in active if not layer.fires[TRAIN] and not layer.recomputed
              and (layer.name, "never") not in probe._warned]
    never = [layer.name for layer in silent]
    if never:
        placing = any(layer.depth < 0 for layer in silent)
        probe._warned.update((n, "never") for n in never)
        tied = _tied_to_fired(probe._layers, set(never))
        listed = ", ".join(f"{n} (its weight is tied to {tied[n]!r}, which fired)" if n in tied else n
                           for n in never[:20])
        warnings.warn(
            f"Probe: {len(never)} probed layer(s) never fired during training step {t}: "
            f"{listed}{', ...' if len(never) > 20 else ''}. They are not called in "
            "the forward (a tied copy of a layer that is called, a layer whose weight its parent uses "
            "directly, as in F.linear(x, self.proj.weight)), are called through module.forward() directly "
            "(which skips hooks), or the model was torch.compile'd and run before the probe was attached (or "
            "without persistent_hooks=True); their weight statistics (w.*) are still recorded"
            + (", those not placed yet at the depth of the layer their weight is tied to, or else of the layer "
               "before them in the model's module order (one deeper for a weight layer), fixed from now on"
               if placing else ""), RuntimeWarning, stacklevel=3)
    calls = probe._hooks.root_calls[TRAIN]
    for layer in active:
        if layer.recomputed:
            probe._warn_once(layer.name, "twice", (
                f"Probe: layer {layer.name!r} fired again during backward at step {t} ({layer.recomputed} "
                "time(s)): activation checkpointing recomputes its forward; recomputations are not "
                "recorded"))
        elif calls and layer.fires[TRAIN] > calls:
            probe._warn_once(layer.name, "twice", (
                f"Probe: layer {layer.name!r} fired {layer.fires[TRAIN]} times in step {t} for {calls} "
                "forward(s) of the model: it is called more than once per forward (its calls are "
                "merged into one record), or its forward is recomputed (activation checkpointing)"))


def _tied_to_fired(layers, never: set[str]) -> dict[str, str]:
    """name -> the name of a layer that fired and whose weight is the same tensor, for each layer
    of ``never`` that has one (T5's ``shared`` embedding, tied to ``encoder.embed_tokens``)."""
    fired: dict[int, str] = {}
    for layer in layers:
        if layer.view is not None and layer.name not in never and (layer.fires[TRAIN] or layer.recomputed):
            fired.setdefault(id(layer.view.parameter()), layer.name)
    return {layer.name: fired[id(layer.view.parameter())] for layer in layers
            if layer.name in never and layer.view is not None and id(layer.view.parameter()) in fired}


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
