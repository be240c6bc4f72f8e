"""varprobe's Probe beside Cockpit and a naive probe, on the plain 6-conv net of issue 13 (CPU).

Arms, run interleaved (each repetition runs a block of 10 training steps of every arm in turn):

- unprobed;
- varprobe ``Probe`` every step (all quantities), every 10 steps, and ``quantities="forward"``;
- Cockpit (f-dangel/cockpit) in its cheapest configuration, ``"economy"`` (Alpha, Distance,
  GradHist1d, GradNorm, InnerTest, Loss, NormTest, OrthoTest, UpdateSize; BackPACK's
  per-sample gradient extensions), tracking every step and every 10 steps;
- naive: forward hooks with one reduction and one ``.item()`` per statistic per layer (the
  ``Naive`` arm of ``probe_overhead.py``).

Each arm trains its own copy of the same initial net with its own SGD optimizer (Cockpit's copy is
``backpack.extend``-ed, as Cockpit requires); the net has no BatchNorm, since BackPACK computes no
per-sample gradients through BatchNorm in training mode. Two settings: batch 4 at 8x8 with 1
thread (launch-bound) and batch 64 at 32x32 with the default threads.

Cockpit is not a dependency of varprobe. Install it beside varprobe with
``pip install --no-deps -c constraints.txt backpack-for-pytorch==1.7.1 cockpit-for-pytorch==1.0.2
einops==0.8.2 unfoldNd==0.2.3 json-tricks==3.17.3``. Use ``--no-deps`` because BackPACK declares
torchvision, which replaces the CPU torch with a CUDA build; BackPACK imports it only in
``backpack/utils/examples.py``. Cockpit 1.0.2 imports ``pkg_resources`` only to read its own
version, and setuptools 81+ no longer ships that module. If it is missing, this script puts a
two-name stand-in in ``sys.modules``. Without Cockpit the Cockpit arms are left out and the
report says so.

Usage: PYTHONPATH=. python benchmarks/anchors_overhead.py [--reps 9]
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import statistics
import sys
import time
import types

import torch
import torch.nn.functional as F
from torch import nn

from probe_overhead import Naive, machine
from varprobe.probe import Probe

UNPROBED, EVERY1, EVERY10, FORWARD = ("unprobed", "varprobe every step (all quantities)",
                                      "varprobe every 10 steps", "varprobe every step, quantities='forward'")
COCKPIT1, COCKPIT10 = "Cockpit economy, every step", "Cockpit economy, every 10 steps"
NAIVE = "naive: .item() per statistic per layer"


def plain_net(seed: int = 0) -> nn.Module:
    """Six 3x3 convs (16, 16, 32, 32, 64, 64 channels) with ReLU, global average pooling, a linear head."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    c = 3
    for o in (16, 16, 32, 32, 64, 64):
        layers += [nn.Conv2d(c, o, 3, padding=1), nn.ReLU()]
        c = o
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))


def _import_cockpit():
    """(Cockpit, configuration, schedules, extend), or None where Cockpit is not installed."""
    if importlib.util.find_spec("cockpit") is None or importlib.util.find_spec("backpack") is None:
        return None
    if importlib.util.find_spec("pkg_resources") is None:
        shim = types.ModuleType("pkg_resources")  # Cockpit's __init__ reads its version through it

        class DistributionNotFound(Exception):
            pass

        def get_distribution(name):
            raise DistributionNotFound(name)

        shim.DistributionNotFound, shim.get_distribution = DistributionNotFound, get_distribution
        sys.modules["pkg_resources"] = shim
    from backpack import extend
    from cockpit import Cockpit
    from cockpit.utils import schedules
    from cockpit.utils.configuration import configuration
    return Cockpit, configuration, schedules, extend


