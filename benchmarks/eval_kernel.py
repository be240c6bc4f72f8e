"""Eval-forward cost of recomputing reparametrized kernels on every forward (what ReparamConv2d
does: no cache) against the most any kernel cache could save (every kernel computed once
beforehand) and against ``reparameterize`` (plain convs, the deployment path).

    python benchmarks/eval_kernel.py            # about 40 s on 2 cores
"""
from __future__ import annotations

import copy

import torch

from machine import machine_info
from varprobe.experiment.timing import eval_fn, interleaved_medians
from varprobe.layers import reparameterize
from varprobe.layers.reparam import ReparamConv2d
from varprobe.models import resnet_cifar


def precomputed(model: torch.nn.Module) -> torch.nn.Module:
    """A copy whose convs return a kernel computed once: the lower bound of any cache."""
    model = copy.deepcopy(model).eval()
    for m in model.modules():
        if isinstance(m, ReparamConv2d):
            kernel = m.eval_kernel()
            m.eval_kernel = lambda kernel=kernel: kernel
    return model


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    pws = resnet_cifar(20, "pws").eval()
    variants = {"kernel per forward": pws, "kernel precomputed": precomputed(pws),
                "reparameterized": reparameterize(copy.deepcopy(pws))}
    print(f"Machine: {machine_info()}; 1 thread\n")
    print("| batch | " + " | ".join(f"{k} (ms)" for k in variants) + " | per forward / precomputed |")
    print("|---" * (len(variants) + 2) + "|")
    for batch, steps, rounds in ((1, 50, 15), (16, 10, 11), (128, 2, 7)):
        x = torch.randn(batch, 3, 32, 32)
        t = interleaved_medians({k: eval_fn(m, x, steps) for k, m in variants.items()}, rounds)
        ms = {k: 1e3 * v / steps for k, v in t.items()}
        print(f"| {batch} | " + " | ".join(f"{v:.2f}" for v in ms.values())
              + f" | {ms['kernel per forward'] / ms['kernel precomputed']:.2f} |")


if __name__ == "__main__":
    main()
