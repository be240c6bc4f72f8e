"""Per-channel sums, and moments of added partial sums, against float64 definitions."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from varprobe.stats import (channel_count, channel_max, channel_sum_norm, channel_sums, count_nonfinite,
                            moments_from_sums)
from varprobe.stats import moments as moments_module

F64 = torch.float64


def _ref(x: torch.Tensor, dim: int):
    rows = x.to(F64).movedim(dim, -1).reshape(-1, x.shape[dim])
    return rows.sum(0), rows.square().sum(0), rows.amax(0)


@pytest.mark.parametrize("shape,dim", [((5, 3, 7, 4), 1), ((6, 5), -1), ((6, 5), 1), ((2, 3, 5), -1),
                                        ((4, 2, 3, 3, 2), 1), ((7,), 0), ((0, 3, 2, 2), 1)])
def test_channel_sums_contiguous(shape, dim):
    x = torch.randn(shape, dtype=F64)
    s, q, m = channel_sums(x, dim, with_max=True)
    rs, rq, rm = _ref(x, dim) if x.numel() else (torch.zeros(shape[dim], dtype=F64),) * 2 + (None,)
    torch.testing.assert_close(s, rs)
    torch.testing.assert_close(q, rq)
    if x.numel():
        torch.testing.assert_close(m, rm)
    assert s.dtype == q.dtype == F64 and s.shape == (shape[dim],)
    assert channel_count(x, dim) == (x.numel() // shape[dim])


def test_channel_sums_channels_last_and_strided():
    x = torch.randn(4, 5, 6, 3, dtype=F64)
    for t in (x.to(memory_format=torch.channels_last), x[:, :, ::2], x.transpose(2, 3)):
        s, q, m = channel_sums(t, 1, with_max=True)
        rs, rq, rm = _ref(t, 1)
        torch.testing.assert_close(s, rs)
        torch.testing.assert_close(q, rq)
        torch.testing.assert_close(m, rm)


@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 1e-5), (torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
def test_channel_sums_low_precision(dtype, rtol):
    x = (torch.randn(8, 4, 16, 16) + 0.5).to(dtype)
    s, q, _ = channel_sums(x, 1)
    rs, rq, _ = _ref(x, 1)
    torch.testing.assert_close(s, rs, rtol=rtol, atol=rtol * rs.abs().max().item())
    torch.testing.assert_close(q, rq, rtol=rtol, atol=0)


def test_nonfinite_propagates_and_counts():
    x = torch.randn(3, 4, 5, 5)
    x[0, 1, 2, 2] = float("inf")
    x[2, 3, 0, 0] = float("nan")
    s, q, _ = channel_sums(x, 1)
    assert not torch.isfinite(q[1]) and not torch.isfinite(q[3])
    assert torch.isfinite(q[[0, 2]]).all()
    assert count_nonfinite(x).item() == 2


def test_moments_from_sums():
    x = torch.randn(1000, dtype=F64) * 3 + 2
    mean, var, sq = moments_from_sums(x.numel(), x.sum(), x.square().sum())
    torch.testing.assert_close(mean, x.mean())
    torch.testing.assert_close(var, x.var(unbiased=False))
    torch.testing.assert_close(sq, x.square().mean())


_DTYPES = {"float64": (F64, 1e-10), "float32": (torch.float32, 1e-4), "float16": (torch.float16, 5e-3)}


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=6),
       loc=st.floats(-50, 50), scale=st.floats(0.01, 20), dtype=st.sampled_from(sorted(_DTYPES)),
       seed=st.integers(0, 2 ** 16), big=st.booleans())
def test_added_sums_of_random_splits_equal_direct_computation(sizes, loc, scale, dtype, seed, big):
    """What the probe does across micro-batches, flushes and ranks: add each part's (n, s, q) from
    ``channel_sum_norm`` (its hooks' reduction; q = r^2, as its buffers square r) and take
    ``moments_from_sums`` of the totals. Over random splits and dtypes this equals the direct
    float64 moments of the concatenation (of the values as stored in ``dtype``). ``big`` parts,
    N x 3 x 32 x 32 (more than SMALL_NUMEL elements once N >= 3), take the float32 row partials
    of ``channel_sums``."""
    torch_dtype, rtol = _DTYPES[dtype]
    g = torch.Generator().manual_seed(seed)
    tail = (32, 32) if big else ()
    parts = [(torch.randn(n, 3, *tail, generator=g, dtype=F64) * scale + loc).to(torch_dtype) for n in sizes]
    whole = torch.cat(parts).to(F64).movedim(1, -1).reshape(-1, 3)
    n, s, q = 0, torch.zeros(3, dtype=F64), torch.zeros(3, dtype=F64)
    for p in parts:
        ps, pr, _ = channel_sum_norm(p, 1)
        n, s, q = n + channel_count(p, 1), s + ps, q + pr * pr
    mean, var, sq = moments_from_sums(n, s, q)
    ref_mean, ref_var = whole.mean(0), whole.var(0, unbiased=False)
    spread = ref_var.clamp_min(1e-30)
    assert n == whole.shape[0]
    # compare means on the scale of the spread, variances relative to themselves
    scale_m = (spread.sqrt() + ref_mean.abs())
    np.testing.assert_array_less(((mean - ref_mean).abs() / scale_m).numpy(), rtol * 10)
    tol_var = rtol * 10 * (1 + (ref_mean.square() / spread))  # E[x^2] - E[x]^2 cancellation
    np.testing.assert_array_less(((var - ref_var).abs() / spread).numpy(), tol_var.numpy())
    torch.testing.assert_close(sq, whole.square().mean(0), rtol=rtol * 10, atol=0)


def test_max_bound_and_channel_max():
    x = torch.randn(6, 4, 5, 3, dtype=F64)
    x[:, 1] = -x[:, 1].abs()  # a dead channel
    x[:, 2] = x[:, 2].abs() + 0.1
    _, _, bound = channel_sums(x, 1, max_bound=True)
    exact = _ref(x, 1)[2]
    assert (bound <= exact + 1e-12).all()
    assert bound[1] <= 0 and bound[2] > 0
    torch.testing.assert_close(channel_max(x, 1), exact)
    torch.testing.assert_close(channel_max(x.to(memory_format=torch.channels_last), 1), exact)
    assert channel_max(torch.zeros(0, 3), -1).shape == (3,)


@pytest.mark.parametrize("shape", [(5, 3, 7, 4), (9, 3, 32, 20)])  # below and above SMALL_NUMEL
@pytest.mark.parametrize("dtype,scale", [(torch.float32, 1e20), (torch.float32, 1e36),
                                         (torch.bfloat16, 1e30), (torch.float16, 6e4)])
def test_sums_of_squares_of_large_finite_values_do_not_overflow(shape, dtype, scale):
    # Entries up to `scale` in magnitude: their squares overflow float32 (float16), not float64.
    # both paths: float64 throughout (small) and float32 partials with the float64 redo (large)
    assert (math.prod(shape) > getattr(moments_module, "SMALL_NUMEL", 8192)) == (shape[0] == 9)
    g = torch.Generator().manual_seed(3)
    base = torch.randn(*shape, generator=g, dtype=F64).clamp(-5, 5) / 5
    x = (base * scale).to(dtype)
    assert torch.isfinite(x).all()
    for t, dim in ((x, 1), (x.to(memory_format=torch.channels_last), 1), (x[:, :, ::2], 1),
                   (x.flatten(1), -1), (x.flatten(2)[:, :, :1], 1)):
        s, q, m = channel_sums(t, dim, with_max=True)
        rs, rq, rm = _ref(t, dim)
        assert torch.isfinite(s).all() and torch.isfinite(q).all()
        # float32 row partials: s (a signed sum) to 1e-6 of sum |x|, q (no cancellation) relative
        torch.testing.assert_close(s, rs, rtol=0.0, atol=1e-6 * t.to(F64).abs().sum().item())
        torch.testing.assert_close(q, rq, rtol=1e-6, atol=0.0)
        _, _, bound = channel_sums(t, dim, max_bound=True)
        assert (bound.to(F64) <= rm + 1e-6 * rm.abs()).all()
        n, s, q = channel_count(t, dim), s.sum(), q.sum()
        mean, var, sq_mean = moments_from_sums(n * t.shape[dim], s, q)
        flat = t.to(F64).flatten()
        assert math.isclose(var.item(), flat.var(unbiased=False).item(), rel_tol=1e-6)
        assert math.isclose(sq_mean.item(), flat.square().mean().item(), rel_tol=1e-6)
    assert count_nonfinite(x).item() == 0
