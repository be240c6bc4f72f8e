"""Which axis of a module's output is the channel axis, from the module and the output's shape.

``Probe`` reduces channel-wise statistics (``out.ch_var``, ``out.ch_sq_mean``, ``out.dead_frac``,
``bn.*``) over every axis but the channel axis. Convolutions, BatchNorm and GroupNorm put
channels on axis 1 (N, C, ...); ``nn.Linear`` and a plain ``nn.LayerNorm`` on the last axis.
Subclasses of ``nn.LayerNorm`` written for images (transformers' ``ConvNextLayerNorm`` with
``data_format="channels_first"``, timm's ``LayerNorm2d``) normalize axis 1 of an NCHW tensor by
permuting around ``F.layer_norm``: for them the channel axis is found by matching
``normalized_shape`` against the output's shape, and reported as undeterminable (None) when both
axis 1 and the last axis match (e.g. C == W) and the module says nothing (``data_format``).
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = ["channel_axis", "static_channel_axis"]

FIRST, LAST = 1, -1


def static_channel_axis(module: nn.Module) -> int | None:
    """The channel axis of ``module``'s outputs when it does not depend on their shape (every
    module but a subclass of ``nn.LayerNorm`` without a ``data_format``), else None: then ask
    :func:`channel_axis` per shape."""
    if isinstance(module, nn.Linear):
        return LAST
    if not isinstance(module, nn.LayerNorm):
        return FIRST
    if type(module) is nn.LayerNorm:
        return LAST
    fmt = getattr(module, "data_format", None)
    if fmt in ("channels_first", "channels_last"):
        return FIRST if fmt == "channels_first" else LAST
    return None


def channel_axis(module: nn.Module, shape: Sequence[int]) -> int | None:
    """The channel axis (1 or -1) of ``module``'s output of shape ``shape``, or None when it cannot
    be told (the caller then records whole-tensor statistics only and warns naming the layer).

    - ``nn.Linear``: -1 (features).
    - ``nn.LayerNorm`` itself: -1 (``F.layer_norm`` normalizes the trailing ``normalized_shape``
      dims; with several, their last is the channel axis, as before).
    - A subclass of ``nn.LayerNorm``: its ``data_format`` attribute when it has one
      (``"channels_first"`` -> 1, ``"channels_last"`` -> -1); else, for a 1-d ``normalized_shape``
      (C,) on an output of rank >= 3: -1 if only the last axis has size C, 1 if only axis 1 has,
      None if both or neither do. A rank-2 output: -1 when its last axis has size C, else None.
    - Every other module (convs, BatchNorm, GroupNorm, residual blocks, ...): 1.
    """
    shape = tuple(int(s) for s in shape)
    fixed = static_channel_axis(module)
    if fixed is not None:
        return fixed
    normalized = tuple(module.normalized_shape)
    if len(normalized) != 1 or len(shape) < 2:
        return LAST if len(shape) >= len(normalized) and shape[-len(normalized):] == normalized else None
    c = normalized[0]
    if len(shape) == 2:
        return LAST if shape[-1] == c else None
    first, last = shape[1] == c, shape[-1] == c
    if first and not last:
        return FIRST
    if last and not first:
        return LAST
    return None
