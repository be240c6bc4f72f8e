"""`make demo`: train the digits CNN once per normalization scheme and print a table."""
from __future__ import annotations

import argparse

import torch

from .data import digits
from .experiment import train
from .layers import SCHEMES
from .models import simple_cnn


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    split = digits(size=8, seed=args.seed)
    print(f"digits 8x8: {len(split.x_train)} train / {len(split.x_test)} test images; simple_cnn, "
          f"{args.steps} SGD steps, lr {args.lr}, batch {args.batch_size}, seed {args.seed}\n")
    print(f"| {'scheme':<8} | final loss | test accuracy | seconds |")
    print(f"|{'-' * 10}|{'-' * 12}|{'-' * 15}|{'-' * 9}|")
    for scheme in SCHEMES:
        torch.manual_seed(args.seed)
        r = train(simple_cnn(scheme), split, args.steps, args.lr, args.batch_size, args.seed)
        loss = "diverged" if r.diverged else f"{r.final_loss:.4f}"
        print(f"| {scheme:<8} | {loss:>10} | {r.test_accuracy:>13.3f} | {r.seconds:>7.2f} |", flush=True)


if __name__ == "__main__":
    main()
