"""float64 numpy references for convs in 1, 2 and 3 dimensions, plain and transposed, written from the
definitions with explicit loops: the filters of output units, the scheme kernels, the convolutions and
the norms. Nothing here calls varprobe."""
from __future__ import annotations

import itertools

import numpy as np


def filters_of(w: np.ndarray, groups: int, transposed: bool) -> np.ndarray:
    """(C_out, C_in/groups, *k): row o holds the weights that feed output channel o. A transposed
    conv's weight is (C_in, C_out/groups, *k): output channel o = g * C_out/groups + j is fed by
    w[g*C_in/groups + c, j] for c < C_in/groups."""
    w = np.asarray(w, dtype=np.float64)
    if not transposed:
        return w.copy()
    c_in, og = w.shape[:2]
    ig = c_in // groups
    out = np.empty((groups * og, ig) + w.shape[2:])
    for o in range(groups * og):
        g, j = divmod(o, og)
        for c in range(ig):
            out[o, c] = w[g * ig + c, j]
    return out


def weight_of(f: np.ndarray, groups: int, transposed: bool) -> np.ndarray:
    """The inverse of ``filters_of``, by the same loop run backwards."""
    if not transposed:
        return f.copy()
    c_out, ig = f.shape[:2]
    og = c_out // groups
    w = np.empty((groups * ig, og) + f.shape[2:])
    for o in range(c_out):
        g, j = divmod(o, og)
        for c in range(ig):
            w[g * ig + c, j] = f[o, c]
    return w