class Arm:
    """One configuration: its own copy of the net, its optimizer and its instrument."""

    def __init__(self, net: nn.Module, kind: str, every: int = 1, cockpit=None) -> None:
        self.kind, self.t = kind, 0
        self.model = copy.deepcopy(net)
        self.instrument = None
        if kind == "cockpit":
            cockpit_cls, configuration, schedules, extend = cockpit
            self.model = extend(self.model)
            self.loss_fn = extend(nn.CrossEntropyLoss())
            self.instrument = cockpit_cls(self.model.parameters(), quantities=configuration(
                "economy", track_schedule=schedules.linear(every)))
        elif kind == "probe":
            self.instrument = Probe(self.model, every=every, flush_every=10)
        elif kind == "forward":
            self.instrument = Probe(self.model, quantities="forward", flush_every=10)
        elif kind == "naive":
            self.instrument = Naive(self.model)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01)

    def block(self, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
        """Wall seconds per step of ``steps`` training steps (attach, train, remove: flushes timed)."""
        attached = self.kind in ("probe", "forward", "naive")
        if attached:
            self.instrument.attach()
        w0 = time.perf_counter()
        for _ in range(steps):
            self.opt.zero_grad()
            out = self.model(x)
            if self.kind == "cockpit":
                loss = self.loss_fn(out, y)
                info = {"batch_size": x.shape[0], "individual_losses": F.cross_entropy(out, y, reduction="none"),
                        "loss": loss, "optimizer": self.opt}
                with self.instrument(self.t, info=info):
                    loss.backward(create_graph=self.instrument.create_graph(self.t))
            else:
                loss = F.cross_entropy(out, y)
                loss.backward()
                if attached:
                    self.instrument.step(loss=loss.detach(), lr=0.01)
            self.opt.step()
            self.t += 1
        if attached:
            self.instrument.remove()
        return (time.perf_counter() - w0) / steps


def timing_pass(threads: int, batch: int, size: int, reps: int, steps: int, cockpit) -> dict[str, list[float]]:
    torch.set_num_threads(threads)
    net = plain_net()
    arms = {UNPROBED: Arm(net, "none"), EVERY1: Arm(net, "probe"), EVERY10: Arm(net, "probe", 10),
            FORWARD: Arm(net, "forward"), NAIVE: Arm(net, "naive")}
    if cockpit is not None:
        arms[COCKPIT1] = Arm(net, "cockpit", 1, cockpit)
        arms[COCKPIT10] = Arm(net, "cockpit", 10, cockpit)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, 3, size, size, generator=g), torch.randint(0, 10, (batch,), generator=g)
    for arm in arms.values():  # warm-up; keeps every arm's blocks aligned on 10 steps
        arm.block(x, y, steps)
    out: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(reps):
        for name, arm in arms.items():
            out[name].append(arm.block(x, y, steps))
    return out


def report(res: dict[str, list[float]]) -> str:
    lines = ["| configuration | ms/step | ratio to unprobed |", "|---|---:|---:|"]
    for name, wall in res.items():
        ratio = statistics.median(a / b for a, b in zip(wall, res[UNPROBED]))
        lines.append(f"| {name} | {statistics.median(wall) * 1e3:.1f} | {ratio:.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--steps", type=int, default=10, help="steps per block (every-10 needs 10)")
    args = ap.parse_args()
    cockpit = _import_cockpit()
    print("## varprobe beside Cockpit and a naive probe: plain 6-conv net, no BatchNorm\n")
    print(machine(), "\n")
    if cockpit is None:
        print("Cockpit is not installed here: its arms are left out (module docstring: how to install it).\n")
    else:
        from importlib.metadata import version
        print(f"- cockpit-for-pytorch {version('cockpit-for-pytorch')}, "
              f"backpack-for-pytorch {version('backpack-for-pytorch')}\n")
    default_threads = os.cpu_count() or 1
    for threads, batch, size in ((1, 4, 8), (default_threads, 64, 32)):
        t0 = time.time()
        res = timing_pass(threads, batch, size, args.reps, args.steps, cockpit)
        print(f"### batch {batch}, {size}x{size} input, {threads} thread{'s' if threads > 1 else ''}\n")
        print(f"{args.reps} interleaved repetitions of {args.steps}-step blocks, wall clock; "
              f"section time {time.time() - t0:.0f} s\n")
        print(report(res), "\n")
    torch.set_num_threads(default_threads)


if __name__ == "__main__":
    main()
