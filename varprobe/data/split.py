"""A train/test split of an image classification set, its mini-batch iterator and standardization."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Split", "standardize"]

_CHUNK = 4096  # samples per float64 chunk in ``standardize`` (bounds its extra memory)


@dataclass(frozen=True, eq=False, repr=False)
class Split:
    """An image classification set, already split and preprocessed.

    Equality and hashing are by identity (``eq=False``): comparing tensors field by field has no
    single truth value.

    Attributes:
        name: Short identifier of the set, e.g. ``"digits"``, ``"synthetic"``, ``"cifar10"``.
        x_train: Training images, float32, shape (N, C, H, W).
        y_train: Training labels, int64, shape (N,), values in [0, num_classes).
        x_test: Test images, float32, shape (M, C, H, W), same C, H, W as ``x_train``.
        y_test: Test labels, int64, shape (M,).
        num_classes: Number of classes.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int

    def __post_init__(self) -> None:
        for part, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.dim() != 4:
                raise ValueError(f"x_{part} must have shape (N, C, H, W), got {tuple(x.shape)}")
            if y.dim() != 1 or y.shape[0] != x.shape[0]:
                raise ValueError(f"y_{part} must have shape ({x.shape[0]},), got {tuple(y.shape)}")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"train and test images differ in (C, H, W): "
                             f"{tuple(self.x_train.shape[1:])} vs {tuple(self.x_test.shape[1:])}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")

    @property
    def in_channels(self) -> int:
        """Number of image channels C."""
        return int(self.x_train.shape[1])

    @property
    def size(self) -> int:
        """Image height H (all sets of this package are square, H == W)."""
        return int(self.x_train.shape[2])

    def __repr__(self) -> str:
        return (f"Split(name={self.name!r}, train={tuple(self.x_train.shape)}, "
                f"test={tuple(self.x_test.shape)}, num_classes={self.num_classes})")

    def batches(self, batch_size: int, seed: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Endless training mini-batches, reshuffled every epoch.

        Each epoch is a fresh permutation drawn from a ``torch.Generator`` seeded once with
        ``seed``, so the whole sequence is deterministic. The last incomplete batch of an epoch is
        dropped: every batch has exactly ``batch_size`` samples and every training sample appears
        at most once per epoch (exactly once when ``batch_size`` divides N).

        Args:
            batch_size: Samples per batch, 1 <= batch_size <= N.
            seed: Seed of the shuffling generator.

        Returns:
            An infinite iterator of ``(x, y)`` with x of shape (batch_size, C, H, W) and y of shape
            (batch_size,), on the device of ``x_train``.

        Raises:
            ValueError: If ``batch_size`` is outside [1, N] (checked at call time, not at first
                ``next``).
        """
        n = int(self.x_train.shape[0])
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= n:
            raise ValueError(f"batch_size must be an int in [1, {n}] (the number of training "
                             f"samples), got {batch_size!r}")
        return self._batches(n, batch_size, seed)

    def _batches(self, n: int, batch_size: int, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
        generator = torch.Generator().manual_seed(seed)
        while True:
            order = torch.randperm(n, generator=generator).to(self.x_train.device)
            for start in range(0, n - batch_size + 1, batch_size):
                index = order[start:start + batch_size]
                yield self.x_train[index], self.y_train[index]


def standardize(x_train: Tensor, x_test: Tensor) -> tuple[Tensor, Tensor]:
    """Standardize both sets per channel with the training set's statistics.

    For each channel c, mean_c and the biased standard deviation std_c are computed over
    (N, H, W) of ``x_train`` in float64; both sets become (x - mean_c) / std_c, cast to float32.
    A constant training channel (std_c == 0) is only centred (std_c taken as 1). The inputs are
    not modified; work is done in chunks of samples so the float64 copies stay small.

    Args:
        x_train: Training images, shape (N, C, H, W), any floating or integer dtype.
        x_test: Test images, shape (M, C, H, W).

    Returns:
        ``(x_train, x_test)`` standardized, float32, same shapes.
    """
    if x_train.dim() != 4 or x_test.dim() != 4 or x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"expected (N, C, H, W) inputs with equal C, got {tuple(x_train.shape)} "
                         f"and {tuple(x_test.shape)}")
    n, channels = x_train.shape[0], x_train.shape[1]
    if n == 0:
        raise ValueError("x_train is empty: no statistics to standardize with")
    count = n * x_train.shape[2] * x_train.shape[3]
    total = torch.zeros(channels, dtype=torch.float64, device=x_train.device)
    for chunk in x_train.split(_CHUNK):
        total += chunk.to(torch.float64).sum(dim=(0, 2, 3))
    mean = total / count
    squares = torch.zeros_like(total)
    for chunk in x_train.split(_CHUNK):
        squares += (chunk.to(torch.float64) - mean.view(1, -1, 1, 1)).square().sum(dim=(0, 2, 3))
    std = (squares / count).sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    return _apply(x_train, mean, std), _apply(x_test, mean, std)


def _apply(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    mean, std = mean.view(1, -1, 1, 1).to(x.device), std.view(1, -1, 1, 1).to(x.device)
    for start in range(0, x.shape[0], _CHUNK):
        out[start:start + _CHUNK] = ((x[start:start + _CHUNK].to(torch.float64) - mean) / std).float()
    return out