def mean_var(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row mean and biased variance, written out; shapes (C_out, 1, ..., 1)."""
    flat = f.reshape(f.shape[0], -1)
    n = flat.shape[1]
    mean = flat.sum(axis=1) / n
    var = ((flat - mean[:, None]) ** 2).sum(axis=1) / n
    shape = (-1,) + (1,) * (f.ndim - 1)
    return mean.reshape(shape), var.reshape(shape)


def kernel_ref(scheme: str, w: np.ndarray, groups: int, transposed: bool, **p) -> np.ndarray:
    """The scheme's kernel from its formula, in the weight's layout. ``p``: alpha, gamma, gamma_mode,
    fan (pws); eps (ws, wn); g (wn)."""
    f = filters_of(w, groups, transposed)
    mean, var = mean_var(f)
    if scheme in ("plain", "plain+gn", "bn", "gn"):
        k = f
    elif scheme == "centered":
        k = f - mean
    elif scheme == "ws":
        k = (f - mean) / np.sqrt(var + p["eps"])
    elif scheme == "wn":
        norm = np.sqrt((f.reshape(f.shape[0], -1) ** 2).sum(axis=1)).reshape(mean.shape)
        k = np.asarray(p["g"], dtype=np.float64).reshape(mean.shape) * f / np.maximum(norm, p["eps"])
    elif scheme == "pws":
        per_filter = int(np.prod(f.shape[1:]))
        fan = per_filter if p["fan"] == "fan_in" else f.shape[0] * int(np.prod(f.shape[2:]))
        gp = p["gamma"] if p["gamma_mode"] == "raw" else p["gamma"] * 2.0 / fan
        k = np.sqrt(2.0 / fan) * np.asarray(p["alpha"], dtype=np.float64).reshape(mean.shape) * (f - mean) \
            / np.sqrt(var + gp)
    else:
        raise KeyError(scheme)
    return weight_of(k, groups, transposed)


def conv_ref(x, w, b, stride, padding, dilation, groups) -> np.ndarray:
    """Cross-correlation in any number of dimensions (zero padding), summed tap by tap."""
    x, w = np.asarray(x, dtype=np.float64), np.asarray(w, dtype=np.float64)
    d = x.ndim - 2
    n, c = x.shape[:2]
    o, cg = w.shape[:2]
    ks = w.shape[2:]
    xp = np.pad(x, [(0, 0), (0, 0)] + [(q, q) for q in padding])
    size = [(x.shape[2 + i] + 2 * padding[i] - dilation[i] * (ks[i] - 1) - 1) // stride[i] + 1 for i in range(d)]
    og = o // groups
    out = np.zeros((n, o, *size))
    for g in range(groups):
        xs = xp[:, g * cg:(g + 1) * cg]
        for tap in itertools.product(*(range(k) for k in ks)):
            sl = tuple(slice(t * dilation[i], t * dilation[i] + stride[i] * (size[i] - 1) + 1, stride[i])
                       for i, t in enumerate(tap))
            patch = xs[(slice(None), slice(None)) + sl]
            out[:, g * og:(g + 1) * og] += np.einsum("nc...,oc->no...", patch, w[g * og:(g + 1) * og][(...,) + tap])
    if b is not None:
        out += np.asarray(b, dtype=np.float64).reshape((1, -1) + (1,) * d)
    return out


def conv_transpose_ref(x, w, b, stride, padding, output_padding, dilation, groups) -> np.ndarray:
    """Transposed conv from its definition: input position i and tap t add x[i] * w[t] to output
    position i * stride + t * dilation - padding (weight (C_in, C_out/groups, *k))."""
    x, w = np.asarray(x, dtype=np.float64), np.asarray(w, dtype=np.float64)
    d = x.ndim - 2
    n, c = x.shape[:2]
    og = w.shape[1]
    ks = w.shape[2:]
    ig = c // groups
    full = [(x.shape[2 + i] - 1) * stride[i] + dilation[i] * (ks[i] - 1) + 1 + output_padding[i] for i in range(d)]
    size = [full[i] - 2 * padding[i] for i in range(d)]
    out = np.zeros((n, groups * og, *full))
    for g in range(groups):
        xs = x[:, g * ig:(g + 1) * ig]
        for tap in itertools.product(*(range(k) for k in ks)):
            sl = tuple(slice(t * dilation[i], t * dilation[i] + stride[i] * (x.shape[2 + i] - 1) + 1, stride[i])
                       for i, t in enumerate(tap))
            out[(slice(None), slice(g * og, (g + 1) * og)) + sl] += np.einsum(
                "nc...,cj->nj...", xs, w[g * ig:(g + 1) * ig][(...,) + tap])
    out = out[(slice(None), slice(None)) + tuple(slice(padding[i], padding[i] + size[i]) for i in range(d))]
    if b is not None:
        out += np.asarray(b, dtype=np.float64).reshape((1, -1) + (1,) * d)
    return out


def batchnorm_ref(y, weight, bias, eps, mean=None, var=None) -> np.ndarray:
    """BatchNorm over (N, *spatial) per channel: with the batch's mean and biased variance, or the
    ``mean``/``var`` given (running statistics)."""
    axes = (0,) + tuple(range(2, y.ndim))
    m = y.mean(axis=axes, keepdims=True) if mean is None else np.reshape(mean, (1, -1) + (1,) * (y.ndim - 2))
    v = ((y - y.mean(axis=axes, keepdims=True)) ** 2).mean(axis=axes, keepdims=True) if var is None \
        else np.reshape(var, (1, -1) + (1,) * (y.ndim - 2))
    shape = (1, -1) + (1,) * (y.ndim - 2)
    return (y - m) / np.sqrt(v + eps) * np.reshape(weight, shape) + np.reshape(bias, shape)


def groupnorm_ref(y, groups, weight, bias, eps) -> np.ndarray:
    """GroupNorm: per sample, mean and biased variance over (C/groups, *spatial) of each group."""
    n, c = y.shape[:2]
    z = y.reshape(n, groups, -1)
    m = z.mean(axis=2, keepdims=True)
    v = ((z - m) ** 2).mean(axis=2, keepdims=True)
    shape = (1, -1) + (1,) * (y.ndim - 2)
    return ((z - m) / np.sqrt(v + eps)).reshape(y.shape) * np.reshape(weight, shape) + np.reshape(bias, shape)
