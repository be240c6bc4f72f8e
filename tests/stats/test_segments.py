"""Batched filter and gradient statistics of many weights, and the per-channel sum / root sum of
squares of the probe's hot path, against float64 definitions and the one-tensor functions."""
from __future__ import annotations

import itertools

import pytest
import torch

from varprobe.stats import (Segments, channel_sum_norm, correlation, filter_stats, filter_stats_many,
                            grad_shift_many, grad_shift_stats, layer_tap_overlap, segment_correlation,
                            run_sums, tap_overlap)
from varprobe.stats import segments
from varprobe.stats.moments import SMALL_NUMEL

F64 = torch.float64
SHAPES = [(8, 3, 3, 3), (5, 2, 1, 7), (4, 9), (6, 1, 3), (3, 27), (7, 3, 3, 3)]  # shared filter sizes


def _weights(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(s, generator=g) * 0.3 + 0.05 * (i - 2)).to(dtype) for i, s in enumerate(SHAPES)]


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_filter_stats_many_equals_filter_stats_of_each(dtype):
    ws = _weights(dtype)
    seg = Segments([w.shape for w in ws])
    assert len(seg.groups) < len(ws)  # (8,3,3,3), (3,27) and (7,3,3,3) share a group
    got = filter_stats_many(ws, seg)
    want = torch.stack([filter_stats(w) for w in ws], 1)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-13)
    ws2 = [w * 2 for w in ws]  # the buffer is refilled, not reused stale
    torch.testing.assert_close(filter_stats_many(ws2, seg), torch.stack([filter_stats(w) for w in ws2], 1),
                               rtol=1e-9, atol=1e-13)


def test_grad_shift_many_equals_grad_shift_stats_of_each():
    gs = _weights()
    seg = Segments([g.shape for g in gs])
    gi, st, rms_i = grad_shift_many(gs, seg)
    for j, g in enumerate(gs):
        want_gi, want = grad_shift_stats(g)
        o = seg.offsets[j]
        torch.testing.assert_close(gi[o:o + g.shape[0]], want_gi, rtol=1e-9, atol=1e-15)
        torch.testing.assert_close(st[:, j], want, rtol=1e-9, atol=1e-15)
        ref = g.to(F64).flatten(1).square().mean(1).sqrt()
        torch.testing.assert_close(rms_i[o:o + g.shape[0]], ref, rtol=1e-9, atol=0)


def test_segment_correlation_equals_correlation():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(11, generator=g, dtype=F64), torch.randn(11, generator=g, dtype=F64)
    index = torch.tensor([0] * 4 + [1] * 7)
    got = segment_correlation(a, b, index, 2, torch.tensor([4.0, 7.0], dtype=F64))
    torch.testing.assert_close(got, torch.stack([correlation(a[:4], b[:4]), correlation(a[4:], b[4:])]))


@pytest.mark.parametrize("shape,dim", [((4, 6, 5, 3), 1), ((7, 5), -1), ((64, 16, 8, 8), 1)])
def test_channel_sum_norm_small_and_large_paths(shape, dim):
    x = torch.randn(shape) * 3 + 1
    assert (x.numel() > SMALL_NUMEL) == (shape[0] == 64)
    s, r, m = channel_sum_norm(x, dim, with_max=True)
    rows = x.to(F64).movedim(dim, -1).reshape(-1, x.shape[dim])
    torch.testing.assert_close(s, rows.sum(0), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(r * r, rows.square().sum(0), rtol=1e-6, atol=0)
    torch.testing.assert_close(m.to(F64), rows.amax(0))


def test_channel_sum_norm_does_not_overflow_on_small_float32_tensors():
    x = torch.full((2, 3, 4, 4), 1e20)
    _, r, _ = channel_sum_norm(x)
    torch.testing.assert_close(r * r, torch.full((3,), 32 * 1e40, dtype=F64), rtol=1e-6, atol=0)


def test_layer_tap_overlap_padding_forms():
    assert torch.equal(layer_tap_overlap((5,)), torch.ones(1, 1, dtype=F64))
    same = layer_tap_overlap((6, 7), (3, 2), (1, 1), (1, 2), "same")
    assert torch.equal(same, tap_overlap((6, 7), (3, 2), (1, 1), (1, 2), [(1, 1), (1, 1)]))
    assert torch.equal(layer_tap_overlap((6, 6), (3, 3), (1, 1), (1, 1), "valid"), torch.ones(9, 9, dtype=F64))
    assert torch.equal(layer_tap_overlap((6, 6), (3, 3), (1, 1), (1, 1), (1, 1), "reflect"),
                       torch.ones(9, 9, dtype=F64))
    torch.testing.assert_close(layer_tap_overlap((6, 6), (3, 3), (2, 2), (1, 1), (1, 1)),
                               tap_overlap((6, 6), (3, 3), (2, 2), (1, 1), [(1, 1), (1, 1)]))


@pytest.mark.parametrize("lengths", [[3, 3, 3, 5, 5, 1], [27] * 4 + [144] * 8 + [576] * 3, list(range(1, 40)), [2, 0, 2]],
                         ids=["few stretches", "resnet-like", "more stretches than DENSE_RUNS", "a zero length"])
@pytest.mark.parametrize("dense", [0, segments.DENSE_RUNS], ids=["segment_reduce", "dense on the cpu"])
def test_run_sums_of_either_path_equal_a_float64_loop(lengths, dense, monkeypatch):
    monkeypatch.setattr(segments, "DENSE_RUNS", dense)
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(3, sum(lengths), generator=gen, dtype=F64)
    edges = [0, *itertools.accumulate(lengths)]
    want = torch.tensor([[float(values[r, a:b].sum()) for a, b in zip(edges, edges[1:])] for r in range(3)], dtype=F64)
    got_rows = run_sums(values, torch.tensor([lengths] * 3), axis=1)
    got_flat = run_sums(values[1], torch.tensor(lengths))
    torch.testing.assert_close(got_rows, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_flat, want[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shapes", [SHAPES, [(2, k) for k in range(1, 20)]],
                         ids=["shared sizes", "more sizes than DENSE_RUNS"])
@pytest.mark.parametrize("dense", [0, segments.DENSE_RUNS], ids=["segment_reduce", "dense on the cpu"])
def test_filter_sums_of_either_path_equal_a_float64_loop(shapes, dense, monkeypatch):
    monkeypatch.setattr(segments, "DENSE_RUNS", dense)
    gen = torch.Generator().manual_seed(1)
    ws = [torch.randn(s, generator=gen) * 0.3 + 0.1 for s in shapes]
    seg = Segments([w.shape for w in ws])
    got = segments.filter_sums(ws, seg)
    s, q = torch.zeros(seg.filters, dtype=F64), torch.zeros(seg.filters, dtype=F64)
    for j, w in enumerate(ws):  # filters of layer j at its offset, in float64 one by one
        for i, f in enumerate(w.reshape(w.shape[0], -1).tolist()):
            s[seg.offsets[j] + i] = sum(f)
            q[seg.offsets[j] + i] = sum(x * x for x in f)
    torch.testing.assert_close(got, torch.cat([s, q]), rtol=1e-12, atol=1e-14)
