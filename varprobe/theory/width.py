"""How statistics scale with the width of a network: log-log slopes, and what they are at initialisation.

A statistic ``s`` of a layer scales with the width ``w`` as ``s ~ w^slope``; the slope is the
least-squares slope of ``log s`` on ``log w`` (:func:`loglog_slope`, the one place it is written).

At initialisation, for a chain of weight layers ``y_l = W_l x_l`` (each layer's input the
ReLU of the previous one's output, zero biases, i.i.d. zero-mean weights of variance ``Var(W_l)``)
He's transmission ``E[y_l^2] = n_l Var(W_l) E[x_l^2]`` (:func:`.transmission.he_transmission`) and
``E[ReLU(y)^2] = E[y^2] / 2`` for a symmetric ``y`` give, in expectation over the weights,

    E[y_l^2] = E[x_1^2] prod_{k <= l} n_k Var(W_k) / 2^(l-1).

With a fan-in ``n_k ~ w^(a_k)`` (``a_k`` = 1 when layer k's input channels grow with the width, 0
for the first layer, whose input is the image) and a weight variance ``Var(W_k) ~ n_k^(-e_k)``
(``e_k`` = :data:`KAIMING`, 1, for He's ``2 / n``; :data:`STANDARD`, 0, for N(0, 1) or any fixed
variance), the slope of ``E[y_l^2]`` (``out.sq_mean`` of layer l) in the width is

    slope_l = sum_{k <= l} a_k (1 - e_k)                                 (:func:`init_sq_mean_slopes`)

so 0 for every layer of a Kaiming fan-in net, and L for the L-th layer whose fan-in grows in a net
of N(0, 1) weights. Average pooling, max pooling and flattening act per channel and add nothing.

The filter-sum (shift) term of the i.i.d. split, ``mu^2 (1^T w)^2``, is in expectation over a He
draw whose filter mean is shifted by ``kappa`` weight standard deviations
``2 mu^2 (1 + n kappa^2)`` (:func:`.amplification.shifted_filter_split`): flat in the fan-in at
``kappa = 0`` (initialisation, and a zero-sum kernel such as PWS's at any time), linear in it once
``n kappa^2 >> 1``. :func:`filter_sum_slope` gives its slope over a set of fan-ins.

Pure numpy; imports nothing of varprobe outside ``varprobe.theory``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .amplification import shifted_filter_split
from .transmission import ArrayLike, as_float64

__all__ = ["KAIMING", "STANDARD", "loglog_slope", "init_sq_mean_slopes", "filter_sum_slope"]

#: ``e`` of a weight variance ``Var(W) ~ fan_in^(-e)``: He / Kaiming fan-in, ``2 / fan_in``.
KAIMING = 1.0
#: ``e`` of a weight variance that does not depend on the fan-in: N(0, 1), or ``nn.init.normal_(w, 0, 0.01)``.
STANDARD = 0.0


def loglog_slope(widths: ArrayLike, values: ArrayLike) -> float:
    """The least-squares slope of ``log(values)`` on ``log(widths)``, in float64:
    ``sum (u - ubar)(v - vbar) / sum (u - ubar)^2`` with ``u = log w``, ``v = log s``.

    Raises ValueError for fewer than two points, lengths that differ, fewer than two distinct
    widths, or a width or value that is not finite and positive (each has no logarithm)."""
    w, s = as_float64(widths).ravel(), as_float64(values).ravel()
    if w.size != s.size:
        raise ValueError(f"loglog_slope needs as many widths as values, got {w.size} and {s.size}")
    bad = ~(np.isfinite(w) & (w > 0) & np.isfinite(s) & (s > 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"loglog_slope needs finite positive widths and values, got width {float(w[i])!r} with value "
                         f"{float(s[i])!r}")
    if np.unique(w).size < 2:
        raise ValueError(f"loglog_slope needs at least two distinct widths, got {sorted(set(w.tolist()))}")
    u, v = np.log(w), np.log(s)
    du = u - u.mean()
    return float(np.dot(du, v - v.mean()) / np.dot(du, du))


def init_sq_mean_slopes(fan_in_exponents: Sequence[float], weight_var_exponents: float | Sequence[float]
                        ) -> list[float]:
    """The slope in the width of ``E[y_l^2]`` (``out.sq_mean``) of each layer of a chain of weight
    layers at initialisation, in forward order: ``slope_l = sum_{k <= l} a_k (1 - e_k)`` (module
    docstring).

    Args:
        fan_in_exponents: ``a_k``, per layer in forward order: the fan-in scales as ``width^a_k``
            (1 when the layer's input channels grow with the width, 0 for a fixed input).
        weight_var_exponents: ``e_k``: ``Var(W_k) ~ fan_in^(-e_k)``, one for all layers or one per
            layer (:data:`KAIMING` = 1, :data:`STANDARD` = 0).
    """
    a = as_float64(fan_in_exponents).ravel()
    e = as_float64(weight_var_exponents).ravel()
    if e.size == 1:
        e = np.full_like(a, e[0])
    if e.size != a.size:
        raise ValueError(f"init_sq_mean_slopes needs one weight variance exponent or one per layer ({a.size}), "
                         f"got {e.size}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(e))):
        raise ValueError("init_sq_mean_slopes needs finite exponents")
    return np.cumsum(a * (1.0 - e)).tolist()


def filter_sum_slope(fan_ins: ArrayLike, kappa: float = 0.0, input_mean_sq: float = 1 / (2 * np.pi),
                     input_sq_mean: float = 0.5) -> float:
    """The slope in the fan-in of the expected filter-sum term ``mu^2 (1^T w)^2`` of the i.i.d. split
    over ``fan_ins``, for a He filter whose mean is shifted by ``kappa`` weight standard deviations
    (:func:`.amplification.shifted_filter_split`: ``2 mu^2 (1 + n kappa^2)``). 0 at ``kappa = 0``;
    tends to 1 as ``n kappa^2`` grows. The default input is ReLU(N(0, 1)). With ``n ~ width`` it is
    also the slope in the width."""
    n = as_float64(fan_ins).ravel()
    shift = shifted_filter_split(n, kappa, input_mean_sq, input_sq_mean).shift
    return loglog_slope(n, np.broadcast_to(shift, n.shape))
