"""Per-channel sums of a tensor from one read, and the moments they give.

Partial sums of disjoint batches (micro-batches, flushes, ranks) merge by adding s, q and n: the
probe does exactly that, in its buffers.

Everything here is a pure function of tensors: no hooks, no state, no host sync.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["channel_sums", "channel_sum_norm", "channel_max", "fused_channel_sums", "channel_count", "count_nonfinite",
           "moments_from_sums"]


#: Up to this many elements, a CPU tensor's rows are summed in float64 directly: for such small
#: tensors (a launch-bound step) it costs what float32 does; for large ones it is several times slower.
SMALL_NUMEL = 8192


def _acc_dtype(x: Tensor) -> torch.dtype:
    # float64 (cannot overflow for finite float32/bfloat16/float16 input, needs no host check) for
    # float64 input, small CPU tensors and every accelerator tensor; float32 row partials for large
    # CPU tensors of lower precision, whose overflow channel_sums detects and redoes in float64.
    if x.dtype == torch.float64 or x.numel() <= SMALL_NUMEL or x.device.type != "cpu":
        return torch.float64
    return torch.float32


def _finite(s: Tensor, q: Tensor) -> bool:
    """Whether every entry of the float64 sums s and q is finite (one host read, CPU only).

    s . q is non-finite iff some entry of s or q is: an inf or NaN entry gives inf or NaN (inf * 0
    is NaN), and finite float64 sums of float32 partials cannot overflow their product."""
    return math.isfinite(torch.dot(s, q))


def _detached(x: Tensor) -> Tensor:
    """``x`` cut from autograd: itself where nothing would record (grad mode off, or ``x`` needs no
    grad), so a reduction under ``torch.no_grad()`` costs no ``detach`` op."""
    return x.detach() if x.requires_grad and torch.is_grad_enabled() else x


def channel_count(x: Tensor, dim: int = 1) -> int:
    """Number of elements of ``x`` per channel along ``dim``: numel / x.shape[dim] (host int, no sync)."""
    if x.ndim == 0:
        return 1
    c = x.shape[dim]
    return x.numel() // c if c else 0


def channel_sums(x: Tensor, dim: int = 1, *, with_max: bool = False, max_bound: bool = False
                 ) -> tuple[Tensor, Tensor, Tensor | None]:
    """Per-channel sum, sum of squares and (optionally) maximum of ``x``, reducing every axis but ``dim``.

        s_c = sum_{i in channel c} x_i,   q_c = sum_{i in channel c} x_i^2,   m_c = max_{i in channel c} x_i

    For x of shape (N, C, H, W) and dim=1 the reduction axes are (0, 2, 3); for a Linear input or
    output (N, F) with dim=-1 it is axis 0. A 0-d tensor is one channel.

    Each result has shape (C,) and dtype float64; the maximum keeps ``x``'s dtype. ``x`` is read
    once per statistic along its contiguous inner axes first (rows of H*W), which is several times
    faster on CPU than one strided reduction over (0, 2, 3), and ``torch.var_mean`` (Welford) is
    slower still. Rows of CPU tensors with more than ``SMALL_NUMEL`` elements are summed in
    float32 (float64 for float64 input) and the row partials in float64, so merging many batches by
    adding s and q loses nothing; smaller CPU tensors and tensors on other devices are summed in
    float64 throughout (no host sync).

    Range: s and q are finite for every finite ``x`` of dtype float16, bfloat16 or float32 (its
    largest square, about 1.2e77, and any sum of them fit a float64). The float32 row partials of
    a large CPU tensor overflow when entries exceed about 1.8e19; that is detected (one host read
    of s . q, CPU only) and the sums are recomputed in float64. Float64 ``x`` is summed in float64:
    entries beyond about 1.3e154 give q = inf, a second moment that float64 cannot represent.

    With ``max_bound=True`` the third result is instead, for contiguous ``x`` with rows longer than
    one, the largest row mean of the channel: a lower bound of m_c that costs no extra read. A
    positive bound proves the channel has a positive element; where it is <= 0, :func:`channel_max`
    gives the exact value. (Elsewhere the exact maximum is returned.)

    An empty ``x`` gives zero sums and maxima of -inf. Non-finite elements propagate: a channel
    holding inf or NaN has a non-finite s_c or q_c.
    """
    x = _detached(x)
    if x.ndim == 0:
        x = x.reshape(1)
    dim = dim % x.ndim
    acc = _acc_dtype(x)
    s, q, m = _channel_sums(x, dim, with_max, max_bound, acc)
    if acc != torch.float64 and not _finite(s, q):  # float32 partials overflowed, or x is not finite
        s, q, m = _channel_sums(x, dim, with_max, max_bound, torch.float64)
    return s, q, m


def _channel_sums(x: Tensor, dim: int, with_max: bool, max_bound: bool, acc: torch.dtype
                  ) -> tuple[Tensor, Tensor, Tensor | None]:
    """:func:`channel_sums` of a detached ``x`` with ndim >= 1, rows summed in ``acc``."""
    c = x.shape[dim]
    f64 = torch.float64
    want_max = with_max or max_bound
    if x.numel() == 0:
        zero = torch.zeros(c, dtype=f64, device=x.device)
        m = torch.full((c,), -torch.inf, dtype=x.dtype, device=x.device) if want_max else None
        return zero, zero.clone(), m
    if x.is_contiguous():
        rows = x.view(math.prod(x.shape[:dim]), c, -1)
        if rows.shape[2] > 1:
            row_sums = rows.sum(2, dtype=acc)
            s = row_sums.sum(0, dtype=f64)
            q = torch.linalg.vector_norm(rows, dim=2, dtype=acc).to(f64).square().sum(0)
            if max_bound:
                return s, q, row_sums.amax(0) / rows.shape[2]
            return s, q, rows.amax(2).amax(0) if with_max else None
        r = rows[:, :, 0]
    else:
        last = x.movedim(dim, -1)
        if not last.is_contiguous():
            dims = tuple(d for d in range(x.ndim) if d != dim)
            m = x.amax(dims) if want_max else None
            return x.sum(dims, dtype=f64), torch.linalg.vector_norm(x, dim=dims, dtype=f64).square(), m
        r = last.reshape(-1, c)  # e.g. channels_last activations: rows of C contiguous values
    s = r.sum(0, dtype=f64)
    q = torch.linalg.vector_norm(r, dim=0, dtype=f64).square()
    return s, q, r.amax(0) if want_max else None


def channel_sum_norm(x: Tensor, dim: int = 1, *, with_max: bool = False, max_bound: bool = False
                     ) -> tuple[Tensor, Tensor, Tensor | None]:
    """Per-channel sum s_c and root sum of squares r_c = sqrt(q_c) of ``x``, float64 (C,), and
    optionally the maximum, as :func:`channel_sums` (q_c = r_c^2; returning the root lets a caller
    square many channels' results in one kernel).

    Tensors of at most ``SMALL_NUMEL`` elements take two kernels (a float64 sum and a float64
    2-norm over every axis but ``dim``: the fewest launches, where a step is bound by launch
    overhead; entries are squared in float64, so finite float16/bfloat16/float32 input never
    overflows); larger ones go through :func:`channel_sums` (row-wise reductions, same range).
    """
    x = _detached(x)
    if x.ndim == 0 or x.numel() > SMALL_NUMEL or x.numel() == 0:
        s, q, m = channel_sums(x, dim, with_max=with_max, max_bound=max_bound)
        return s, q.sqrt(), m
    dim = dim % x.ndim
    dims = tuple(d for d in range(x.ndim) if d != dim)
    f64 = torch.float64
    s = torch.sum(x, dims, dtype=f64)
    r = torch.linalg.vector_norm(x, 2, dims, dtype=f64)
    return s, r, (x.amax(dims) if with_max or max_bound else None)


def channel_max(x: Tensor, dim: int = 1) -> Tensor:
    """Per-channel maximum of ``x`` over every axis but ``dim``, shape (C,), dtype of ``x``."""
    x = _detached(x)
    if x.ndim == 0:
        return x.reshape(1)
    dim = dim % x.ndim
    if x.numel() == 0:
        return torch.full((x.shape[dim],), -torch.inf, dtype=x.dtype, device=x.device)
    if x.is_contiguous():
        return x.view(math.prod(x.shape[:dim]), x.shape[dim], -1).amax(2).amax(0)
    return x.amax(tuple(d for d in range(x.ndim) if d != dim))


def _row_stats(rows: Tensor, upcast: bool) -> tuple[Tensor, Tensor, Tensor]:
    r = rows.to(torch.float64) if upcast else rows  # the cast fuses into the one read
    return r.sum(2), (r * r).sum(2), rows.amax(2)


_compiled_row_stats = None


def fused_channel_sums(x: Tensor, dim: int = 1, *, with_max: bool = False
                       ) -> tuple[Tensor, Tensor, Tensor | None]:
    """:func:`channel_sums` with the three row reductions fused into one read of ``x``.

    The row sums, sums of squares and maxima of the (A, C, B) view come from one kernel generated by
    ``torch.compile`` (inductor; dynamic shapes, so one compilation per dtype serves every layer);
    rows are summed as :func:`channel_sums` sums them (float32 partials for large CPU tensors, with
    the same overflow fallback, float64 otherwise).
    The first call compiles (tens of seconds on a small CPU, a few seconds with a warm inductor
    cache; a C++ compiler is needed on CPU). Tensors the kernel does not cover (non-contiguous,
    B = 1, not float32/float64) go to :func:`channel_sums`. Same results up to float rounding.
    """
    global _compiled_row_stats
    x = _detached(x)
    if not (x.ndim >= 2 and x.numel() and x.is_contiguous() and x.dtype in (torch.float32, torch.float64)):
        return channel_sums(x, dim, with_max=with_max)
    dim = dim % x.ndim
    c = x.shape[dim]
    rows = x.view(math.prod(x.shape[:dim]), c, -1)
    if rows.shape[2] == 1:
        return channel_sums(x, dim, with_max=with_max)
    if _compiled_row_stats is None:
        _compiled_row_stats = torch.compile(_row_stats, dynamic=True, fullgraph=True)
    upcast = _acc_dtype(x) == torch.float64 and x.dtype != torch.float64
    with torch.no_grad():  # one compiled graph for forward and backward hooks, no autograd wrapper
        rs, rq, rm = _compiled_row_stats(rows, upcast)
    f64 = torch.float64
    s, q = rs.sum(0, dtype=f64), rq.sum(0, dtype=f64)
    if x.dtype != f64 and not upcast and not _finite(s, q):  # CPU float32 partials overflowed
        return channel_sums(x, dim, with_max=with_max)
    return s, q, (rm.amax(0) if with_max else None)


def count_nonfinite(x: Tensor) -> Tensor:
    """Number of inf and NaN elements of ``x`` (0-d int64 tensor). One extra read of ``x``."""
    return torch.isfinite(_detached(x)).logical_not_().sum()


def moments_from_sums(n: Tensor | float, s: Tensor, q: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Mean, biased variance and second moment from a count and sums.

        mean = s / n,   sq_mean = q / n,   var = max(sq_mean - mean^2, 0)   (biased: divides by n)

    Shapes broadcast; n = 0 gives NaN. With float64 sums the cancellation in ``var`` costs
    about log10(mean^2 / var) of float64's 16 digits.
    """
    mean = s / n
    sq_mean = q / n
    var = (sq_mean - mean * mean).clamp_min(0.0)
    return mean, var, sq_mean
