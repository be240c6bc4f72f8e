"""Side-by-side timing of training steps and forwards, shared by `reproduce` and the benchmarks."""
from __future__ import annotations

import random
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .train import sgd

__all__ = ["interleaved_medians", "train_step_fn", "eval_fn"]


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

