"""What the installed ``Probe`` accepts: the callbacks pass ``sinks=`` and ``step(scaler=...)``
only where it takes them, so they work with probes before and after those arguments exist."""
from __future__ import annotations

import functools
import inspect
import warnings
from typing import Any

import torch

from .amp import active_scaler, grads_unscaled

__all__ = ["probe_takes", "step_takes", "check_probe_kwargs", "make_probe", "step_kwargs"]


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


def check_probe_kwargs(probe_kwargs: dict[str, Any], owner: str) -> None:
    """Raise TypeError naming ``owner`` if ``probe_kwargs`` sets what the callback sets itself."""
    if "start_step" in probe_kwargs:
        raise TypeError(f"{owner}: start_step is not an argument: the probe starts at the trainer's "
                        "global step (a resumed run's recorded steps are its global steps)")


def make_probe(model: torch.nn.Module, *, sinks: list, owner: str, start_step: int, **kwargs: Any):
    """A ``Probe(model, start_step=start_step, **kwargs)``, with ``sinks`` when there are any: the
    steps it records are the trainer's global steps, also when training resumed from a checkpoint
    at ``start_step`` > 0, and ``every`` is applied to them. Raises TypeError naming ``owner`` when
    sinks are given, or ``start_step`` > 0, and the installed Probe has no such parameter."""
    from ..probe import Probe
    for name, value in (("sinks", list(sinks)), ("start_step", start_step)):
        if value:
            if not probe_takes(name):
                raise TypeError(f"{owner}: {name}={value!r} needs a varprobe Probe that accepts {name}=; "
                                "this one does not")
            kwargs[name] = value
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
