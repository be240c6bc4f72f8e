"""Overhead of varprobe's Probe on a CIFAR ResNet-20 training step (CPU), as a markdown report.

Configurations, run interleaved (each repetition runs a block of 10 consecutive training steps of
every configuration in turn, so machine noise hits all of them alike):

- unprobed;
- bare floor: no varprobe code at all, forward hooks on the modules a Probe hooks that take one
  per-channel sum of each output and, through ``Tensor.register_hook``, of each output gradient
  (``_channel_sum``: row sums, as the probe reads large tensors): the issue's floor (one extra read
  of every probed tensor), the least any hook-based probe of these tensors pays in eager PyTorch;
- probe machinery: the Probe's hot path with the reduction replaced by one read (``_channel_sum``)
  of each tensor it reads, i.e. the same reads plus the probe's bookkeeping and its step() statistics;
- Probe every step, default quantities ("all");
- Probe every 10 steps (each block holds one recorded step);
- Probe every step, ``quantities="forward"`` (output statistics only);
- Probe attached but recording no step (launch-bound section): what a step between recorded
  steps costs (two root hooks and ``step()``);
- Probe every step, every quantity but the variance decomposition ``dec.*`` (what ``dec.*`` costs);
- Probe every step with ``fused=True`` (one compiled kernel reads each tensor once);
- naive: hooks that compute the same statistics with separate reductions and call ``.item()`` on
  each, per layer (as fastai's ActivationStats and most hand-written probes do).

Reported per configuration: median ms per step over repetitions (wall clock and process CPU time),
the median over repetitions of the ratio to the unprobed block of the same repetition, and the
probe's self time: the process CPU time spent inside the probe's hooks, ``step()`` and flushes,
relative to the rest of the step (robust to other load on a shared machine, but blind to indirect
costs such as cache pollution), and the same time in ms per step (a ratio moves when the rest of
the step does; the ms do not). A second pass runs with one thread.
Memory: bytes the probe holds (batch 32 vs 128) and peak live CPU memory of one step from the
torch profiler's memory timeline.

A launch-bound section comes first: batch 4, 8x8 input, 1 thread (the regime of a GPU step, where
the host's per-kernel cost dominates), with the floor and naive arms. A small transformer follows
(``TinyEncoder``: an ``nn.TransformerEncoder`` of 3 layers, d_model 32, 4 heads, on random tokens;
batch 16, 32 tokens, 1 thread): unprobed, every step, every 10 steps and the forward preset, where the
probe also records each attention's Q, K, V and out_proj weights and the residual stream of the
blocks it finds.

Op counts (issue 27) come first in the launch-bound and transformer sections: the top-level aten
ops a recorded step adds (``tests/probe/opcount.py``: profiler, CPU activity, aten events with no
aten op above them, gradient hooks inside backward included), split into the hooks, ``step()``
and the flush (spread over its steps), per probed tensor read, and what an unrecorded step adds.

Usage: python benchmarks/probe_overhead.py [--reps 6] [--steps 10] [--batch 128] > report.md
       python benchmarks/probe_overhead.py --only ops                       # op counts only
       python benchmarks/probe_overhead.py --only launch [--launch-reps 15]   # launch-bound only
       python benchmarks/probe_overhead.py --only batch --reps 3               # batch-128 targets only
       python benchmarks/probe_overhead.py --only transformer [--launch-reps 15]   # the small transformer only
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import varprobe.probe.hooks as hooks_module
from varprobe.models import resnet_cifar
from varprobe.probe import QUANTITIES, Probe
from varprobe.probe.select import select
from varprobe.stats.moments import SMALL_NUMEL

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the op counter lives with the tests
from tests.probe.opcount import count_ops  # noqa: E402


def _channel_sum(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """One read of ``x``: its float64 per-channel sum, the cheapest way the probe could take it
    (row sums along the contiguous inner axes, in float32 for large CPU tensors, as
    ``varprobe.stats.channel_sums`` reads them; one strided float64 reduction for small ones)."""
    x = x.detach()
    dim = dim % max(x.ndim, 1)
    if x.ndim > dim + 1 and x.is_contiguous() and x.numel() > SMALL_NUMEL:
        rows = x.view(math.prod(x.shape[:dim]), x.shape[dim], -1)
        return rows.sum(2).sum(0, dtype=torch.float64)
    return x.sum(tuple(d for d in range(x.ndim) if d != dim), dtype=torch.float64)


def _one_read(x, dim=1, with_max=False, max_bound=False):
    s = _channel_sum(x, dim)  # the floor: one read of the tensor
    return s, s, (s if with_max or max_bound else None)


class BareFloor:
    """One float64 per-channel sum of every probed module's output and of its gradient, with bare
    hooks and no bookkeeping (the results are dropped at each step)."""

    def __init__(self, model: nn.Module) -> None:
        self.modules = [t.module for t in select(model) if t.role != "branch"]
        self.handles: list = []
        self.sums: list[torch.Tensor] = []

    def _hook(self, module, args, out) -> None:
        if not isinstance(out, torch.Tensor):
            return
        self.sums.append(_channel_sum(out))
        if out.requires_grad:
            out.register_hook(lambda g: self.sums.append(_channel_sum(g)))

    def attach(self) -> None:
        self.handles = [m.register_forward_hook(self._hook) for m in self.modules]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def step(self, loss=None, lr=None) -> None:
        self.sums.clear()


class Naive:
    """Per-layer statistics with one reduction and one ``.item()`` per statistic (host lists)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.targets = [t for t in select(model) if t.role != "branch"]
        self.handles: list = []
        self.log: list[tuple[str, str, float]] = []

    def _moments(self, name: str, prefix: str, x: torch.Tensor, channel: bool) -> None:
        x = x.detach()
        log = self.log.append
        log((name, prefix + "mean", x.mean().item()))
        log((name, prefix + "var", x.var(unbiased=False).item()))
        log((name, prefix + "sq_mean", (x * x).mean().item()))
        if channel and x.ndim >= 2:
            dims = tuple(d for d in range(x.ndim) if d != 1)
            log((name, prefix + "ch_var", x.var(dims, unbiased=False).mean().item()))
            log((name, prefix + "ch_sq_mean", x.mean(dims).pow(2).mean().item()))
            log((name, prefix + "dead_frac", (x.amax(dims) <= 0).float().mean().item()))
            log((name, prefix + "nonfinite", float((~torch.isfinite(x)).sum().item())))

    def _hook(self, name: str, role: str):
        def hook(module, args, out):
            if role == "block":
                self._moments(name, "block.out.", out, True)
                return
            if isinstance(args[0], torch.Tensor):
                self._moments(name, "in.", args[0], False)
            self._moments(name, "out.", out, True)
            if out.requires_grad:
                out.register_hook(lambda g: self._moments(name, "grad_out.", g, False))
        return hook

    def attach(self) -> None:
        self.handles = [t.module.register_forward_hook(self._hook(t.name, t.role)) for t in self.targets]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    def step(self, loss=None, lr=None) -> None:
        for t in self.targets:
            w = getattr(t.module, "weight", None)
            if t.role not in ("conv", "linear") or w is None or w.grad is None:
                continue
            f, g = w.detach().flatten(1), w.grad.flatten(1)
            n = f.shape[1]
            self.log.append((t.name, "w.fan_var", (n * f.var(1, unbiased=False)).mean().item()))
            self.log.append((t.name, "w.filter_mean_abs", f.mean(1).abs().mean().item()))
            self.log.append((t.name, "w.filter_sum_var", f.sum(1).var(unbiased=False).item()))
            self.log.append((t.name, "w.filter_sum_sq", f.sum(1).pow(2).mean().item()))
            gi = g.mean(1)
            rms = g.pow(2).mean().sqrt().item()
            self.log.append((t.name, "gw.avg_abs", gi.abs().mean().item()))
            self.log.append((t.name, "gw.rms", rms))
            self.log.append((t.name, "gw.shift_ratio", gi.abs().mean().item() / (rms / n ** 0.5)))
        if loss is not None:
            self.log.append(("", "loss", float(loss)))


