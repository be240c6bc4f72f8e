"""Data-dependent initialisation of PWS alpha over a whole model (the authors' ``initalpha``)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .pws import PWSConv2d

__all__ = ["init_alpha"]


@torch.no_grad()
def init_alpha(model: nn.Module, x: Tensor) -> list[str]:
    """Run one forward of ``model`` on ``x``, calling ``init_from_batch`` on each ``PWSConv2d`` with
    ``data_init=True`` just before it runs (the stem, the first conv of each residual branch and the
    downsample convs in the package's models). Later layers see inputs already rescaled by earlier
    ones, as in the official code. Returns the names of the convs initialised, in call order.
    """
    names = {m: n for n, m in model.named_modules()}
    done: list[str] = []

    def pre_hook(module: PWSConv2d, args: tuple) -> None:
        if names[module] not in done:
            module.init_from_batch(args[0])
            done.append(names[module])

    handles = [m.register_forward_pre_hook(pre_hook) for m in model.modules()
               if isinstance(m, PWSConv2d) and m.data_init]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return done
