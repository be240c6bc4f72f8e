"""Layer benchmark: train-step time of resnet_cifar(20) per scheme relative to BN, and eval time of a
deployed PWS network relative to the same network built from plain convs.

All variants are timed interleaved, round after round in a shuffled order, so that drifts of a
shared, noisy machine hit all of them alike; we report medians over rounds and ratios of medians.

    python benchmarks/layers.py            # about 3 minutes on 2 cores
    python benchmarks/layers.py --quick    # a smoke run
"""
from __future__ import annotations

import argparse

import torch

from machine import machine_info
from varprobe.experiment.timing import eval_fn, interleaved_medians, train_step_fn
from varprobe.layers import SCHEMES, reparameterize
from varprobe.models import resnet_cifar


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

    # medians are per call of `steps` (train) or `3 * steps` (eval) steps: divide to get per step
    train = interleaved_medians({s: train_step_fn(resnet_cifar(20, s), x, y, steps) for s in SCHEMES}, rounds)
    train = {k: v / steps for k, v in train.items()}
    pws = resnet_cifar(20, "pws")
    evals = interleaved_medians({"pws (reparameterized)": eval_fn(reparameterize(pws), x, 3 * steps),
                                 "pws (eval cache)": eval_fn(pws, x, 3 * steps),
                                 "plain + 2 GN": eval_fn(resnet_cifar(20, "plain+gn"), x, 3 * steps)}, rounds)
    evals = {k: v / (3 * steps) for k, v in evals.items()}

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