class TinyEncoder(nn.Module):
    """Token embedding, a 3-layer ``nn.TransformerEncoder`` (d_model 32, 4 heads, no dropout) and a
    per-token linear head; returns logits ``[batch, vocab, tokens]``, the layout ``F.cross_entropy``
    takes with targets ``[batch, tokens]``."""

    VOCAB = 16

    def __init__(self, d: int = 32, heads: int = 4, layers: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(self.VOCAB, d)
        layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=2 * d, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, self.VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens))).transpose(1, 2)


BARE = "bare floor: one sum per probed output and output gradient, bare hooks"
BETWEEN = "Probe attached, no step recorded (the cost between recorded steps)"
UNPROBED, FLOOR, EVERY1, EVERY10, FORWARD, NO_DEC, FUSED, NAIVE = (
    "unprobed", "probe machinery: the Probe with one sum per tensor read", "Probe every step (all quantities)",
    "Probe every 10 steps", "Probe every step, quantities='forward'", "Probe every step, all but dec.*",
    "Probe every step, fused=True", "naive: .item() per statistic per layer")


class SelfTime:
    """Process CPU time spent inside a Probe's own code (hooks, step, flush): a measure of its
    overhead that, unlike differences between runs, does not depend on other load on the machine.
    Wraps the probe's hook methods before they are registered (benchmark instrumentation only)."""

    def __init__(self, probe: Probe) -> None:
        self.seconds = 0.0
        for name in ("_on_forward", "_on_grad", "_on_root", "_on_root_done"):
            setattr(probe._hooks, name, self._timed(getattr(probe._hooks, name)))
        for name in ("step", "remove"):
            setattr(probe, name, self._timed(getattr(probe, name)))

    def _timed(self, fn):
        def timed(*args, **kwargs):
            t = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.process_time() - t
        return timed


