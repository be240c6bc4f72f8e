"""Counting the aten ops a Probe adds to a training step (issue 27): the cost of a launch-bound
step is what it dispatches (on a GPU each op is a kernel launch), and, unlike a wall-clock ratio,
the count is the same on every machine and run. Used by ``tests/probe/test_op_budget.py`` and
``benchmarks/probe_overhead.py``.

An op is a top-level aten event of the torch profiler (CPU activity): an ``aten::`` event with no
aten op above it (the ops a kernel's own implementation calls are not counted again). Ops under
``Probe.step`` (a ``record_function`` label put around it) are counted apart; the rest of what a
probed step adds over the bare step (forward, backward, SGD) is the hooks'.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

from varprobe.stats import segments

__all__ = ["OpCount", "count_ops"]

_STEP = "varprobe.Probe.step"
_FLUSH = "varprobe.Probe.flush"


@dataclass
class OpCount:
    """Top-level aten ops of one training step, bare and probed (means over the profiled steps).

    ``added`` = ``hooks`` + ``step`` + ``flush``: what a recorded step adds, the flush's ops
    spread over the steps it transfers; ``reads``: tensors the hooks reduced per step;
    ``unrecorded``: what a step the schedule does not record adds (hooks and ``step()``)."""

    bare: float
    hooks: float
    step: float
    flush: float
    reads: float
    unrecorded: float

    @property
    def added(self) -> float:
        return self.hooks + self.step + self.flush

    @property
    def per_tensor(self) -> float:
        """Hook ops per probed tensor read."""
        return self.hooks / self.reads if self.reads else float("nan")


def _counts(prof) -> tuple[int, int, int]:
    """(ops outside step and flush, ops inside step(), ops inside flush())."""
    outside = inside = flushed = 0
    for e in prof.events():
        if not e.name.startswith("aten::"):
            continue
        label, a = None, e.cpu_parent
        while a is not None:
            if a.name.startswith("aten::"):
                break
            if a.name in (_STEP, _FLUSH) and label is None:
                label = a.name
            a = a.cpu_parent
        else:
            if label == _STEP:
                inside += 1
            elif label == _FLUSH:
                flushed += 1
            else:
                outside += 1
    return outside, inside, flushed


def count_ops(make_model: Callable[[], nn.Module], batch: tuple[torch.Tensor, torch.Tensor],
              make_probe: Callable[..., object], steps: int = 4, loss_fn: Callable = F.cross_entropy) -> OpCount:
    """Ops of a bare and a probed SGD training step of ``make_model()`` on ``batch`` (x, y).

    ``make_probe(model, every=..., flush_every=...)`` builds the probe (e.g. ``Probe`` or a
    ``functools.partial`` of it with quantities). The probed model records every step; after two
    warm-up steps (layouts, caches, first allocations) ``steps`` recorded steps are profiled, then
    one flush of those steps.

    Counted on the accelerator's path: ``varprobe.stats.segments.DENSE_RUNS`` is 0 while counting,
    so each run sum is the one ``segment_reduce`` a GPU launches (on the CPU the probe takes a few
    dense row sums instead, faster there; the values are the same)."""
    saved, segments.DENSE_RUNS = segments.DENSE_RUNS, 0
    try:
        return _count_ops(make_model, batch, make_probe, steps, loss_fn)
    finally:
        segments.DENSE_RUNS = saved


def _count_ops(make_model, batch, make_probe, steps, loss_fn) -> OpCount:
    x, y = batch
    torch.manual_seed(0)
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def train_step(probe) -> None:
        loss = loss_fn(model(x), y)
        loss.backward()
        if probe is not None:
            with record_function(_STEP):
                probe.step(loss=loss.detach(), lr=0.01)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def profiled(probe, n: int) -> tuple[int, int, int]:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(n):
                train_step(probe)
        return _counts(prof)

    for _ in range(2):
        train_step(None)
    bare = profiled(None, steps)[0] / steps

    probe = make_probe(model, every=1, flush_every=10 ** 6)
    reads = [0]
    hooks = probe._hooks
    real_sums = hooks._sums

    def counted(*args, **kwargs):
        reads[0] += 1
        return real_sums(*args, **kwargs)

    hooks._sums = counted
    probe.attach()
    try:
        for _ in range(2):
            train_step(probe)
        probe.flush()
        reads[0] = 0
        outside, inside, _ = profiled(probe, steps)
        n_reads = reads[0] / steps
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            with record_function(_FLUSH):
                probe.flush()
        flushed = _counts(prof)[2]
    finally:
        probe.remove()
        hooks._sums = real_sums

    between = make_probe(model, every=10 ** 9, flush_every=10 ** 6)  # records step 0 only
    between.attach()
    try:
        for _ in range(2):
            train_step(between)
        o, i, _ = profiled(between, steps)
    finally:
        between.remove()
    return OpCount(bare=bare, hooks=outside / steps - bare, step=inside / steps, flush=flushed / steps,
                   reads=n_reads, unrecorded=(o + i) / steps - bare)
