"""The plain training loop the experiments share: SGD as the authors configure it, accuracy."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["sgd", "accuracy", "train", "TrainResult"]


def sgd(model: nn.Module, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4) -> torch.optim.SGD:
    """SGD with momentum and weight decay on every parameter except PWS ``alpha`` (the official
    code puts parameters named ``*alpha`` in a group with weight decay 0)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.rsplit(".", 1)[-1] == "alpha" else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.SGD(groups, lr=lr, momentum=momentum)


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` in eval mode on (x, y); the model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    correct = sum(int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
                  for i in range(0, len(x), batch_size))
    model.train(was_training)
    return correct / len(x)


@dataclass(frozen=True)
class TrainResult:
    final_loss: float      # mean training loss over the last 10% of steps (nan if it diverged)
    test_accuracy: float
    seconds: float
    diverged: bool


def train(model: nn.Module, split, steps: int, lr: float, batch_size: int = 64, seed: int = 0) -> TrainResult:
    """Train ``model`` on ``split`` (a ``varprobe.data.Split``) for ``steps`` SGD steps with
    cross-entropy; stop early at a non-finite loss."""
    torch.manual_seed(seed)
    opt = sgd(model, lr)
    model.train()
    losses, start = [], time.perf_counter()
    for _, (x, y) in zip(range(steps), split.batches(batch_size, seed)):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
        if not math.isfinite(losses[-1]):
            break
    seconds = time.perf_counter() - start
    tail = torch.stack(losses[-max(1, steps // 10):])
    diverged = not bool(torch.isfinite(tail).all())
    return TrainResult(float("nan") if diverged else float(tail.mean()),
                       accuracy(model, split.x_test, split.y_test), seconds, diverged)
