"""Split a conv layer's output second moment into the part i.i.d. inputs give, the filter-sum
(shift) part, and the rest that comes from filters aligning with correlated inputs.

For filter i with kernel K_i and an input whose entries are i.i.d. with mean mu and variance
sigma^2, the output at a position where the taps in the set V fall inside the input (zero padding
elsewhere) has

    E[(y_i - b_i)^2] = sigma^2 sum_{t in V} ||K_i[:, t]||^2 + mu^2 (sum_{t in V} s_i[t])^2,

s_i[t] = sum over input channels of K_i[:, t] (the filter sum at spatial tap t). Averaged over
output positions this is ``sigma^2 K_i^2 . diag(C) + mu^2 s_i^T C s_i`` with C the tap overlap
matrix of :func:`tap_overlap`: C[t, u] = fraction of output positions where taps t and u are
both inside the input. Without padding C is all ones, and the two parts are the textbook
sigma^2 ||K_i||^2 and mu^2 (1^T K_i)^2 of ``varprobe.theory.split_from_norms``.

This is a different quantity from that split, not a copy of it: the padding-aware average over
output positions (what the probe's ``dec.iid`` and ``dec.shift`` record, in torch, on the probe's
device), which equals ``theory.split_from_norms`` only where no tap reads padding. (stats and theory are
pure math and import nothing of the package, so neither calls the other.)
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["tap_overlap", "layer_tap_overlap", "second_moment_parts"]

_F64 = torch.float64


def _overlap_1d(length: int, k: int, stride: int, dilation: int, pad: tuple[int, int]) -> Tensor:
    """(k, k) float64: mean over output positions o of inside(o, t) * inside(o, u) along one axis."""
    left, right = pad
    n_out = (length + left + right - dilation * (k - 1) - 1) // stride + 1
    if n_out < 1:
        raise ValueError(f"input length {length} is shorter than the dilated kernel {dilation * (k - 1) + 1} "
                         f"with padding {pad}")
    index = (torch.arange(n_out, dtype=torch.long)[:, None] * stride - left
             + torch.arange(k, dtype=torch.long)[None, :] * dilation)
    inside = ((index >= 0) & (index < length)).to(_F64)  # (n_out, k)
    return inside.T @ inside / n_out


def tap_overlap(size: Sequence[int], kernel_size: Sequence[int], stride: Sequence[int],
                dilation: Sequence[int], padding: Sequence[tuple[int, int]]) -> Tensor:
    """Tap overlap matrix C of an N-d convolution with zero padding, float64, shape (T, T), T =
    prod(kernel_size), taps in row-major order (as ``K_i[c].flatten()``).

    C[t, u] = fraction of output positions at which spatial taps t and u both read the input, not
    padding; diag(C) is the fraction at which tap t does. Output positions form a grid, so C is
    the Kronecker product of the per-axis overlaps. ``size``: the input's spatial size;
    ``padding``: (before, after) per axis.
    """
    dims = len(size)
    if not (len(kernel_size) == len(stride) == len(dilation) == len(padding) == dims):
        raise ValueError(f"size, kernel_size, stride, dilation and padding need one entry per spatial axis "
                         f"({dims}), got {list(kernel_size)}, {list(stride)}, {list(dilation)}, {list(padding)}")
    out = torch.ones(1, 1, dtype=_F64)
    for args in zip(size, kernel_size, stride, dilation, padding):
        out = torch.kron(out, _overlap_1d(*args))
    return out


def second_moment_parts(kernel: Tensor, overlap: Tensor, mean: Tensor | float,
                        var: Tensor | float) -> tuple[Tensor, Tensor]:
    """Per filter, the two parts of E[(y_i - b_i)^2] that inputs with i.i.d. entries give.

    Args:
        kernel: the effective weight, (O, C_in/groups, *kernel_size) for a conv or (O, in) for a
            linear layer (one tap, ``overlap`` = [[1]]).
        overlap: (T, T) from :func:`tap_overlap`.
        mean, var: mean and biased variance of all entries of the input.

    Returns:
        (iid, shift), each float64 of shape (O,): iid_i = var * sum_{c,t} C[t, t] K_i[c, t]^2 and
        shift_i = mean^2 * s_i^T C s_i with s_i[t] = sum_c K_i[c, t]. Both are >= 0 (C is a Gram
        matrix, so s^T C s >= 0); shift is clamped at 0 against rounding.
    """
    k = kernel.detach().to(_F64)
    k = k.reshape(k.shape[0], k.shape[1], -1)  # (O, C, T)
    if overlap.shape != (k.shape[2], k.shape[2]):
        raise ValueError(f"overlap of shape {tuple(overlap.shape)} does not fit a kernel with {k.shape[2]} taps")
    c = overlap.to(k.device, _F64)
    iid = (k.square().sum(1) * c.diagonal()).sum(1) * var
    s = k.sum(1)  # (O, T)
    shift = ((s @ c) * s).sum(1).clamp_min(0.0) * (mean * mean)
    return iid, shift


def layer_tap_overlap(size: Sequence[int], kernel_size: Sequence[int] = (), stride: Sequence[int] = (),
                      dilation: Sequence[int] = (), padding: str | Sequence[int] = (),
                      padding_mode: str = "zeros") -> Tensor:
    """:func:`tap_overlap` of a layer given as ``nn.Conv*d`` describes itself, on inputs of spatial
    ``size``: ``padding`` is an int per axis (both sides), ``"valid"`` or ``"same"`` (total
    d (k - 1), the odd one after, as torch pads). A non-zero ``padding_mode`` (reflect, replicate,
    circular) makes every tap read input entries (all ones); no ``kernel_size`` (a linear layer,
    one tap) gives [[1]]."""
    if not kernel_size:
        return torch.ones(1, 1, dtype=_F64)
    taps = 1
    for k in kernel_size:
        taps *= k
    if padding_mode != "zeros":
        return torch.ones(taps, taps, dtype=_F64)
    if padding == "valid":
        pads = [(0, 0)] * len(kernel_size)
    elif padding == "same":
        pads = [(d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in zip(kernel_size, dilation)]
    else:
        pads = [(p, p) for p in padding]
    return tap_overlap(size, kernel_size, stride, dilation, pads)
