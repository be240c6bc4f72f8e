"""The shift of the average gradient: statistics of the per-filter mean of dL/dW."""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["GRAD_STATS", "grad_shift_stats", "sign_persistence", "correlation",
           "within_rounding"]

#: Order of the entries returned by :func:`grad_shift_stats`.
GRAD_STATS = ("avg_abs", "rms", "shift_ratio")


def grad_shift_stats(g: Tensor) -> tuple[Tensor, Tensor]:
    """Average-gradient statistics of a weight gradient g = dL/dW of shape (O, ...).

    With g_i the mean of filter i's n = g[0].numel() gradient entries:

    - avg_abs = mean_i |g_i|;
    - rms = sqrt(mean of g^2 over all O * n entries);
    - shift_ratio = avg_abs / (rms / sqrt(n)). If the entries of each filter's gradient were
      independent with mean zero, |g_i| would be about rms / sqrt(n) (ratio about 0.8 for Gaussian
      entries); a ratio far above 1 means the filter gradients share a common offset, the "shift of
      the average gradient". PWS makes g_i, hence the ratio, exactly 0. NaN when g is all zero.

    Returns (g_i of shape (O,), tensor([avg_abs, rms, shift_ratio])), float64.
    """
    f = g.detach().flatten(1).to(torch.float64)
    gi = f.mean(1)
    avg_abs = gi.abs().mean()
    rms = f.square().mean().sqrt()
    return gi, torch.stack([avg_abs, rms, avg_abs * math.sqrt(f.shape[1]) / rms])


def sign_persistence(gi: Tensor, previous: Tensor) -> Tensor:
    """Fraction of filters whose average gradient keeps its sign: mean_i [sign(g_i) == sign(g_i')]."""
    return (torch.sign(gi) == torch.sign(previous)).to(torch.float64).mean()


def correlation(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation over the entries of two vectors of the same shape (NaN if one is constant)."""
    a = a.to(torch.float64) - a.to(torch.float64).mean()
    b = b.to(torch.float64) - b.to(torch.float64).mean()
    return (a * b).sum() / (a.square().sum() * b.square().sum()).sqrt()


def within_rounding(values: Tensor, scale: Tensor, dtype: torch.dtype, factor: float = 1e3) -> Tensor:
    """Bool tensor: |values| <= factor * eps(dtype) * scale, i.e. zero up to the rounding of a sum
    whose terms have root-sum-square ``scale`` (e.g. a PWS filter's average gradient, exactly zero
    in exact arithmetic)."""
    return values.abs() <= factor * torch.finfo(dtype).eps * scale
