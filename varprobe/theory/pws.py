"""Parametric Weights Standardization in float64: kernel, variance, raw gradient, gradient bound.

Per output filter ``i`` with raw weights ``v`` (``n`` entries, flattened over ``(C_in/g, kh, kw)``),
paper-notes 1.6 and 2.1:

    u = v - mean(v) 1,   s^2 = ||u||^2 / n  (biased variance),   r = sqrt(s^2 + gamma'),
    c = sqrt(2 / fan),   kernel = c alpha u / r.

``fan`` is whatever the layer uses (fan-in ``C_in/g kh kw`` or fan-out ``C_out kh kw``); ``n`` is
always the number of weights per filter. ``gamma_eff`` is ``gamma'``, the constant actually added to
``s^2`` (the caller resolves the "equiv" mode ``gamma' = 2 gamma / fan``).

All functions accept numpy arrays, torch tensors or numbers, compute in float64 and return numpy
float64 arrays (or floats). Nothing here imports the rest of varprobe.
"""
from __future__ import annotations

import numpy as np

from .transmission import (
    ArrayLike,
    FloatOrArray,
    as_float64,
    as_scalar,
    flatten_filters,
    per_filter,
    scalar_or_array,
)

__all__ = [
    "filter_variance",
    "pws_fan_var",
    "pws_grad_scale",
    "pws_grad_scale_bound",
    "pws_kernel",
    "pws_raw_grad",
]


def _gain(fan: ArrayLike) -> float:
    fan = as_scalar(fan, "fan")
    if fan <= 0:
        raise ValueError(f"fan must be > 0, got {fan}")
    return (2.0 / fan) ** 0.5


def _gamma(gamma_eff: ArrayLike) -> float:
    g = as_scalar(gamma_eff, "gamma_eff")
    if g < 0:
        raise ValueError(f"gamma_eff must be >= 0, got {g}")
    return g


def _alpha_per_filter(alpha: ArrayLike, c_out: int) -> np.ndarray:
    a = as_float64(alpha).reshape(-1)
    if a.size == 1:
        return np.full(c_out, a[0])
    if a.size == c_out:
        return a
    raise ValueError(f"alpha must be a scalar or have {c_out} entries (one per filter), got {a.size}")


def _centered(v: ArrayLike) -> tuple[np.ndarray, np.ndarray, tuple[int, ...], bool]:
    """``u`` (C_out, n), ``s^2`` (C_out,), the original shape, and whether it was one 1-D filter."""
    flat, single = flatten_filters(v)
    u = flat - flat.mean(axis=1, keepdims=True)
    s2 = np.einsum("ij,ij->i", u, u) / u.shape[1]
    return u, s2, as_float64(v).shape, single


def filter_variance(weight: ArrayLike) -> FloatOrArray:
    """Biased (1/n) variance ``s_i^2`` of each filter over its flattened ``(C_in/g, kh, kw)`` entries.

    Returns:
        ``(C_out,)`` float64 array, or a float for a 1-D weight.
    """
    _, s2, _, single = _centered(weight)
    return per_filter(s2, single)


def pws_kernel(v: ArrayLike, alpha: ArrayLike, gamma_eff: ArrayLike, fan: ArrayLike) -> np.ndarray:
    """Reference PWS kernel ``c alpha_i (v_i - mean(v_i)) / sqrt(s_i^2 + gamma')``, ``c = sqrt(2/fan)``.

    Mean and biased variance per filter over all non-leading axes. Every filter of the result sums to
    zero.

    Args:
        v: raw weight ``(C_out, ...)`` or one filter ``(n,)``.
        alpha: per-filter scale, a scalar or ``C_out`` entries (e.g. shape ``(C_out, 1, 1, 1)``).
        gamma_eff: ``gamma' >= 0`` (with 0, a constant filter gives nan).
        fan: the fan in ``c = sqrt(2 / fan)``.

    Returns:
        float64 array of ``v``'s shape.
    """
    u, s2, shape, _ = _centered(v)
    a = _alpha_per_filter(alpha, u.shape[0])
    kernel = _gain(fan) * a[:, None] * u / np.sqrt(s2 + _gamma(gamma_eff))[:, None]
    return kernel.reshape(shape)


def pws_fan_var(alpha: ArrayLike, s2: ArrayLike, gamma_eff: ArrayLike) -> FloatOrArray:
    """``fan * Var(kernel_i) = 2 alpha_i^2 s_i^2 / (s_i^2 + gamma')`` (biased variance of the kernel).

    Since the kernel is ``c alpha u / r`` with ``Var(u) = s^2`` and ``c^2 = 2 / fan``. With alpha = 1 and
    ``gamma' << s^2`` this is He's 2; ``gamma'`` comparable to ``s^2`` lowers it. Broadcasts.

    Args:
        alpha: per-filter scale.
        s2: biased variance of the raw filter, ``s^2 = Var(v_i)`` (see :func:`filter_variance`).
        gamma_eff: ``gamma'``.
    """
    a, s2 = as_float64(alpha), as_float64(s2)
    return scalar_or_array(2.0 * a * a * s2 / (s2 + _gamma(gamma_eff)))


