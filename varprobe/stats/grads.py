"""The shift of the average gradient: statistics of the per-filter mean of dL/dW."""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["GRAD_STATS", "grad_shift_stats", "sign_persistence", "correlation",
           "within_rounding", "rounding_tolerance"]

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


def rounding_tolerance(dtype: torch.dtype, n: int = 1, factor: float = 1e3) -> float:
    """Relative size below which a sum of n values of ``dtype`` that is zero in exact arithmetic
    (a PWS filter's average gradient, the channel sums of dL/dy before a BatchNorm) is zero up to
    rounding: |mean| <= tolerance * rms of the values (n = 1: |sum| <= tolerance * their root
    sum of squares).

    tolerance = factor * eps(c) + 4 * eps(dtype) / sqrt(n), two sources of rounding:

    - the computation that produced the values, in c = ``dtype``, or float32 for a half-precision
      ``dtype`` (PyTorch accumulates half-precision reductions and matmuls in float32 and rounds
      the result once): ``factor`` eps(c), the error growth of its sums;
    - that one rounding of each value to ``dtype``: independent errors of at most eps(dtype) / 2
      relative each, whose mean has a standard deviation of at most eps(dtype) / 2 * rms / sqrt(n);
      4 eps(dtype) / sqrt(n) is 8 of them.

    The statistic itself is summed in float64 (rounding about n * 2^-53: negligible). A tolerance
    of ``factor`` eps(dtype) alone exceeds 1 for bfloat16 (eps 2^-7), where no sum could pass it."""
    compute = dtype if torch.finfo(dtype).bits >= 32 else torch.float32
    return factor * torch.finfo(compute).eps + 4 * torch.finfo(dtype).eps / math.sqrt(n)


def within_rounding(values: Tensor, scale: Tensor, dtype: torch.dtype, factor: float = 1e3, n: int = 1) -> Tensor:
    """Bool tensor: |values| <= rounding_tolerance(dtype, n, factor) * scale, i.e. zero up to
    rounding: a mean of n values of ``dtype`` whose root mean square is ``scale`` (n = 1: a sum,
    ``scale`` the root sum of squares of its terms), e.g. a PWS filter's average gradient, exactly
    zero in exact arithmetic."""
    return values.abs() <= rounding_tolerance(dtype, n, factor) * scale