def make_configs(model: nn.Module, quick: bool | str = False) -> dict[str, object]:
    if quick:  # the configurations the targets are about (launch-bound: with floor and naive)
        configs = {UNPROBED: None, EVERY1: Probe(model, flush_every=10),
                   EVERY10: Probe(model, every=10, flush_every=10),
                   FORWARD: Probe(model, quantities="forward", flush_every=10)}
        if quick != "targets":
            configs.update({BARE: BareFloor(model), FLOOR: Probe(model, flush_every=10), NAIVE: Naive(model),
                            BETWEEN: Probe(model, every=10**9, flush_every=10)})  # records only step 0 (warm-up)
        return configs
    return {UNPROBED: None, BARE: BareFloor(model), FLOOR: Probe(model, flush_every=10), EVERY1: Probe(model, flush_every=10),
            EVERY10: Probe(model, every=10, flush_every=10),
            FORWARD: Probe(model, quantities="forward", flush_every=10),
            NO_DEC: Probe(model, quantities=[q for q in QUANTITIES if not q.startswith("dec.")], flush_every=10),
            FUSED: Probe(model, flush_every=10, fused=True), NAIVE: Naive(model)}


def run_block(model, opt, batch, probe, steps: int, floor: bool) -> tuple[float, float, float]:
    x, y = batch
    real = hooks_module.channel_sum_norm
    if floor:
        hooks_module.channel_sum_norm = _one_read
    timer = getattr(probe, "_bench_timer", None)
    self0 = timer.seconds if timer else 0.0
    if probe is not None:
        probe.attach()
    try:
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            if probe is not None:
                probe.step(loss=loss.detach(), lr=0.01)
            opt.step()
            opt.zero_grad(set_to_none=True)
        if probe is not None:
            probe.remove()  # flushes: the transfer and table building are timed too
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    finally:
        if probe is not None:
            probe.remove()
        hooks_module.channel_sum_norm = real
    own = (timer.seconds - self0) if timer else float("nan")
    return wall / steps, cpu / steps, own / steps


