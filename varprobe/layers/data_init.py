"""Data-dependent initialisation of PWS alpha over a whole model (the authors' ``initalpha``)."""
from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from .pws import PWSConvNd

__all__ = ["init_alpha"]


@torch.no_grad()
def init_alpha(model: nn.Module, x: Tensor) -> list[str]:
    """Run one forward of ``model`` on ``x``, calling ``init_from_batch`` on each PWS conv
    (``PWSConvNd``: 1-, 2- or 3-D, plain or transposed) with ``data_init=True`` just before it runs
    (the stem, the first conv of each residual branch and the downsample convs in the package's
    models). Later layers see inputs already rescaled by earlier ones, as in the official code.
    Returns the names of the convs initialised, in call order.

    Nothing silent: a RuntimeWarning says when no conv was initialised (the model has no PWS conv
    with ``data_init=True``) and names the ``data_init`` convs the forward never ran.
    """
    names = {m: n for n, m in model.named_modules()}
    done: list[str] = []

    def pre_hook(module: PWSConvNd, args: tuple) -> None:
        if names[module] not in done:
            module.init_from_batch(args[0])
            done.append(names[module])

    targets = [m for m in model.modules() if isinstance(m, PWSConvNd) and m.data_init]
    handles = [m.register_forward_pre_hook(pre_hook) for m in targets]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    if not targets:
        n_pws = sum(isinstance(m, PWSConvNd) for m in model.modules())
        why = (f"its {n_pws} PWS conv(s) all have data_init=False" if n_pws
               else "it has no PWS conv (convert it with varprobe.models.convert(model, 'pws') first)")
        warnings.warn(f"init_alpha: nothing initialised: {why}", RuntimeWarning, stacklevel=2)
    elif len(done) < len(targets):
        missed = [names[m] for m in targets if names[m] not in done]
        warnings.warn(f"init_alpha: {len(missed)} PWS conv(s) with data_init=True never ran in the forward and "
                      f"keep their alpha: {', '.join(missed)}", RuntimeWarning, stacklevel=2)
    return done
