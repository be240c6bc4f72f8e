"""CIFAR ResNet (He et al. 2016, depth 6n+2) with the block ordering of the official PWS code."""
from __future__ import annotations

from torch import Tensor, nn

from ..layers import ResidualBlock, make_conv
from ..layers.factory import check_scheme

__all__ = ["resnet_cifar", "ResNetCifar"]

# Schemes that follow the official PWS layout: no norm inside blocks, GroupNorm(1) at stem and neck.
PWS_LAYOUT = ("pws", "wn", "centered", "plain+gn")


def _neck_norm(scheme: str, channels: int, gn_groups: int) -> nn.Module:
    if scheme == "plain":
        return nn.Identity()
    if scheme == "bn":
        return nn.BatchNorm2d(channels)
    if scheme in PWS_LAYOUT:
        return nn.GroupNorm(1, channels)
    return nn.GroupNorm(gn_groups, channels)


class ResNetCifar(nn.Module):
    """stem -> 3 stages of residual blocks -> neck (norm, ReLU) -> global average pool -> linear.

    Child modules: ``stem`` (ConvNorm + ReLU), ``stages`` (3 nn.Sequential of ResidualBlock), ``neck``,
    ``head`` (nn.Linear). See ``resnet_cifar`` for the layout of each scheme.
    """

    def __init__(self, depth: int, scheme: str, num_classes: int = 10, width: int = 16,
                 in_channels: int = 3, gn_groups: int = 8, **conv_options) -> None:
        super().__init__()
        check_scheme(scheme)
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (8, 14, 20, 32, ...), got {depth!r}")
        n = (depth - 2) // 6
        def conv(*args, **kwargs):
            return make_conv(scheme, *args, gn_groups=gn_groups, **{**conv_options, **kwargs})

        stem = conv(in_channels, width, 3, padding=1)
        if scheme in PWS_LAYOUT:  # the official stem builds a GN(1) when the conv brings no norm
            stem.norm = nn.GroupNorm(1, width)
        self.stem = nn.Sequential(stem, nn.ReLU())

        stages, c_in = [], width
        for i, c_out in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                branch = nn.Sequential(
                    conv(c_in, c_out, 3, stride=stride, padding=1),
                    nn.ReLU(),
                    conv(c_out, c_out, 3, padding=1, **self._no_data_init(scheme)),
                )
                shortcut = conv(c_in, c_out, 1, stride=stride) if (stride != 1 or c_in != c_out) else None
                blocks.append(ResidualBlock(branch, shortcut))
                c_in = c_out
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.neck = nn.Sequential(_neck_norm(scheme, c_in, gn_groups), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c_in, num_classes)
        nn.init.normal_(self.head.weight, 0.0, 0.01)
        nn.init.zeros_(self.head.bias)

    @staticmethod
    def _no_data_init(scheme: str) -> dict:
        # The official code switches initalpha off for the second conv of each BasicBlock branch.
        return {"data_init": False} if scheme == "pws" else {}

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.neck(self.stages(self.stem(x))))


def resnet_cifar(depth: int, scheme: str, num_classes: int = 10, width: int = 16, in_channels: int = 3,
                 **options) -> ResNetCifar:
    """CIFAR ResNet of ``depth`` = 6n+2 layers (3 stages of n BasicBlocks, widths w, 2w, 4w).

    Block ordering of github.com/lyxzzz/PWSConv: ``out = branch(relu(x)) + shortcut``, the identity is
    x itself (not rectified), the 1x1 projection shortcut reads relu(x), and there is no ReLU after the
    add, so the residual stream stays near zero mean. Stem: conv 3x3 -> norm -> ReLU (no max-pool).

    Norm layout by scheme:
    - "plain": no normalization layer anywhere (neck is ReLU only).
    - "bn", "gn", "ws": the scheme's norm after every conv (projection shortcuts included) and in the
      neck (BatchNorm2d / GroupNorm(gn_groups)).
    - "pws", "wn", "centered", "plain+gn": the official PWS layout: no norm inside blocks or shortcuts,
      GroupNorm(1) only after the stem conv and in the neck, so comparisons with PWS change one thing
      at a time ("plain+gn" is plain convs with exactly PWS's norm layers: the control that tells
      what those two GroupNorms do on their own).
      For "pws" the second conv of each branch has ``data_init=False`` (as ``initalpha`` in the
      official code); use ``varprobe.layers.init_alpha`` to run the data-dependent init.

    ``options``: ``gn_groups`` (default 8) and conv options of ``make_conv`` (``gamma``, ``fan``, ...).
    """
    return ResNetCifar(depth, scheme, num_classes, width, in_channels, **options)

