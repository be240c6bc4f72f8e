"""Shared by the model tests: one thread for tiny models, a fixed batch, memorisation checks."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one intra-op thread is faster, and far faster on a loaded 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _batch(shape, seed=1, classes=10):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g), torch.randint(0, classes, (shape[0],), generator=g)


def memorise(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 10, lr: float = 0.05) -> list[float]:
    """SGD (lr 0.05 unless given, momentum 0.9) on one fixed batch; returns the loss before each step."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    losses = []
    model.train()
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def assert_memorises(losses: list[float]) -> None:
    assert all(math.isfinite(v) for v in losses), losses
    assert losses[-1] < losses[0] - 0.03, losses
    assert min(losses[-3:]) < losses[0] - 0.05, losses
