"""The All-CNN / VGG-style CIFAR network of the official TF code (PWSConv_backup, cifar_VGG)."""
from __future__ import annotations

from torch import Tensor, nn

from ..layers import make_conv
from ..layers.factory import check_scheme

__all__ = ["vgg_cifar", "simple_cnn", "ConvNet"]


class ConvNet(nn.Module):
    """``features`` (convs with ReLU and max-pools) -> global average pool -> ``head``."""

    def __init__(self, features: nn.Sequential, head: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.features(x)))


def _stack(scheme: str, plan: list, in_channels: int, gn_groups: int, options: dict) -> tuple[nn.Sequential, int]:
    layers, c = [], in_channels
    for item in plan:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        c_out, k, padding = item
        layers += [make_conv(scheme, c, c_out, k, padding=padding, gn_groups=gn_groups, **options),
                   nn.ReLU()]
        c = c_out
    return nn.Sequential(*layers), c


def vgg_cifar(scheme: str, num_classes: int = 10, in_channels: int = 3, width: int = 96,
              gn_groups: int = 8, **options) -> ConvNet:
    """All-CNN/NIN-style net of the paper's TF CIFAR code, widths w and 2w (96 and 192 there):

    3 x conv3x3-w, max-pool, 3 x conv3x3-2w, max-pool, conv3x3-2w (valid), 2 x conv1x1-2w, global
    average pool, 1x1 logits (here an ``nn.Linear``, the same map after pooling). Each conv is
    ``make_conv(scheme, ...)`` followed by ReLU: "bn"/"gn"/"ws" have their norm after every conv, and
    "plain"/"pws"/"wn"/"centered" have no normalization layer at all, as in the TF code ("plain+gn",
    plain convs with the norm layers PWS keeps, is therefore the same network as "plain").
    """
    check_scheme(scheme)
    w = width
    plan = [(w, 3, 1)] * 3 + ["M"] + [(2 * w, 3, 1)] * 3 + ["M"] + [(2 * w, 3, 0)] + [(2 * w, 1, 0)] * 2
    features, c = _stack(scheme, plan, in_channels, gn_groups, options)
    return ConvNet(features, _head(c, num_classes))


def simple_cnn(scheme: str, num_classes: int = 10, in_channels: int = 1, width: int = 32,
               gn_groups: int = 8, **options) -> ConvNet:
    """Small 5-conv CNN for 8x8 digits: conv3x3-w x2, max-pool, conv3x3-2w x2, max-pool, conv3x3-2w,
    global average pool, linear. Norm layout as ``vgg_cifar`` (none for "plain", "plain+gn", "pws", "wn",
    "centered").
    """
    check_scheme(scheme)
    w = width
    plan = [(w, 3, 1)] * 2 + ["M"] + [(2 * w, 3, 1)] * 2 + ["M"] + [(2 * w, 3, 1)]
    features, c = _stack(scheme, plan, in_channels, gn_groups, options)
    return ConvNet(features, _head(c, num_classes))


def _head(channels: int, num_classes: int) -> nn.Linear:
    head = nn.Linear(channels, num_classes)
    nn.init.normal_(head.weight, 0.0, 0.01)
    nn.init.zeros_(head.bias)
    return head
