"""Amplification of the output second moment by a shift of the filter mean (paper-notes 1.3, "Proposition A").

Setting: one filter of ``n`` He-initialised weights ``w_j ~ N(0, 2/n)`` i.i.d., and i.i.d. inputs with
mean ``mu`` (``mu^2 = input_mean_sq``), second moment ``E[x^2] = input_sq_mean`` and variance
``sigma^2 = E[x^2] - mu^2``. Every weight is then shifted by the same ``delta = kappa * sqrt(2/n)``
(``kappa`` weight standard deviations). With ``E_x[y^2] = sigma^2 ||w||^2 + mu^2 (sum_j w_j)^2``
(see :mod:`.transmission`), the expectation over the weight draw is, using ``E||w||^2 = 2``,
``E sum_j w_j = 0``, ``E (sum_j w_j)^2 = 2`` and ``n delta^2 = 2 kappa^2``:

    before:  E_w E_x[y^2] = 2 sigma^2 + 2 mu^2 = 2 E[x^2]
    after:   E_w E_x[y^2] = sigma^2 E||w + delta 1||^2 + mu^2 E(sum_j w_j + n delta)^2
                          = sigma^2 (2 + 2 kappa^2) + mu^2 (2 + 2 n kappa^2)

so the exact expected amplification factor is

    A(n, kappa) = after / before = 1 + kappa^2 (sigma^2 + n mu^2) / E[x^2]
                                 = 1 + kappa^2 + kappa^2 (n - 1) mu^2 / E[x^2].

The shift term alone grows by ``2 kappa^2 mu^2 n`` (linear in the fan-in), the zero-mean term only by
``2 kappa^2 sigma^2`` (``E||w||^2`` grows by the relative amount ``kappa^2``, independent of ``n``).
Nothing here imports the rest of varprobe.
"""
from __future__ import annotations

import numpy as np

from .transmission import ArrayLike, FloatOrArray, Split, as_float64, scalar_or_array

__all__ = ["shift_amplification", "shifted_filter_split", "shift_weight_norm_change"]


def _checked(n: ArrayLike, kappa: ArrayLike, input_mean_sq: ArrayLike, input_sq_mean: ArrayLike):
    n, kappa = as_float64(n), as_float64(kappa)
    mu2, ex2 = as_float64(input_mean_sq), as_float64(input_sq_mean)
    if np.any(n < 1):
        raise ValueError("n (fan-in) must be >= 1")
    if np.any(ex2 <= 0):
        raise ValueError("input_sq_mean must be > 0")
    if np.any(mu2 < 0) or np.any(mu2 > ex2 * (1 + 1e-12)):
        raise ValueError("need 0 <= input_mean_sq <= input_sq_mean (mu^2 <= E[x^2])")
    return n, kappa, mu2, ex2


def shifted_filter_split(n: ArrayLike, kappa: ArrayLike, input_mean_sq: ArrayLike,
                         input_sq_mean: ArrayLike) -> Split:
    """Expected (over the He weight draw) split of ``E[y^2]`` after a filter-mean shift of ``kappa`` std.

        zero_mean = sigma^2 E||w + delta 1||^2       = 2 sigma^2 (1 + kappa^2)
        shift     = mu^2 E(sum_j w_j + n delta)^2     = 2 mu^2 (1 + n kappa^2)
        total     = 2 E[x^2] + 2 kappa^2 (sigma^2 + n mu^2)

    with ``w_j ~ N(0, 2/n)`` i.i.d., ``delta = kappa sqrt(2/n)``, ``sigma^2 = E[x^2] - mu^2``; ``kappa = 0``
    gives He's ``2 E[x^2]``. The result depends on the weight distribution only through
    ``E w_j = 0`` and ``Var w_j = 2/n`` (any such i.i.d. law gives the same expectations).

    Args:
        n: fan-in (weights per filter), ``>= 1``.
        kappa: shift in units of the He weight std ``sqrt(2/n)``.
        input_mean_sq: ``mu^2 = E[x]^2`` of the i.i.d. inputs.
        input_sq_mean: ``E[x^2]`` of the inputs.

    Returns:
        :class:`Split`, entries broadcast over the arguments (floats for scalar arguments).
    """
    n, kappa, mu2, ex2 = _checked(n, kappa, input_mean_sq, input_sq_mean)
    k2 = kappa * kappa
    zero_mean = 2.0 * (ex2 - mu2) * (1.0 + k2)
    shift = 2.0 * mu2 * (1.0 + n * k2)
    return Split(scalar_or_array(zero_mean), scalar_or_array(shift), scalar_or_array(zero_mean + shift))


