"""Filter and average-gradient statistics of many weights at once, from one flat float64 buffer.

The weights of L layers, shapes (O_l, ...), are laid end to end (``flatten_all``); ``Segments``
holds, on their device, the filter of every element and the layer of every filter. Each
statistic of every layer then costs a fixed number of kernels (segment sums by ``index_add_``),
whatever L is: the per-layer results equal :func:`~varprobe.stats.filter_stats` and
:func:`~varprobe.stats.grad_shift_stats` of each weight (two-pass means and variances in float64).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["Segments", "flatten_all", "segment_sum", "filter_stats_many", "grad_shift_many",
           "segment_correlation"]

_F64 = torch.float64


class Segments:
    """Index tensors of L weights laid end to end. Shapes (O_l, ...); n_l = prod(shape[1:]).

    ``filter_of`` (numel,), ``layer_of`` (F,) long; ``n`` (F,) and ``layer_n``, ``layer_o`` (L,)
    float64, all on ``device``; ``offsets[l]``: index of layer l's first filter (host)."""

    def __init__(self, shapes: Sequence[Sequence[int]], device: torch.device | str = "cpu") -> None:
        self.shapes = [tuple(s) for s in shapes]
        o = [s[0] for s in self.shapes]
        n = [math.prod(s[1:]) for s in self.shapes]
        self.layers, self.filters = len(o), sum(o)
        self.offsets = [0]
        for k in o:
            self.offsets.append(self.offsets[-1] + k)
        per_filter = torch.tensor([k for k, c in zip(n, o) for _ in range(c)], dtype=torch.long)
        self.filter_of = torch.repeat_interleave(torch.arange(self.filters), per_filter).to(device)
        self.layer_of = torch.repeat_interleave(torch.arange(self.layers), torch.tensor(o, dtype=torch.long)).to(device)
        self.n = per_filter.to(_F64).to(device)
        self.layer_n = torch.tensor(n, dtype=_F64).to(device)
        self.layer_o = torch.tensor(o, dtype=_F64).to(device)


def flatten_all(tensors: Sequence[Tensor]) -> Tensor:
    """Every tensor flattened and concatenated, detached, float64 (one copy)."""
    return torch.cat([t.detach().reshape(-1) for t in tensors]).to(_F64)


def segment_sum(values: Tensor, index: Tensor, size: int) -> Tensor:
    """out[j] = sum of values[..., i] over i with index[i] == j, along the last axis."""
    out = values.new_zeros(values.shape[:-1] + (size,))
    return out.index_add_(values.ndim - 1, index, values)


def filter_stats_many(flat: Tensor, seg: Segments) -> Tensor:
    """``filter_stats`` of every layer: float64 (5, L), rows ``FILTER_STATS`` (fan_var,
    filter_mean_abs, filter_sum_var, filter_sum_sq, sq_norm), from ``flatten_all(weights)``."""
    m = segment_sum(flat, seg.filter_of, seg.filters) / seg.n
    d = flat - m.index_select(0, seg.filter_of)
    v = segment_sum(d * d, seg.filter_of, seg.filters) / seg.n  # biased, two-pass
    sums = m * seg.n
    per = torch.stack([v * seg.n, m.abs(), sums, sums * sums, seg.n * (v + m * m)])
    tot = segment_sum(per, seg.layer_of, seg.layers) / seg.layer_o
    dev = sums - tot[2].index_select(0, seg.layer_of)
    sum_var = segment_sum(dev * dev, seg.layer_of, seg.layers) / seg.layer_o
    return torch.stack([tot[0], tot[1], sum_var, tot[3], tot[4]])


def grad_shift_many(flat: Tensor, seg: Segments) -> tuple[Tensor, Tensor, Tensor]:
    """``grad_shift_stats`` of every layer's weight gradient, from ``flatten_all(grads)``.

    Returns (g_i (F,): per-filter mean gradient; (3, L) rows avg_abs, rms, shift_ratio;
    rms_i (F,): per-filter sqrt(mean g^2), the scale of g_i's rounding), float64."""
    per = segment_sum(torch.stack([flat, flat * flat]), seg.filter_of, seg.filters)
    gi = per[0] / seg.n
    rms_i = (per[1] / seg.n).sqrt()
    tot = segment_sum(torch.stack([gi.abs(), per[1]]), seg.layer_of, seg.layers)
    avg_abs = tot[0] / seg.layer_o
    rms = (tot[1] / (seg.layer_o * seg.layer_n)).sqrt()
    return gi, torch.stack([avg_abs, rms, avg_abs * seg.layer_n.sqrt() / rms]), rms_i


def segment_correlation(a: Tensor, b: Tensor, index: Tensor, size: int, count: Tensor) -> Tensor:
    """Pearson correlation of a and b within each segment (``count`` entries each), (size,)."""
    mean = segment_sum(torch.stack([a, b]), index, size) / count
    a0 = a - mean[0].index_select(0, index)
    b0 = b - mean[1].index_select(0, index)
    s = segment_sum(torch.stack([a0 * b0, a0 * a0, b0 * b0]), index, size)
    return s[0] / (s[1] * s[2]).sqrt()
