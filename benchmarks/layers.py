"""Layer benchmark: train-step time of resnet_cifar(20) per scheme relative to BN, and eval time of a
deployed PWS network relative to the same network built from plain convs.

All variants are timed interleaved, round after round in a shuffled order, so that drifts of a
shared, noisy machine hit all of them alike; we report medians over rounds and ratios of medians.

    python benchmarks/layers.py            # about 3 minutes on 2 cores
    python benchmarks/layers.py --quick    # a smoke run
"""
from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from machine import machine_info
from varprobe.experiment import sgd
from varprobe.layers import SCHEMES, reparameterize
from varprobe.models import resnet_cifar


def train_step_timer(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int):
    opt = sgd(model, lr=0.01)

    def run() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return (time.perf_counter() - start) / steps
    return run


def eval_timer(model: nn.Module, x: torch.Tensor, steps: int):
    model.eval()

    @torch.no_grad()
    def run() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            model(x)
        return (time.perf_counter() - start) / steps
    return run


def interleave(timers: dict, rounds: int, seed: int = 0) -> dict[str, float]:
    """Median seconds per call of each timer over ``rounds`` shuffled rounds (one warm-up round)."""
    rng = random.Random(seed)
    samples = {k: [] for k in timers}
    for r in range(rounds + 1):
        order = list(timers)
        rng.shuffle(order)
        for k in order:
            t = timers[k]()
            if r:  # round 0 warms up allocators and caches
                samples[k].append(t)
    return {k: statistics.median(v) for k, v in samples.items()}


def plain_with_two_gn(depth: int) -> nn.Module:
    """resnet_cifar(depth, "plain") plus the two GroupNorm(1) layers of the PWS layout."""
    model = resnet_cifar(depth, "plain")
    model.stem[0].norm = nn.GroupNorm(1, model.stem[0].conv.out_channels)
    model.neck[0] = nn.GroupNorm(1, model.head.in_features)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few rounds, for a smoke run")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rounds, steps = (2, 1) if args.quick else (9, 3)
    x = torch.randn(args.batch_size, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch_size,))

    train = interleave({s: train_step_timer(resnet_cifar(20, s), x, y, steps) for s in SCHEMES}, rounds)
    pws = resnet_cifar(20, "pws")
    evals = interleave({"pws (reparameterized)": eval_timer(reparameterize(pws), x, 3 * steps),
                        "pws (eval cache)": eval_timer(pws, x, 3 * steps),
                        "plain + 2 GN": eval_timer(plain_with_two_gn(20), x, 3 * steps)}, rounds)

    print(f"Machine: {machine_info()}\n")
    print(f"resnet_cifar(20), batch {args.batch_size}, 32x32, {rounds} interleaved rounds x {steps} steps\n")
    print("| scheme | train step (ms, median) | ratio to bn |")
    print("|---|---|---|")
    for s in SCHEMES:
        print(f"| {s} | {1e3 * train[s]:.1f} | {train[s] / train['bn']:.3f} |")
    print("\n| eval forward | ms (median) | ratio to plain + 2 GN |")
    print("|---|---|---|")
    for k, v in evals.items():
        print(f"| {k} | {1e3 * v:.1f} | {v / evals['plain + 2 GN']:.3f} |")
    print(f"\nTargets: pws train step <= 0.85x bn: {train['pws'] / train['bn']:.3f} "
          f"({'met' if train['pws'] / train['bn'] <= 0.85 else 'NOT met'}); pws eval after reparameterize "
          f"<= 1.02x plain: {evals['pws (reparameterized)'] / evals['plain + 2 GN']:.3f} "
          f"({'met' if evals['pws (reparameterized)'] / evals['plain + 2 GN'] <= 1.02 else 'NOT met'})")


if __name__ == "__main__":
    main()
