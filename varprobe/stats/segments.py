"""Filter and average-gradient statistics of many weights at once.

The filters of L weights (shapes (O_l, ...), n_l = prod(shape[1:]) entries per filter) are
grouped by n: :meth:`Segments.gather` copies every weight into one preallocated float64 buffer
(one ``torch._foreach_copy_``), laid out so that each group is a (F_g, n) matrix, reduced along
its rows in one kernel, so each statistic of every layer costs a fixed number of
kernels per distinct filter size, whatever L is. Per-filter results are laid out group by group
(a layer's filters contiguous, at ``Segments.offsets[l]``); per-layer results come from segment
sums over those F filters (``index_add_``). The results equal
:func:`~varprobe.stats.filter_stats` and :func:`~varprobe.stats.grad_shift_stats` of each weight.
"""
from __future__ import annotations

import math
import weakref
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["Segments", "segment_sum", "run_sums", "DENSE_RUNS", "filter_sums", "filter_stats_many", "grad_shift_many", "segment_correlation"]

_F64 = torch.float64


class Segments:
    """Layout of the filters of L weights of shapes ``shapes``, grouped by filter size.

    ``groups``: (n, [layer indices]) in first-seen order; ``offsets[l]``: index of layer l's first
    filter in the group-ordered filter vector (``offsets[l] + O_l`` its end); ``layer_of`` (F,)
    long, ``n`` (F,), ``layer_n`` and ``layer_o`` (L,) float64, on ``device``."""

    def __init__(self, shapes: Sequence[Sequence[int]], device: torch.device | str = "cpu",
                 keys: Sequence | None = None) -> None:
        self.shapes = [tuple(s) for s in shapes]
        o = [s[0] for s in self.shapes]
        n = [math.prod(s[1:]) for s in self.shapes]
        by_key: dict = {}
        for layer, k in enumerate(n):  # ``keys``: group finer than by n (same n within a key)
            by_key.setdefault((k, keys[layer]) if keys is not None else k, []).append(layer)
        self.groups = [(n[members[0]], members) for members in by_key.values()]
        self.layers, self.filters = len(o), sum(o)
        self.offsets = [0] * len(o)
        layer_of, per_n, at = [], [], 0
        for k, members in self.groups:
            for layer in members:
                self.offsets[layer] = at
                at += o[layer]
                layer_of += [layer] * o[layer]
                per_n += [k] * o[layer]
        self.o = o
        self.device = torch.device(device)
        self._buffer: Tensor | None = None
        self._views: list[Tensor] = []
        self._mats: list[Tensor] = []
        self.layer_of = torch.tensor(layer_of, dtype=torch.long).to(device)
        self.n = torch.tensor(per_n, dtype=_F64).to(device)
        self.layer_n = torch.tensor(n, dtype=_F64).to(device)
        self.layer_o = torch.tensor(o, dtype=_F64).to(device)
        # filter lengths in buffer order, and twice: the lengths of filter_sums' one segment_reduce
        self.lengths = torch.tensor(per_n, dtype=torch.long).to(device)
        self.lengths2 = torch.tensor(per_n + per_n, dtype=torch.long).to(device)

    def gather(self, tensors: Sequence[Tensor]) -> list[Tensor]:
        """Copy ``tensors`` (shapes ``shapes``) into the float64 buffer, one ``_foreach_copy_``;
        returns per group the (F_g, n) matrix of its layers' filters (views of the buffer, valid
        until the next ``gather``)."""
        if self._buffer is None:
            numel = sum(o * k for o, k in zip(self.o, [math.prod(s[1:]) for s in self.shapes]))
            self._buffer = torch.empty(numel, dtype=_F64, device=self.device)
            views: list[Tensor | None] = [None] * self.layers
            at = 0
            for k, members in self.groups:
                g0 = at
                for layer in members:
                    views[layer] = self._buffer[at:at + self.o[layer] * k].view(self.shapes[layer])
                    at += self.o[layer] * k
                self._mats.append(self._buffer[g0:at].view(-1, k))
            self._views = views
        if torch.is_grad_enabled():  # (under no_grad the copy records nothing: no detach per tensor)
            tensors = [t.detach() for t in tensors]
        torch._foreach_copy_(self._views, list(tensors))
        return self._mats

    def flat(self, tensors: Sequence[Tensor]) -> Tensor:
        """``gather``, returning the whole float64 buffer (filters end to end, in group order)."""
        self.gather(tensors)
        return self._buffer


