"""scikit-learn's bundled 8x8 handwritten digits (UCI optdigits test part): no download needed."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .split import Split, standardize

__all__ = ["digits"]

SIZES = (8, 16, 32)
CHANNELS = (1, 3)
TEST_FRACTION = 0.2


def digits(size: int = 8, channels: int = 1, seed: int = 0) -> Split:
    """The 1797 8x8 digit images of ``sklearn.datasets.load_digits``, 10 classes.

    Preprocessing, in order: pixel values 0..16 are divided by 16; a stratified 80/20 train/test
    split (``sklearn.model_selection.train_test_split(stratify=labels, random_state=seed)``,
    1437 train / 360 test); optional bilinear upsampling to ``size`` px
    (``F.interpolate(mode="bilinear", align_corners=False)``); the single channel repeated to 3
    when ``channels == 3``; finally per-channel standardization of both parts with the *training*
    mean and biased std (see :func:`varprobe.data.split.standardize`).

    Args:
        size: Image side H = W, one of 8 (native), 16, 32.
        channels: 1, or 3 (the grey image repeated, e.g. for models built for RGB input).
        seed: Seed of the train/test split, 0 <= seed < 2**32.

    Returns:
        A :class:`Split` named ``"digits"``: x_train (1437, channels, size, size) and x_test
        (360, channels, size, size) float32, labels int64 in [0, 10).

    Raises:
        ValueError: On a size, channel count or seed outside the valid values.
    """
    if size not in SIZES:
        raise ValueError(f"digits: size must be one of {SIZES}, got {size!r}")
    if channels not in CHANNELS:
        raise ValueError(f"digits: channels must be one of {CHANNELS}, got {channels!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"digits: seed must be an int in [0, 2**32), got {seed!r}")
    from sklearn.datasets import load_digits  # deferred: importing sklearn takes about a second
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / 16.0  # (1797, 8, 8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    train_idx, test_idx = train_test_split(np.arange(labels.shape[0]), test_size=TEST_FRACTION,
                                           stratify=labels, random_state=seed)
    x_train, x_test = (_prepare(images[idx], size, channels) for idx in (train_idx, test_idx))
    x_train, x_test = standardize(x_train, x_test)
    return Split(name="digits", x_train=x_train, y_train=torch.from_numpy(labels[train_idx]),
                 x_test=x_test, y_test=torch.from_numpy(labels[test_idx]), num_classes=10)


def _prepare(images: np.ndarray, size: int, channels: int) -> torch.Tensor:
    """(N, 8, 8) float32 -> (N, channels, size, size): bilinear upsampling, channel repeat."""
    x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.repeat(1, channels, 1, 1)
