"""``spp``: the signal-propagation table of a model at one point (e.g. initialisation), without training."""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import pandas as pd
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from .probe import Probe
from .select import unwrap

__all__ = ["spp"]

_FORWARD = ("in.*", "out.*", "block.out.*", "branch.out.*")
_BACKWARD = ("grad_out.*", "grad_in.var")


def spp(model: nn.Module, batch: Tensor | Sequence[int], *, layers=None, grad: bool = False,
        quantities: Iterable[str] | None = None, blocks: Mapping[type, str | None] | bool | None = None,
        seed: int = 0) -> pd.DataFrame:
    """Signal-propagation statistics (Brock et al. 2021) of one forward of ``model`` on ``batch``.

    Runs one forward in training mode (BatchNorm normalizes with batch statistics, as during
    training) and records, per probed layer and residual block, the quantities ``in.*``,
    ``out.*``, ``block.out.*`` and ``branch.out.*`` (``out.ch_sq_mean`` is the SPP "average
    channel squared mean", ``out.ch_var`` the "average channel variance"). With ``grad=True`` it
    also backpropagates a random projection loss L = sum(r * f(x)) / sqrt(numel f(x)), r ~ N(0, 1),
    and records ``grad_out.*`` and ``grad_in.var`` (the gradient SPP).

    The forward runs with autograd recording, its input marked as requiring grad (a detached
    alias: the caller's tensor is untouched), so that depth comes from the dataflow and repeated
    blocks are checked for their residual add (``Probe``), even with frozen parameters; without
    ``grad`` the graph is dropped right after the forward, never backpropagated.

    Nothing about the model changes: each module's train/eval flag, BatchNorm running statistics
    (and ``num_batches_tracked``), and parameter ``.grad`` are restored, and the global RNG is not
    used.

    Args:
        model: The module (DDP/DataParallel unwrapped).
        batch: An input tensor, or a shape such as (128, 3, 32, 32) for an N(0, 1) input.
        layers, blocks: As for :class:`Probe`.
        grad: Also record gradient statistics.
        quantities: Override the recorded quantities (names or globs).
        seed: Seed of the N(0, 1) input and of the projection r.

    Returns:
        The long table (step 0, mode "train").
    """
    model = unwrap(model)
    gen = torch.Generator().manual_seed(seed)
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    x = batch if isinstance(batch, Tensor) else torch.randn(tuple(batch), generator=gen).to(device, dtype)
    q = list(quantities) if quantities is not None else list(_FORWARD + (_BACKWARD if grad else ()))
    probe = Probe(model, layers, quantities=q, modes=("train",), blocks=blocks)
    probe._force_train = True  # no_grad forwards of a model in train mode count as "train"

    training = {m: m.training for m in model.modules()}
    bn_state = {m: [b.detach().clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked)]
                for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats
                and m.running_mean is not None}
    grads = {p: p.grad for p in model.parameters()}
    try:
        model.train()
        with probe:
            if grad:
                for p in grads:
                    p.grad = None
                y = model(x)
                y = y if isinstance(y, Tensor) else y[0]
                r = torch.randn(y.shape, generator=gen).to(y.device, y.dtype)
                (y * r).sum().div(math.sqrt(y.numel())).backward()
            else:  # with a graph (freed at once): the probe reads depth and residual adds from it
                with torch.enable_grad():
                    model(x.detach().requires_grad_() if x.is_floating_point() else x)
            probe.step()
    finally:
        for m, mode in training.items():
            m.training = mode
        with torch.no_grad():
            for m, saved in bn_state.items():
                for buf, value in zip((m.running_mean, m.running_var, m.num_batches_tracked), saved):
                    buf.copy_(value)
        for p, g in grads.items():
            p.grad = g
    return probe.frame()
