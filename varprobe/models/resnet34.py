"""The official PyTorch CIFAR backbone (configs/cifar/*.py): ResNet_Cifar of depth 34."""
from __future__ import annotations

from .resnet import ResNet

__all__ = ["resnet34_cifar", "RESNET34_BLOCKS"]

RESNET34_BLOCKS = (3, 4, 6, 3)


def resnet34_cifar(scheme: str, num_classes: int = 10, width: int = 64, in_channels: int = 3,
                   **options) -> ResNet:
    """ResNet-34 with the CIFAR stem of github.com/lyxzzz/PWSConv (``ResNet_Cifar``, depth=34).

    Stem: conv 3x3, stride 1, width w -> norm -> ReLU, no max-pool. Then 4 stages of 3, 4, 6, 3
    BasicBlocks of widths w, 2w, 4w, 8w (64, 128, 256, 512 at the official w = 64), strides 1, 2, 2, 2,
    a 1x1 projection shortcut on the first block of stages 2-4; neck, head, block ordering and the
    norm layout of each scheme exactly as ``resnet_cifar`` (BN: no neck norm, zero-initialised last BN
    per block; PWS: GroupNorm(1) at stem and neck only). A 32x32 input leaves 4x4 maps at the neck.

    ``width`` is the base width w (the official net: 64; a smaller w gives the same layout, narrower).
    ``options`` as ``resnet_cifar`` (``gn_groups``, ``neck_norm``, ``zero_init_residual``, conv options).
    With w = 64 and 10 classes the "bn" net has 21,282,122 parameters.
    """
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}")
    widths = tuple(width * 2 ** i for i in range(len(RESNET34_BLOCKS)))
    return ResNet(RESNET34_BLOCKS, widths, scheme, num_classes, in_channels, **options)