def pws_raw_grad(v: ArrayLike, alpha: ArrayLike, gamma_eff: ArrayLike, fan: ArrayLike,
                 grad_kernel: ArrayLike) -> np.ndarray:
    """Closed-form ``dL/dv`` of the raw PWS weight from ``G = dL/dkernel`` (paper-notes 1.6).

    Per filter, with ``u``, ``s^2``, ``r``, ``c`` as in the module docstring and ``alpha`` held fixed:

        dL/dv = (c alpha / r) [ (G - mean(G) 1) - (u^T G) / (n r^2) u ]

    The Jacobian ``d kernel / d v = (c alpha / r)(P - u u^T / (n r^2))``, ``P = I - 1 1^T / n``, is
    symmetric, so this is also its product with ``G``. Consequences: ``1^T dL/dv = 0`` exactly (the
    per-filter average gradient vanishes) and ``u^T dL/dv = (c alpha / r)(u^T G) gamma' / r^2``.

    Args:
        v: raw weight ``(C_out, ...)`` or one filter ``(n,)``.
        alpha: per-filter scale, a scalar or ``C_out`` entries.
        gamma_eff: ``gamma'``.
        fan: the fan in ``c = sqrt(2 / fan)``.
        grad_kernel: ``G``, same shape as ``v``.

    Returns:
        float64 array of ``v``'s shape.
    """
    u, s2, shape, _ = _centered(v)
    g = as_float64(grad_kernel)
    if g.shape != shape:
        raise ValueError(f"grad_kernel shape {g.shape} != weight shape {shape}")
    g = g.reshape(u.shape)
    n = u.shape[1]
    a = _alpha_per_filter(alpha, u.shape[0])
    r2 = s2 + _gamma(gamma_eff)
    r = np.sqrt(r2)
    g_centered = g - g.mean(axis=1, keepdims=True)
    radial = np.einsum("ij,ij->i", u, g) / (n * r2)
    grad = (_gain(fan) * a / r)[:, None] * (g_centered - radial[:, None] * u)
    return grad.reshape(shape)


def pws_grad_scale(alpha: ArrayLike, s2: ArrayLike, gamma_eff: ArrayLike, fan: ArrayLike) -> FloatOrArray:
    """Spectral norm of the per-filter Jacobian ``d kernel / d v``: ``c |alpha| / sqrt(s^2 + gamma')``.

    The Jacobian ``J = (c alpha / r)(P - u u^T / (n r^2))`` is symmetric with eigenvalues 0 (along
    ``1``), ``(c alpha / r) gamma' / r^2`` (along ``u``) and ``c alpha / r`` (on the ``n - 2``
    directions orthogonal to ``1`` and ``u``). For ``n >= 3`` its largest singular value is therefore
    exactly ``c |alpha| / r``: ``||dL/dv|| <= (c |alpha| / r) ||dL/dkernel||`` for every ``G``, with
    equality for ``G`` orthogonal to ``1`` and ``u``. (For ``n = 2`` only the ``u`` eigenvalue is
    non-zero.) Broadcasts.

    Args:
        alpha: per-filter scale.
        s2: biased variance of the raw filter.
        gamma_eff: ``gamma'``.
        fan: the fan in ``c = sqrt(2 / fan)``.
    """
    a, s2 = as_float64(alpha), as_float64(s2)
    with np.errstate(divide="ignore"):
        return scalar_or_array(_gain(fan) * np.abs(a) / np.sqrt(s2 + _gamma(gamma_eff)))


def pws_grad_scale_bound(alpha: ArrayLike, gamma_eff: ArrayLike, fan: ArrayLike) -> FloatOrArray:
    """Cap on the gradient scale over all raw weights: ``c |alpha| / sqrt(gamma')`` (inf for gamma' = 0).

    "Bounded" means: for every raw filter ``v`` (any ``s^2 >= 0``) and every ``G = dL/dkernel``,
    ``||dL/dv||_2 <= c |alpha| / sqrt(s^2 + gamma') * ||G||_2 <= c |alpha| / sqrt(gamma') * ||G||_2``;
    i.e. the spectral norm of the per-filter Jacobian (:func:`pws_grad_scale`) never exceeds this cap,
    and approaches it as weight decay shrinks ``s^2 -> 0``. Without ``gamma'`` it grows like ``1 / s``.
    Broadcasts over ``alpha``.
    """
    a = as_float64(alpha)
    g = _gamma(gamma_eff)
    with np.errstate(divide="ignore"):
        return scalar_or_array(_gain(fan) * np.abs(a) / np.sqrt(g))
