"""CIFAR ResNets with the block ordering of the official PWS code: the builder shared by every depth,
and the 3-stage ResNet of depth 6n+2 (He et al. 2016)."""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..layers import ResidualBlock, make_conv
from ..layers.factory import check_scheme

__all__ = ["resnet_cifar", "ResNetCifar", "ResNet"]

# Schemes that follow the official PWS layout: no norm inside blocks, GroupNorm(1) at stem and neck.
PWS_LAYOUT = ("pws", "wn", "centered", "plain+gn")
# Schemes with a norm after every conv: the layout of the official BN baseline (configs/cifar/bn.py).
NORM_AFTER = ("bn", "gn", "ws")


def _layout(scheme: str, neck_norm: bool | None, zero_init_residual: bool | None) -> tuple[bool, bool]:
    """(neck_norm, zero_init_residual) of ``scheme``: the given values, or the official defaults."""
    for name, value in (("neck_norm", neck_norm), ("zero_init_residual", zero_init_residual)):
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"{name} must be None, True or False, got {value!r}")
    neck = scheme in PWS_LAYOUT if neck_norm is None else neck_norm
    zero = scheme in NORM_AFTER if zero_init_residual is None else zero_init_residual
    if neck and scheme == "plain":
        raise ValueError("neck_norm=True needs a scheme with a norm layer; scheme 'plain' has none "
                         f"(schemes with one: {', '.join(NORM_AFTER + PWS_LAYOUT)})")
    if zero and scheme not in NORM_AFTER:
        raise ValueError(f"zero_init_residual=True needs a norm after each block's last conv, which scheme "
                         f"{scheme!r} has not (schemes with one: {', '.join(NORM_AFTER)})")
    return neck, zero


def _neck_norm(scheme: str, channels: int, gn_groups: int) -> nn.Module:
    if scheme == "bn":
        return nn.BatchNorm2d(channels)
    if scheme in PWS_LAYOUT:
        return nn.GroupNorm(1, channels)
    return nn.GroupNorm(gn_groups, channels)


