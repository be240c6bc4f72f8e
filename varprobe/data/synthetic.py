"""SYNTHETIC class-conditional images (smooth random class prototypes plus noise); not real data."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .split import Split, standardize

__all__ = ["synthetic"]

GRID = 4               # side of the random grid that is upsampled into a smooth pattern
SMOOTH_NOISE = 1.2     # std of the smooth per-sample noise (grid units), times sqrt(channels)
WHITE_NOISE = 0.5      # std of the per-pixel white noise
TEST_FRACTION = 0.2


def synthetic(n: int, size: int, channels: int, classes: int, seed: int, *, noise: float = 1.0) -> Split:
    """A SYNTHETIC, deterministic, learnable image classification set (no real images involved).

    Generative model, all draws from one ``torch.Generator`` seeded with ``seed``:

    * each class k has a fixed prototype P_k of shape (channels, size, size): a standard normal
      (channels, g, g) grid, g = min(4, size), upsampled bilinearly (``align_corners=False``), so
      the pattern is smooth (low frequency);
    * a sample of class k is ``P_k + noise * (s * U + 0.5 * W)``: U is a standard normal
      (channels, g, g) grid upsampled the same way (smooth noise living in the same subspace as
      the prototypes, so it cannot be averaged away), s = 1.2 * sqrt(channels) (keeps the
      difficulty roughly independent of the channel count), W is per-pixel standard normal noise.

    The classes overlap: with the default ``noise`` a nearest-class-mean classifier reaches about
    80-90 % test accuracy with 10 classes (chance: 10 %) and 96-98 % with 2 classes.

    Classes are balanced (sizes differ by at most one: sample i has class i mod ``classes``) and
    each class is split 80/20 into train/test (stratified), each part then shuffled. Both parts
    are standardized per channel with the *training* mean and biased std (see
    :func:`varprobe.data.split.standardize`), like :func:`varprobe.data.digits`.

    Args:
        n: Total number of samples (train + test), at least 5 * classes.
        size: Image side H = W, >= 1.
        channels: Image channels C, >= 1.
        classes: Number of classes, >= 2.
        seed: Seed of every random draw; equal arguments give identical tensors.
        noise: Multiplier of both noise terms (0 gives noiseless prototypes), >= 0.

    Returns:
        A :class:`Split` named ``"synthetic"`` with x of shape (., channels, size, size) float32
        and int64 labels in [0, classes); about 80 % of the n samples are in the training part.

    Raises:
        ValueError: On an argument outside the ranges above.
    """
    _check_int("size", size, 1)
    _check_int("channels", channels, 1)
    _check_int("classes", classes, 2)
    _check_int("n", n, 5 * classes)
    if not noise >= 0.0:
        raise ValueError(f"synthetic: noise must be >= 0, got {noise!r}")

    generator = torch.Generator().manual_seed(seed)
    grid = min(GRID, size)
    prototypes = _smooth(torch.randn(classes, channels, grid, grid, generator=generator), size)
    labels = torch.arange(n) % classes
    smooth = _smooth(torch.randn(n, channels, grid, grid, generator=generator), size)
    white = torch.randn(n, channels, size, size, generator=generator)
    x = prototypes[labels] + noise * (SMOOTH_NOISE * math.sqrt(channels) * smooth + WHITE_NOISE * white)

    is_test = torch.zeros(n, dtype=torch.bool)
    for k in range(classes):  # stratified: the first round(20 %) of each class (samples are i.i.d.)
        members = torch.nonzero(labels == k).squeeze(1)
        is_test[members[:max(1, round(TEST_FRACTION * members.numel()))]] = True
    train_idx, test_idx = (torch.nonzero(mask).squeeze(1) for mask in (~is_test, is_test))
    train_idx = train_idx[torch.randperm(train_idx.numel(), generator=generator)]
    test_idx = test_idx[torch.randperm(test_idx.numel(), generator=generator)]

    x_train, x_test = standardize(x[train_idx], x[test_idx])
    return Split(name="synthetic", x_train=x_train, y_train=labels[train_idx], x_test=x_test,
                 y_test=labels[test_idx], num_classes=classes)


def _smooth(grid: Tensor, size: int) -> Tensor:
    """(N, C, g, g) -> (N, C, size, size) by bilinear upsampling (identity when g == size)."""
    if grid.shape[-1] == size:
        return grid
    return F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)


def _check_int(name: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"synthetic: {name} must be an int >= {low}, got {value!r}")