def segment_sum(values: Tensor, index: Tensor, size: int) -> Tensor:
    """out[..., j] = sum of values[..., i] over i with index[i] == j (along the last axis)."""
    out = values.new_zeros(values.shape[:-1] + (size,))
    return out.index_add_(values.ndim - 1, index, values)


#: On the CPU, where ``lengths`` form at most this many stretches of equal lengths, :func:`run_sums`
#: takes one dense row sum per stretch instead of one ``segment_reduce``: on a CPU that kernel is
#: slow (1.4 ms for 200k float64 entries on one core, against 0.06 ms for the four dense sums of
#: ResNet-20's filter sizes), and the few extra ops cost microseconds there. Other devices take the
#: one kernel (one launch). 0: always ``segment_reduce`` (``tests/probe/opcount.py`` counts that path).
DENSE_RUNS = 16

_STRETCHES: dict[int, tuple[weakref.ref, list[tuple[int, int, int]] | None]] = {}


def _stretches(lengths: Tensor) -> list[tuple[int, int, int]] | None:
    """(start, count, length) of each stretch of equal lengths of a CPU ``lengths`` (its last axis;
    every leading row the same), cached per tensor (lengths are built once with a layout); None
    where the rows differ, there are more than :data:`DENSE_RUNS` stretches or a length is 0."""
    hit = _STRETCHES.get(id(lengths))
    if hit is not None and hit[0]() is lengths:
        return hit[1]
    rows = lengths.reshape(-1, lengths.shape[-1]).tolist()
    runs: list[tuple[int, int, int]] | None = []
    start = 0
    for n in rows[0]:
        if runs and runs[-1][2] == n:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1, n)
        else:
            runs.append((start, 1, n))
        start += n
    if len(runs) > DENSE_RUNS or 0 in rows[0] or any(r != rows[0] for r in rows[1:]):
        runs = None
    if len(_STRETCHES) > 256:
        for key in [k for k, (ref, _) in _STRETCHES.items() if ref() is None]:
            del _STRETCHES[key]
    _STRETCHES[id(lengths)] = (weakref.ref(lengths), runs)
    return runs


def run_sums(values: Tensor, lengths: Tensor, axis: int = 0) -> Tensor:
    """Sums of consecutive runs of ``values`` along ``axis`` (the last axis of ``lengths``), run i
    of ``lengths[..., i]`` entries, accumulated in the values' dtype: one
    ``segment_reduce``, or on the CPU one dense row sum per stretch of equal lengths
    (:data:`DENSE_RUNS`). The lengths are not checked (built with the layout): checking them
    reads them on the host, a sync on a GPU."""
    axis = axis % values.dim()
    runs = _stretches(lengths) if DENSE_RUNS and values.device.type == "cpu" else None
    if runs is None:
        return torch.segment_reduce(values, "sum", lengths=lengths, axis=axis, unsafe=True)
    parts = [values.narrow(axis, start, count * n).unflatten(axis, (count, n)).sum(axis + 1)
             for start, count, n in runs]
    return parts[0] if len(parts) == 1 else torch.cat(parts, axis)