class ResNet(nn.Module):
    """stem -> stages of residual blocks -> neck (norm or nothing, ReLU) -> global average pool -> linear.

    Child modules: ``stem`` (ConvNorm + ReLU), ``stages`` (nn.Sequential of nn.Sequential of
    ResidualBlock), ``neck`` (``[norm or nn.Identity, ReLU, pool, flatten]``), ``head`` (nn.Linear).
    Stage i has ``stage_blocks[i]`` BasicBlocks of width ``widths[i]``; the stem has width
    ``widths[0]``; the first block of every stage but the first has stride 2 and a 1x1 projection
    shortcut. Module names depend only on ``stage_blocks``, so every scheme names its layers alike.
    See ``resnet_cifar`` for the block ordering and the layout of each scheme.
    """

    def __init__(self, stage_blocks: Sequence[int], widths: Sequence[int], scheme: str, num_classes: int = 10,
                 in_channels: int = 3, gn_groups: int = 8, neck_norm: bool | None = None,
                 zero_init_residual: bool | None = None, **conv_options) -> None:
        super().__init__()
        check_scheme(scheme)
        if len(stage_blocks) != len(widths) or not stage_blocks:
            raise ValueError(f"stage_blocks and widths must be non-empty and of equal length, got "
                             f"{tuple(stage_blocks)!r} and {tuple(widths)!r}")
        for name, values in (("stage_blocks", stage_blocks), ("widths", widths)):
            if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
                raise ValueError(f"{name} must be positive integers, got {tuple(values)!r}")
        neck, zero = _layout(scheme, neck_norm, zero_init_residual)

        def conv(*args, **kwargs):
            return make_conv(scheme, *args, gn_groups=gn_groups, **{**conv_options, **kwargs})

        stem = conv(in_channels, widths[0], 3, padding=1)
        if scheme in PWS_LAYOUT:  # the official stem builds a GN(1) when the conv brings no norm
            stem.norm = nn.GroupNorm(1, widths[0])
        self.stem = nn.Sequential(stem, nn.ReLU())

        stages, c_in = [], widths[0]
        for i, (n, c_out) in enumerate(zip(stage_blocks, widths)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                branch = nn.Sequential(
                    conv(c_in, c_out, 3, stride=stride, padding=1),
                    nn.ReLU(),
                    conv(c_out, c_out, 3, padding=1, **self._no_data_init(scheme)),
                )
                if zero:  # mmcv constant_init(norm2, 0): weight and bias 0, the branch starts at 0
                    nn.init.zeros_(branch[2].norm.weight)
                    nn.init.zeros_(branch[2].norm.bias)
                shortcut = conv(c_in, c_out, 1, stride=stride) if (stride != 1 or c_in != c_out) else None
                blocks.append(ResidualBlock(branch, shortcut))
                c_in = c_out
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.neck = nn.Sequential(_neck_norm(scheme, c_in, gn_groups) if neck else nn.Identity(), nn.ReLU(),
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


class ResNetCifar(ResNet):
    """The 3-stage CIFAR ResNet of ``depth`` = 6n+2: n BasicBlocks per stage, widths w, 2w, 4w."""

    def __init__(self, depth: int, scheme: str, num_classes: int = 10, width: int = 16,
                 in_channels: int = 3, gn_groups: int = 8, **options) -> None:
        check_scheme(scheme)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (8, 14, 20, 32, ...), got {depth!r}")
        n = (depth - 2) // 6
        super().__init__((n, n, n), (width, 2 * width, 4 * width), scheme, num_classes, in_channels, gn_groups,
                         **options)


def resnet_cifar(depth: int, scheme: str, num_classes: int = 10, width: int = 16, in_channels: int = 3,
                 **options) -> ResNetCifar:
    """CIFAR ResNet of ``depth`` = 6n+2 layers (3 stages of n BasicBlocks, widths w, 2w, 4w).

    Block ordering of github.com/lyxzzz/PWSConv: ``out = branch(relu(x)) + shortcut``, the identity is
    x itself (not rectified), the 1x1 projection shortcut reads relu(x), and there is no ReLU after the
    add, so the residual stream stays near zero mean. Stem: conv 3x3 -> norm -> ReLU (no max-pool).
    Neck: [norm] -> ReLU -> global average pool; head: linear, weight normal(0, 0.01), bias 0.

    Norm layout by scheme (the official configs, configs/cifar/bn.py and pws.py):
    - "plain": no normalization layer anywhere (neck is ReLU only).
    - "bn", "gn", "ws": the scheme's norm after every conv (projection shortcuts included:
      BatchNorm2d / GroupNorm(gn_groups)), none in the neck (``neck_norm_cfg = None``: ReLU only), and
      the last norm of every block's branch initialised to weight 0, bias 0 (``zero_init_residual=True``),
      so every block starts as its shortcut. This is bn.py exactly; the official code has no GN or WS
      CIFAR config, and "gn"/"ws" take bn.py's layout with the norm swapped (an inference: the
      config's neck norm and zero init depend on ``use_pws`` only), so the three compare alike.
    - "pws", "wn", "centered", "plain+gn": the official PWS layout: no norm inside blocks or shortcuts,
      GroupNorm(1) only after the stem conv and in the neck, so comparisons with PWS change one thing
      at a time ("plain+gn" is plain convs with exactly PWS's norm layers: the control that tells
      what those two GroupNorms do on their own).
      For "pws" the second conv of each branch has ``data_init=False`` (as ``initalpha`` in the
      official code); use ``varprobe.layers.init_alpha`` to run the data-dependent init.

    ``options``: ``gn_groups`` (default 8); ``neck_norm`` and ``zero_init_residual`` (None: the
    layout above; ``neck_norm=True, zero_init_residual=False`` gives "bn"/"gn"/"ws" their earlier
    layout, with the scheme's norm in the neck and no zeroed norm; ValueError where the scheme has no
    such norm); and conv options of ``make_conv`` (``gamma``, ``fan``, ...).
    """
    return ResNetCifar(depth, scheme, num_classes, width, in_channels, **options)
