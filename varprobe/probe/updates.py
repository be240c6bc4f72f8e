"""``w.update_ratio``: the relative size of one optimizer update of each raw weight, on the device.

For a layer with raw weight W (the tensor the optimizer updates, or the part of it a layer's
rows describe: ``varprobe.layouts.WeightView``), recorded at training step t:

    w.update_ratio(t) = ||W_t - W_{t-1}||_F / ||W_{t-1}||_F

W_t being the weight that step t's forward and ``Probe.step()`` see (after step t-1's optimizer
update), so the ratio is the relative size of the update step t-1 applied. For a layer whose output
does not depend on the scale of W (BN after the conv, WN, WS, PWS), this is its effective learning
rate (van Laarhoven 2017; Hoffer et al. 2018; Arora et al. 2019).

How: :meth:`UpdateRatios.snapshot` copies the raw weights into preallocated buffers of the same
shape, dtype and device with one ``torch._foreach_copy_`` (no host sync); the probe calls it in
``step()`` of step t-1 exactly when step t will be recorded. :meth:`UpdateRatios.ratios` then
computes every layer's ratio with ``torch._foreach_sub`` and ``torch._foreach_norm`` (norms
accumulated in float64) into one float64 tensor, still on the device. The difference is taken in
the weight's dtype, which is exact to half an ulp of each entry of the difference.

Absent (no row, as every value undefined by definition): when no snapshot of step t-1 exists
(step 0; step t-1 ran while the probe was detached, or the probe was detached since (``remove()``:
it cannot see the updates made meanwhile); step t-1's step() raised), and, per layer, when the raw
weight is no longer the tensor the snapshot copied, or its shape, dtype or device changed since
(:meth:`UpdateRatios.known`, decided on the host). ||W_{t-1}|| = 0 gives inf (or NaN if W did not
move).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..layouts import WeightView, fallback, layout_of, weight_views

__all__ = ["UpdateRatios"]

_F64 = torch.float64


def _views(items: Sequence[WeightView | nn.Module]) -> list[WeightView]:
    """``items`` as weight views: a module stands for its own weight (the one of its layout)."""
    return [weight_views(w, layout_of(w) or fallback(w))[0] if isinstance(w, nn.Module) else w for w in items]


def _key(view: WeightView, w: Tensor) -> tuple:
    """Identity of the weight ``w`` (``view.part()``): the parameter it is a part of, the part,
    and its shape, dtype and device."""
    return (id(view.parameter()), view.rows, tuple(w.shape), w.dtype, w.device)


def _stack(values: list[Tensor], device: torch.device) -> Tensor:
    """The 0-d ``values`` as one tensor on ``device`` (moved only where a layer lives elsewhere)."""
    if all(v.device == device for v in values):
        return torch.stack(values)
    return torch.stack([v.to(device) for v in values])


class UpdateRatios:
    """Snapshots of the raw weights of a fixed list of layers and their relative update sizes.

    Usage (the probe's): ``snapshot(modules, t - 1)`` before the optimizer update of step t - 1,
    then ``ratios(modules, t)`` at step t. Memory: one copy of the layers' raw weights, allocated
    at the first snapshot and reused (reallocated only for a layer whose weight changed shape,
    dtype or device).
    """

    def __init__(self) -> None:
        self._buffers: list[Tensor] = []
        self._keys: list[tuple] = []
        self._step: int | None = None  # the step whose weights the buffers hold

    @property
    def nbytes(self) -> int:
        """Device bytes held by the snapshot buffers."""
        return sum(b.numel() * b.element_size() for b in self._buffers)

    def clear(self) -> None:
        """Forget the snapshot (the next :meth:`ratios` is NaN); the buffers are kept for reuse."""
        self._step = None

    def snapshot(self, views: Sequence[WeightView | nn.Module], step: int) -> None:
        """Copy the raw weight of each of ``views`` (the weights of ``step``, taken before its
        optimizer update; a module: its own weight) into the buffers. No host sync."""
        views = _views(views)
        weights = [v.part() for v in views]  # copied under no_grad: no detach
        keys = [_key(v, w) for v, w in zip(views, weights)]
        if len(self._buffers) != len(weights):
            self._buffers, self._keys = [torch.empty_like(w) for w in weights], list(keys)
        else:
            for i, (w, k) in enumerate(zip(weights, keys)):
                if self._keys[i][1:] != k[1:]:
                    self._buffers[i] = torch.empty_like(w)
                self._keys[i] = k
        if weights:
            with torch.no_grad():
                torch._foreach_copy_(self._buffers, weights)
        self._step = step

    def known(self, views: Sequence[WeightView | nn.Module], step: int) -> list[bool]:
        """Per weight: whether the weight of ``step - 1`` is known (a snapshot of that step, of the
        same tensor, shape, dtype and device); where it is not, ``w.update_ratio`` has no row."""
        views = _views(views)
        if self._step != step - 1 or len(self._buffers) != len(views):
            return [False] * len(views)
        return [_key(v, v.part()) == k for v, k in zip(views, self._keys)]

    def ratios(self, views: Sequence[WeightView | nn.Module], step: int) -> Tensor:
        """float64 tensor (len(views),) of ||W_step - W_{step-1}||_F / ||W_{step-1}||_F per
        weight, on the weights' device (NaN where the previous weight is not known: :meth:`known`). No host sync."""
        views = _views(views)
        weights = [v.part() for v in views]  # used under no_grad only: no detach
        device = weights[0].device if weights else torch.device("cpu")
        n = len(weights)
        if self._step != step - 1 or len(self._buffers) != n:
            return torch.full((n,), math.nan, dtype=_F64, device=device)
        same = [_key(v, w) == k for v, w, k in zip(views, weights, self._keys)]
        idx = [i for i, ok in enumerate(same) if ok]
        if not idx:
            return torch.full((n,), math.nan, dtype=_F64, device=device)
        cur = [weights[i] for i in idx]
        prev = [self._buffers[i] for i in idx]
        with torch.no_grad():
            diff = torch._foreach_sub(cur, prev)
            ratio = _stack(torch._foreach_norm(diff, 2, dtype=_F64), device) / _stack(
                torch._foreach_norm(prev, 2, dtype=_F64), device)
        if len(idx) == n:
            return ratio
        out = torch.full((n,), math.nan, dtype=_F64, device=device)
        out[torch.tensor(idx, device=device)] = ratio
        return out
