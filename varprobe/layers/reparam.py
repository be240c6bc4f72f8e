"""Base class for convolutions whose weight is a function of raw parameters."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.optim.optimizer import register_optimizer_step_post_hook

__all__ = ["ReparamConv2d", "conv_fan", "kaiming_normal_", "raw_weight"]

# Fused optimizers (``torch.optim.SGD/Adam/AdamW(..., fused=True)``) update parameters in place without
# bumping their version counters, so every step of any ``torch.optim.Optimizer`` also invalidates the caches.
_optimizer_steps = 0


def _count_optimizer_step(optimizer, args, kwargs) -> None:
    global _optimizer_steps
    _optimizer_steps += 1


register_optimizer_step_post_hook(_count_optimizer_step)


class ReparamConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` whose effective weight is ``kernel()``, a pure function of its parameters.

    Subclasses implement ``kernel()`` only. In training mode the kernel is recomputed on every
    forward, with autograd. In eval mode the forward uses a kernel cached without autograd; the
    cache is keyed on the identity, version counter, dtype and device of every parameter and on a
    global count of ``torch.optim`` steps (fused optimizers do not bump version counters), so it is
    never stale after an optimizer step, ``load_state_dict``, ``.to()`` or a change of mode (the
    official PWS cache is filled once at ``.eval()`` and never refreshed: it has all four bugs). The
    cache is a plain attribute, not a buffer, so it never shows in ``buffers()`` or ``state_dict()``.
    Not tracked: in-place writes through ``param.data`` (``.data`` has its own version counter) and
    changes to non-parameter attributes such as ``gamma``; call ``.train(False)`` again after those.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._cached_kernel: Tensor | None = None  # a plain attribute: not in buffers() or state_dict()
        self._cache_key: tuple | None = None

    def kernel(self) -> Tensor:
        """Effective weight, shape (out_channels, in_channels // groups, kh, kw)."""
        raise NotImplementedError

    @property
    def fan_in(self) -> int:
        """(in_channels / groups) * kh * kw: the number of inputs of one filter."""
        return self.weight[0].numel()

    def _key(self) -> tuple:
        return (_optimizer_steps,
                tuple((id(p), p._version, p.data_ptr(), p.dtype, p.device) for p in self.parameters()))

    def eval_kernel(self) -> Tensor:
        """``kernel()`` computed under ``no_grad`` and cached until any parameter changes."""
        key = self._key()
        if self._cached_kernel is None or key != self._cache_key:
            # Not an inference tensor even under inference_mode: a later autograd-tracked forward
            # (e.g. input gradients in eval mode) must be able to save the cached kernel for backward.
            with torch.inference_mode(False), torch.no_grad():
                self._cached_kernel = self.kernel().detach()
            self._cache_key = key
        return self._cached_kernel

    def train(self, mode: bool = True) -> "ReparamConv2d":
        self._cached_kernel, self._cache_key = None, None
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._cached_kernel, self._cache_key = None, None
        super()._load_from_state_dict(*args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.kernel() if self.training else self.eval_kernel()
        return self._conv_forward(x, weight, self.bias)

    def to_conv2d(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` with the same geometry whose weight is ``kernel()``, detached."""
        conv = nn.Conv2d(
            self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
            self.dilation, self.groups, self.bias is not None, self.padding_mode,
            device=self.weight.device, dtype=self.weight.dtype,
        )
        with torch.no_grad():
            conv.weight.copy_(self.kernel())
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv


def kaiming_normal_(weight: Tensor, fan: int) -> Tensor:
    """In-place N(0, 2 / fan): He et al. (2015) for ReLU networks."""
    with torch.no_grad():
        return weight.normal_(0.0, (2.0 / fan) ** 0.5)


def conv_fan(weight: Tensor, mode: str) -> int:
    """fan_in = (C_in / groups) * kh * kw, fan_out = C_out * kh * kw, of a conv weight (O, I/g, kh, kw)."""
    if mode == "fan_in":
        return weight[0].numel()
    if mode == "fan_out":
        return weight.shape[0] * weight[0, 0].numel()
    raise ValueError(f"fan must be 'fan_in' or 'fan_out', got {mode!r}")



def raw_weight(m: nn.Module) -> Tensor:
    """The weight tensor the optimizer updates for a conv or linear layer ``m``: its ``weight``
    (for a ``ReparamConv2d``, the raw V that ``kernel()`` reparametrizes); under a torch
    parametrization, the original of the kernel's shape (``v`` of ``weight_norm``); for the
    legacy ``torch.nn.utils.weight_norm``, ``weight_v``."""
    if parametrize.is_parametrized(m, "weight"):
        plist = m.parametrizations.weight
        originals = [getattr(plist, n) for n in ("original", *(f"original{i}" for i in range(8)))
                     if hasattr(plist, n)]
        return next((o for o in originals if o.shape == m.weight.shape), originals[0])
    if isinstance(getattr(m, "weight_v", None), Tensor):
        return m.weight_v
    return m.weight
