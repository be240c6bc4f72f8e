"""Side-by-side timing of training steps and forwards, shared by `reproduce` and the benchmarks."""
from __future__ import annotations

import random
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import resnet_cifar
from .train import sgd

__all__ = ["interleaved_medians", "train_step_fn", "eval_fn", "plain_with_two_gn"]


def interleaved_medians(timers: dict[str, Callable[[], None]], rounds: int, seed: int = 0) -> dict[str, float]:
    """Median seconds per call of each timer over ``rounds`` rounds run in a shuffled order, after
    one warm-up round, so that drifts of a shared machine hit every variant alike."""
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {k: [] for k in timers}
    for r in range(rounds + 1):
        order = list(timers)
        rng.shuffle(order)
        for k in order:
            start = time.perf_counter()
            timers[k]()
            if r:  # round 0 warms up allocators and caches
                samples[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in samples.items()}


def train_step_fn(model: nn.Module, x: Tensor, y: Tensor, steps: int = 1) -> Callable[[], None]:
    """``steps`` SGD steps (cross-entropy, the authors' optimizer settings) on a fixed batch."""
    opt = sgd(model, lr=0.01)
    model.train()

    def run() -> None:
        for _ in range(steps):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return run


def eval_fn(model: nn.Module, x: Tensor, steps: int = 1) -> Callable[[], None]:
    """``steps`` eval-mode forwards under ``no_grad``."""
    model.eval()

    @torch.no_grad()
    def run() -> None:
        for _ in range(steps):
            model(x)
    return run


def plain_with_two_gn(depth: int) -> nn.Module:
    """``resnet_cifar(depth, "plain")`` plus the two GroupNorm(1) layers of the PWS layout: what a
    deployed PWS network must cost at inference."""
    model = resnet_cifar(depth, "plain")
    model.stem[0].norm = nn.GroupNorm(1, model.stem[0].conv.out_channels)
    model.neck[0] = nn.GroupNorm(1, model.head.in_features)
    return model
