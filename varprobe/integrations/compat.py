"""What the installed ``Probe`` accepts: the callbacks pass ``sinks=`` and ``step(scaler=...)``
only where it takes them, so they work with probes before and after those arguments exist."""
from __future__ import annotations

import functools
import inspect
import warnings
from typing import Any

import torch

from .amp import active_scaler, grads_unscaled

__all__ = ["probe_takes", "step_takes", "make_probe", "step_kwargs"]


@functools.cache
def probe_takes(name: str) -> bool:
    """Whether ``varprobe.Probe(...)`` has a parameter ``name``."""
    from ..probe import Probe
    return name in inspect.signature(Probe).parameters


@functools.cache
def step_takes(name: str) -> bool:
    """Whether ``Probe.step(...)`` has a parameter ``name``."""
    from ..probe import Probe
    return name in inspect.signature(Probe.step).parameters


def make_probe(model: torch.nn.Module, *, sinks: list, owner: str, **kwargs: Any):
    """A ``Probe(model, **kwargs)``, with ``sinks`` when there are any. Raises TypeError naming
    ``owner`` when sinks are given and the installed Probe has no ``sinks`` parameter."""
    from ..probe import Probe
    if sinks:
        if not probe_takes("sinks"):
            raise TypeError(f"{owner}(sinks=...) needs a varprobe Probe that accepts sinks=; this one does not")
        kwargs["sinks"] = list(sinks)
    return Probe(model, **kwargs)


_warned: set[str] = set()


def step_kwargs(scaler: Any, optimizer: Any, owner: str) -> dict[str, Any]:
    """The mixed-precision keywords for ``Probe.step``: ``scaler`` (an enabled GradScaler, where
    ``step`` takes it) and ``grads_unscaled`` (where ``step`` takes it). Warns once when the loss
    was scaled but the probe cannot be told (gradient statistics then carry the loss scale)."""
    scaler = active_scaler(scaler)
    if scaler is None:
        return {}
    if not step_takes("scaler"):
        if owner not in _warned:
            _warned.add(owner)
            warnings.warn(f"{owner}: the loss is scaled by a GradScaler but this Probe.step has no scaler=; "
                          "grad_out.*, grad_in.var and gw.* carry the loss scale", RuntimeWarning, stacklevel=3)
        return {}
    out: dict[str, Any] = {"scaler": scaler}
    unscaled = grads_unscaled(scaler, optimizer)
    if step_takes("grads_unscaled"):
        out["grads_unscaled"] = unscaled
    elif unscaled and owner + ".unscaled" not in _warned:
        _warned.add(owner + ".unscaled")
        warnings.warn(f"{owner}: the trainer unscaled .grad before the optimizer step and this Probe.step "
                      "divides gw.avg_abs and gw.rms by the loss scale once more (its other gradient "
                      "statistics are right)", RuntimeWarning, stacklevel=3)
    return out