def shift_amplification(n: ArrayLike, kappa: ArrayLike, input_mean_sq: ArrayLike, input_sq_mean: ArrayLike,
                        *, include_norm_growth: bool = True) -> FloatOrArray:
    """Expected factor by which ``E[y^2]`` grows when a He filter's mean shifts by ``kappa`` weight std.

    Exact, in expectation over the weight draw ``w_j ~ N(0, 2/n)`` and the i.i.d. inputs (ratio of
    expectations; derivation in the module docstring):

        A(n, kappa) = 1 + kappa^2 (sigma^2 + n mu^2) / E[x^2]
                    = 1 + kappa^2 + kappa^2 (n - 1) mu^2 / E[x^2]

    ``include_norm_growth=False`` drops the ``2 kappa^2 sigma^2`` growth of the zero-mean term and
    keeps only the growth ``2 kappa^2 mu^2 n`` of the shift term, ``A = 1 + kappa^2 n mu^2 / E[x^2]``:
    this is the approximation behind the paper-notes 1.3 table (it differs from the exact factor by
    ``kappa^2 sigma^2 / E[x^2]``, e.g. 0.0068 for kappa = 0.1 and ReLU(N(0,1)) inputs).

    For ReLU(N(0,1)) inputs (``mu^2 = 1/(2 pi)``, ``E[x^2] = 1/2``) and kappa = 0.1 the exact factor
    is 1.09, 1.47, 2.84, 4.67, 15.7 at n = 27, 147, 576, 1152, 4608 (8.4 for kappa = 0.2, n = 576);
    the shift-only approximation gives the table's 1.09, 1.47, 2.83, 4.67, 15.7 (and 8.3).

    Args:
        n: fan-in (weights per filter), ``>= 1``.
        kappa: shift in units of the He weight std ``sqrt(2/n)``.
        input_mean_sq: ``mu^2 = E[x]^2`` of the i.i.d. inputs.
        input_sq_mean: ``E[x^2]`` of the inputs (``> 0``).
        include_norm_growth: keep the (small) growth of the zero-mean term; True is the exact factor.

    Returns:
        The factor, broadcast over the arguments (float for scalar arguments).
    """
    n, kappa, mu2, ex2 = _checked(n, kappa, input_mean_sq, input_sq_mean)
    k2 = kappa * kappa
    growth = n * mu2 + ((ex2 - mu2) if include_norm_growth else 0.0)
    return scalar_or_array(1.0 + k2 * growth / ex2)


def shift_weight_norm_change(kappa: ArrayLike) -> FloatOrArray:
    """Expected relative change of ``||w||^2`` under the shift, ``E||w + delta 1||^2 / E||w||^2 - 1``.

    With ``E||w||^2 = n * 2/n = 2`` and ``E||w + delta 1||^2 = 2 + n delta^2 = 2 + 2 kappa^2``, the
    absolute change is ``2 kappa^2`` and the relative change is ``kappa^2``, independent of ``n``:
    1 % for kappa = 0.1 and 4 % for kappa = 0.2 (the notes' "2-8 %" is the absolute change
    ``2 kappa^2``, i.e. relative to ``||w||^2 = 1`` rather than to He's ``E||w||^2 = 2``).

    Args:
        kappa: shift in units of the He weight std ``sqrt(2/n)``.
    """
    kappa = as_float64(kappa)
    return scalar_or_array(kappa * kappa)