def filter_sums(tensors: Sequence[Tensor], seg: Segments) -> Tensor:
    """Per-filter sum and sum of squares of every weight in ``tensors`` (shapes ``seg.shapes``):
    float64 (2F,), the F sums then the F sums of squares, filters in group order, accumulated in
    float64. Four kernels whatever the number of weights: one copy into the float64 buffer, one
    square, one cat and one ``segment_reduce``. On the CPU, with at most :data:`DENSE_RUNS` filter
    sizes, a row sum and a row 2-norm of each size's (F_g, n) matrix instead, one cat, one square:
    no squared copy of the buffer (the sums of squares equal the one-kernel path's to rounding)."""
    if DENSE_RUNS and seg.device.type == "cpu" and len(seg.groups) <= DENSE_RUNS:
        mats = seg.gather(tensors)
        out = torch.cat([m.sum(1) for m in mats] + [torch.linalg.vector_norm(m, 2, 1) for m in mats])
        out[seg.filters:].square_()
        return out
    buf = seg.flat(tensors)
    return run_sums(torch.cat([buf, buf * buf]), seg.lengths2)


def _sums(tensors: Sequence[Tensor] | Tensor, seg: Segments) -> tuple[Tensor, Tensor]:
    sums = tensors if isinstance(tensors, Tensor) else filter_sums(tensors, seg)
    return sums.unflatten(-1, (2, seg.filters)).unbind(-2)


def filter_stats_many(tensors: Sequence[Tensor] | Tensor, seg: Segments) -> Tensor:
    """``filter_stats`` of every weight in ``tensors``: float64 (5, L), rows ``FILTER_STATS``
    (fan_var, filter_mean_abs, filter_sum_var, filter_sum_sq, sq_norm).

    ``tensors`` may instead be their :func:`filter_sums` (..., 2F), with any leading axes (steps
    buffered): the result is then (..., 5, L)."""
    s, q = _sums(tensors, seg)
    m = s / seg.n
    # E[x^2] - E[x]^2 in float64 costs about log10(m^2 / v) of its 16 digits (filters of trained
    # nets have m^2 / v well below 1e4)
    v = (q / seg.n - m * m).clamp_min(0.0)
    per = torch.stack([v * seg.n, m.abs(), s, s * s, seg.n * (v + m * m)], -2)
    fan_var, mean_abs, sum_mean, sum_sq, sq_norm = (segment_sum(per, seg.layer_of, seg.layers)
                                                    / seg.layer_o).unbind(-2)
    dev = s - sum_mean.index_select(-1, seg.layer_of)
    sum_var = segment_sum(dev * dev, seg.layer_of, seg.layers) / seg.layer_o
    return torch.stack([fan_var, mean_abs, sum_var, sum_sq, sq_norm], -2)


def grad_shift_many(tensors: Sequence[Tensor] | Tensor, seg: Segments) -> tuple[Tensor, Tensor, Tensor]:
    """``grad_shift_stats`` of every weight gradient in ``tensors`` (or of their
    :func:`filter_sums` (..., 2F), any leading axes).

    Returns (g_i (..., F): per-filter mean gradient; (..., 3, L) rows avg_abs, rms, shift_ratio;
    rms_i (..., F): per-filter sqrt(mean g^2), the scale of g_i's rounding), float64, filters in
    group order."""
    s, sq = _sums(tensors, seg)
    gi = s / seg.n
    rms_i = (sq / seg.n).sqrt()
    tot_abs, tot_sq = segment_sum(torch.stack([gi.abs(), sq], -2), seg.layer_of, seg.layers).unbind(-2)
    avg_abs = tot_abs / seg.layer_o
    rms = (tot_sq / (seg.layer_o * seg.layer_n)).sqrt()
    return gi, torch.stack([avg_abs, rms, avg_abs * seg.layer_n.sqrt() / rms], -2), rms_i


def segment_correlation(a: Tensor, b: Tensor, index: Tensor, size: int, count: Tensor) -> Tensor:
    """Pearson correlation of a and b within each segment (``count`` entries each), (..., size)
    (segments along the last axis; any leading axes)."""
    mean_a, mean_b = (segment_sum(torch.stack([a, b], -2), index, size) / count).unbind(-2)
    a0 = a - mean_a.index_select(-1, index)
    b0 = b - mean_b.index_select(-1, index)
    ab, aa, bb = segment_sum(torch.stack([a0 * b0, a0 * a0, b0 * b0], -2), index, size).unbind(-2)
    return ab / (aa * bb).sqrt()
