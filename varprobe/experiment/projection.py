"""The average-gradient projection control: take the shift of the average gradient out of training."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from ..layers import raw_weight

__all__ = ["project_filter_mean_"]


@torch.no_grad()
def project_filter_mean_(model: nn.Module) -> int:
    """Remove the per-filter mean from the gradient of every conv weight of ``model``, in place:

        g_i <- g_i - mean(g_i),  g_i = dL/dV[i] of shape (C_in/groups, *kernel_size),

    V the raw weight the optimizer updates (``varprobe.layers.raw_weight``), the mean taken over
    all of filter i's entries. This takes the shift of the average gradient (Liu et al. 2021) out
    of the update and nothing else: the projection is orthogonal, so the per-filter zero-mean part
    of the gradient is kept exactly. Call it after ``loss.backward()`` and before
    ``optimizer.step()``; momentum and weight decay then act on the projected gradient. Convs
    without a gradient are skipped. Returns the number of gradients projected.
    """
    n = 0
    for m in model.modules():
        g = raw_weight(m).grad if isinstance(m, _ConvNd) else None
        if g is None:
            continue
        g.sub_(g.mean(dim=tuple(range(1, g.ndim)), keepdim=True))
        n += 1
    return n
