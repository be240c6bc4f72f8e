"""What every training run shares: SGD as the authors configure it, and accuracy."""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["sgd", "accuracy"]


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
