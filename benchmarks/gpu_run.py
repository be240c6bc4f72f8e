"""Training steps per second of a CIFAR ResNet-20 on a GPU, with varprobe's Probe every step and
every 10 steps (and unprobed, for reference), as markdown lines for benchmarks/RESULTS.md.

Setup: ``resnet_cifar(20, scheme)`` at batch 128 on CIFAR-sized synthetic data (3x32x32, 10
classes, ``varprobe.data.synthetic``, all of it on the device), SGD momentum 0.9, weight decay
5e-4, lr 0.05, through ``varprobe.experiment.run`` (the same path as ``varprobe run --device``):
model, batches and probe on the device, determinism settings on (``make_deterministic``). Steps
per second = (steps - 1) / (wall time of the run minus that of a 1-step run of the same config),
so data generation, the accuracy passes and the final writes cancel out. The third row records
step 0 only (the probe's hooks stay attached): the training step with the probe nearly idle.

Usage (GPU): python benchmarks/gpu_run.py [--steps 200] [--device cuda] [--scheme bn]
Smoke test (CPU): python benchmarks/gpu_run.py --device cpu --steps 3 --size 8 --n 256
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from varprobe.experiment import RunConfig, run


def steps_per_second(config: RunConfig, root: Path) -> tuple[float, str]:
    """(steps per second of the training loop, device used) for ``config``: the wall time of a run
    of ``config.steps`` steps minus that of a 1-step run of the same config (setup, accuracy
    passes and final writes cancel out), over ``config.steps - 1`` steps."""
    timings = []
    for label, steps in (("one", 1), ("all", config.steps)):
        start = time.perf_counter()
        result = run(config.replace(steps=steps), root / f"{label}-{config.every}-{config.quantities}")
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - start)
        assert result.status in ("finished", "collapsed"), result.meta.get("error")
    return (config.steps - 1) / max(timings[1] - timings[0], 1e-9), result.meta["device"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--n", type=int, default=10000, help="synthetic images (default: %(default)s)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--scheme", default="bn")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error(f"--steps {args.steps}: give at least 2 (one step is the setup reference)")
    base = RunConfig(model="resnet20", scheme=args.scheme, data="synthetic", size=args.size, synthetic_n=args.n,
                     batch_size=args.batch, steps=args.steps, lr=0.05, device=args.device,
                     flush_every=50, collapse_var=float("inf"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = []
        for label, every in (("probe every step", 1), ("probe every 10", 10), ("probe at step 0 only",
                                                                               args.steps + 1)):
            rate, device = steps_per_second(base.replace(every=every), root)
            rows.append((label, rate, device))
    name = torch.cuda.get_device_name() if torch.cuda.is_available() and device.startswith("cuda") else "CPU"
    print(f"ResNet-20 ({args.scheme}), batch {args.batch}, {args.size}px synthetic, {args.steps} steps, "
          f"torch {torch.__version__}, {name}:\n")
    print("| configuration | steps/s | device |\n| --- | --- | --- |")
    for label, rate, device in rows:
        print(f"| {label} | {rate:.1f} | {device} |")


if __name__ == "__main__":
    main()