def timing_pass(threads: int, reps: int, steps: int, batch_size: int, size: int = 32,
                quick: bool | str = False, arch: str = "resnet20") -> dict[str, dict[str, list[float]]]:
    """``arch``: "resnet20" (images ``size`` x ``size``) or "transformer" (:class:`TinyEncoder`,
    sequences of ``size`` tokens)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = TinyEncoder() if arch == "transformer" else resnet_cifar(20, "bn")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    if arch == "transformer":
        tokens = torch.randint(0, TinyEncoder.VOCAB, (batch_size, size), generator=g)
        batch = (tokens, tokens.cummax(dim=1).values)
    else:
        batch = (torch.randn(batch_size, 3, size, size, generator=g), torch.randint(0, 10, (batch_size,), generator=g))
    configs = make_configs(model, quick)
    for name, probe in configs.items():
        if isinstance(probe, Probe) and name != FLOOR:
            probe._bench_timer = SelfTime(probe)
    for name, probe in configs.items():  # warm-up (and allocation); keeps blocks aligned on 10 steps
        run_block(model, opt, batch, probe, steps, name == FLOOR)
    out = {name: {"wall": [], "cpu": [], "self": []} for name in configs}
    for _ in range(reps):
        for name, probe in configs.items():
            wall, cpu, own = run_block(model, opt, batch, probe, steps, name == FLOOR)
            out[name]["wall"].append(wall)
            out[name]["cpu"].append(cpu)
            out[name]["self"].append(own)
    return out


def table(res: dict[str, dict[str, list[float]]], clocks: tuple[str, ...]) -> str:
    """Median ms/step and median paired ratio to unprobed per clock, and the probe's own CPU time
    as a fraction of the rest of the step (``self``) and in ms per step."""
    base = res[UNPROBED]
    head = ("| configuration |" + "".join(f" {c} ms/step | {c} ratio |" for c in clocks)
            + " probe self time | probe self ms/step |")
    lines = [head, "|---|" + "---:|---:|" * len(clocks) + "---:|---:|"]
    for name, r in res.items():
        cells = []
        for c in clocks:
            ratios = [a / b for a, b in zip(r[c], base[c])]
            cells.append(f" {statistics.median(r[c]) * 1e3:.1f} | {statistics.median(ratios):.3f} |")
        own = [o / (c - o) for o, c in zip(r["self"], r["cpu"])]
        cells.append(f" {statistics.median(own):+.1%} |" if own and own[0] == own[0] else " |")
        cells.append(f" {statistics.median(r['self']) * 1e3:.2f} |" if own and own[0] == own[0] else " |")
        lines.append(f"| {name} |" + "".join(cells))
    return "\n".join(lines)


def probe_bytes(batch_size: int) -> tuple[int, int]:
    torch.manual_seed(0)
    model = resnet_cifar(20, "bn")
    probe = Probe(model, flush_every=1000)
    x, y = torch.randn(batch_size, 3, 32, 32), torch.randint(0, 10, (batch_size,))
    with probe:
        for _ in range(3):
            F.cross_entropy(model(x), y).backward()
            probe.step()
            model.zero_grad()
        held = probe.nbytes
        probe._pending.clear()
    return held, probe._hooks.acc["train"].nbytes()


def peak_step_memory(kind: str, batch_size: int) -> float | None:
    """Peak live CPU bytes during one training step (torch profiler memory timeline), MiB."""
    try:
        from torch.profiler import ProfilerActivity, profile
        from torch.profiler._memory_profiler import MemoryProfileTimeline
    except ImportError:
        return None
    torch.manual_seed(0)
    model = resnet_cifar(20, "bn")
    x, y = torch.randn(batch_size, 3, 32, 32), torch.randint(0, 10, (batch_size,))
    probe = {"unprobed": None, "probe": Probe(model), "naive": Naive(model)}[kind]
    if probe is not None:
        probe.attach()
    F.cross_entropy(model(x), y).backward()  # allocate the probe's buffers before measuring
    if probe is not None:
        probe.step()
    model.zero_grad(set_to_none=True)
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                     with_stack=True) as prof:
            F.cross_entropy(model(x), y).backward()
            if probe is not None:
                probe.step()
        _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline(torch.device("cpu"))
        return max(sum(s) for s in sizes) / 2 ** 20
    except Exception:  # private API: report n/a rather than fail the benchmark
        return None
    finally:
        if probe is not None:
            probe.remove()


def op_counts(arch: str) -> str:
    """Markdown table of the aten ops a recorded step adds (``tests/probe/opcount.py``), 1 thread:
    ResNet-20 at batch 4, 8x8 (the launch-bound arm) or :class:`TinyEncoder` at batch 16, 32 tokens."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    if arch == "transformer":
        tokens = torch.randint(0, TinyEncoder.VOCAB, (16, 32), generator=g)
        make, batch = TinyEncoder, (tokens, tokens.cummax(dim=1).values)
    else:
        make = lambda: resnet_cifar(20, "bn")  # noqa: E731
        batch = (torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 10, (4,), generator=g))
    rows = []
    for label, factory in (("all quantities", Probe),
                           ("quantities='forward'", lambda m, **kw: Probe(m, quantities="forward", **kw))):
        c = count_ops(make, batch, factory)
        rows.append(f"| {label} | {c.bare:.0f} | {c.added:.0f} | {c.hooks:.0f} | {c.step:.0f} | {c.flush:.1f} | "
                    f"{c.reads:.0f} | {c.per_tensor:.2f} | {c.unrecorded:.0f} |")
    torch.set_num_threads(threads)
    head = ("| probe | bare step | added per recorded step | hooks | step() | flush (per step) | tensors read | "
            "hook ops per tensor | added by an unrecorded step |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    return "Top-level aten ops per training step (tests/probe/opcount.py), 1 thread\n\n" + head + "\n" + "\n".join(rows)


def machine() -> str:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return (f"- CPU: {cpu}, {os.cpu_count()} logical cores; torch {torch.__version__} "
            f"({torch.get_num_threads()} threads by default); Python {platform.python_version()}\n"
            f"- load average at start (1/5/15 min): {', '.join(f'{v:.2f}' for v in load)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--steps", type=int, default=10, help="steps per block (every-10 needs 10)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--only", choices=("launch", "batch", "transformer", "ops"), default=None,
                    help="run only the launch-bound section (batch 4, 8 px, 1 thread), only the batch one, "
                         "or only the small transformer (batch 16, 32 tokens, 1 thread)")
    ap.add_argument("--launch-reps", type=int, default=15)
    args = ap.parse_args()
    if args.only == "ops":
        print("## Op counts: ResNet-20 (BN), batch 4, 8x8 input\n")
        print(op_counts("resnet20"), "\n")
        print("## Op counts: small transformer (TinyEncoder), batch 16, 32 tokens\n")
        print(op_counts("transformer"))
        return
    if args.only in (None, "transformer"):
        t0 = time.time()
        print("## Small transformer: nn.TransformerEncoder (3 layers, d_model 32, 4 heads), batch 16, "
              "32 tokens, 1 thread\n")
        print(machine(), "\n")
        print(op_counts("transformer"), "\n")
        res = timing_pass(1, args.launch_reps, args.steps, 16, 32, quick="targets", arch="transformer")
        torch.set_num_threads(os.cpu_count() or 1)
        print(f"{args.launch_reps} interleaved repetitions of {args.steps}-step blocks, wall clock and "
              "process CPU time\n")
        print(table(res, ("wall", "cpu")), "\n")
        cost = {k: statistics.median([a / b for a, b in zip(v["wall"], res[UNPROBED]["wall"])]) for k, v in res.items()}
        print(f"- every step {cost[EVERY1]:.3f}x, every 10 {cost[EVERY10]:.3f}x, forward {cost[FORWARD]:.3f}x; "
              f"section time {time.time() - t0:.0f} s\n")
        if args.only == "transformer":
            return
    if args.only not in ("batch", "transformer"):
        t0 = time.time()
        print("## Launch-bound: ResNet-20 (BN), batch 4, 8x8 input, 1 thread\n")
        print(machine(), "\n")
        print(op_counts("resnet20"), "\n")
        res = timing_pass(1, args.launch_reps, args.steps, 4, 8, quick=True)
        torch.set_num_threads(os.cpu_count() or 1)
        print(f"{args.launch_reps} interleaved repetitions of {args.steps}-step blocks, wall clock and "
              "process CPU time\n")
        print(table(res, ("wall", "cpu")), "\n")
        cost = {k: statistics.median([a / b for a, b in zip(v["wall"], res[UNPROBED]["wall"])]) for k, v in res.items()}
        print(f"- targets: every step {cost[EVERY1]:.3f}x (<= 1.5), every 10 {cost[EVERY10]:.3f}x (<= 1.05), "
              f"forward {cost[FORWARD]:.3f}x (<= 1.2); bare floor {cost[BARE]:.3f}x; "
              f"section time {time.time() - t0:.0f} s\n")
        if args.only == "launch":
            return
    if args.only == "batch":  # only the configurations of the targets, default threads
        t0 = time.time()
        print(f"## ResNet-20 (BN), batch {args.batch}, 32x32 input, {torch.get_num_threads()} threads\n")
        print(machine(), "\n")
        res = timing_pass(torch.get_num_threads(), args.reps, args.steps, args.batch, 32, quick="targets")
        print(f"{args.reps} interleaved repetitions of {args.steps}-step blocks\n")
        print(table(res, ("wall", "cpu")), "\n")
        cost = {k: statistics.median([a / b for a, b in zip(v["wall"], res[UNPROBED]["wall"])]) for k, v in res.items()}
        print(f"- targets: every step {cost[EVERY1]:.3f}x (<= 1.10), every 10 {cost[EVERY10]:.3f}x (<= 1.02); "
              f"section time {time.time() - t0:.0f} s")
        return
    print("## Probe overhead: ResNet-20 (BN), CIFAR-size input, batch", args.batch, "\n")
    print(machine(), "\n")
    default_threads = torch.get_num_threads()
    t0 = time.time()
    res = timing_pass(default_threads, args.reps, args.steps, args.batch)
    print(f"### {default_threads} threads: wall clock and process CPU time "
          f"({args.reps} interleaved repetitions of {args.steps}-step blocks)\n")
    print(table(res, ("wall", "cpu")), "\n")
    res1 = timing_pass(1, args.reps, args.steps, args.batch)
    torch.set_num_threads(default_threads)
    print(f"### 1 thread: process CPU time ({args.reps} repetitions of {args.steps}-step blocks)\n")
    print(table(res1, ("cpu",)), "\n")
    for label, r, clock in ((f"{default_threads} threads, wall clock", res, "wall"),
                            ("1 thread, CPU time", res1, "cpu")):
        cost = {k: statistics.median([a / b for a, b in zip(v[clock], r[UNPROBED][clock])]) - 1
                for k, v in r.items()}
        print(f"- {label}: extra time per step: every step {cost[EVERY1]:+.1%} (fused {cost[FUSED]:+.1%}), "
              f"every 10 steps {cost[EVERY10]:+.1%}, forward preset {cost[FORWARD]:+.1%}, all but dec.* "
              f"{cost[NO_DEC]:+.1%}; bare floor (one read of each probed output and output gradient) "
              f"{cost[BARE]:+.1%}; probe machinery {cost[FLOOR]:+.1%}; naive {cost[NAIVE]:+.1%}")
    print()
    b32, acc32 = probe_bytes(32)
    b128, acc128 = probe_bytes(args.batch)
    print("### Memory\n")
    print("| | batch 32 | batch", args.batch, "|\n|---|---:|---:|")
    print(f"| bytes held by the probe after 3 steps (accumulators + buffered steps + cache) | {b32} | {b128} |")
    print(f"| of which accumulators | {acc32} | {acc128} |")
    peaks = {k: peak_step_memory(k, args.batch) for k in ("unprobed", "probe", "naive")}
    fmt = {k: ("n/a" if v is None else f"{v:.1f}") for k, v in peaks.items()}
    print(f"\nPeak live CPU memory of one training step at batch {args.batch} (torch profiler "
          f"memory timeline, MiB): unprobed {fmt['unprobed']}, Probe every step {fmt['probe']}, "
          f"naive {fmt['naive']}.\n")
    print(f"- load average at end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}; "
          f"benchmark time {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
