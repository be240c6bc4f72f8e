"""BN and WN seen from variance transmission (paper-notes 1.5).

* BN after a conv centers the output per channel over the batch. Since ``y_i - E[y_i] = w_i^T (x - E[x])``,
  that is the same as feeding the filter centered inputs: the shift term ``(w_i^T E[x])^2`` of
  :func:`.transmission.second_moment_split_cov` becomes ``(w_i^T (E[x] - E[x]))^2 = 0`` and
  ``E[y_i^2] = w_i^T Sigma w_i``. Dividing by the batch std then makes BN a weight normalization of
  ``w_i`` under the metric ``Sigma``: ``BN(y_i) = w_i^T (x - E[x]) / sqrt(w_i^T Sigma w_i + eps)``.
* WN (``w = g v / ||v||``) fixes ``||w_i||`` but not the filter sum: the shift ratio
  ``rho_i = (sum_j w_ij)^2 / ||w_i||^2`` is invariant to that rescaling, and the shift term of i.i.d.
  inputs is ``mu^2 rho_i ||w_i||^2``, up to ``n`` times the zero-mean term ``sigma^2 ||w_i||^2``.

All functions accept numpy arrays, torch tensors or numbers, compute in float64 and return numpy float64
arrays (or floats). Nothing here imports the rest of varprobe.
"""
from __future__ import annotations

import numpy as np

from .transmission import (
    ArrayLike,
    FloatOrArray,
    Split,
    as_float64,
    flatten_filters,
    per_filter,
    second_moment_split_cov,
)

__all__ = ["bn_centered_split", "bn_effective_weight", "wn_shift_ratio"]


def bn_centered_split(weight: ArrayLike, input_cov: ArrayLike) -> Split:
    """Per-filter second moment of the conv output after BN-style centering: the shift term is gone.

        zero_mean_i = w_i^T Sigma w_i,   shift_i = (w_i^T (E[x] - E[x]))^2 = 0,   total_i = w_i^T Sigma w_i

    i.e. ``E[(y_i - E[y_i])^2] = Var[y_i]`` whatever the input mean, which BN's per-channel mean
    subtraction (over batch and positions) estimates. Compare with
    :func:`.transmission.second_moment_split_cov`, whose shift term ``(w_i^T E[x])^2`` this removes.

    Args:
        weight: ``(C_out, ...)`` flattened per filter to ``(C_out, n)``, or one filter ``(n,)``.
        input_cov: population covariance ``Sigma`` of the input patch, ``(n, n)``, or a scalar
            ``sigma^2`` meaning i.i.d. inputs (``Sigma = sigma^2 I``).

    Returns:
        :class:`Split` with ``shift`` identically 0 (``(C_out,)`` arrays, floats for a 1-D weight).
    """
    return second_moment_split_cov(weight, 0.0, input_cov)


def bn_effective_weight(weight: ArrayLike, input_cov: ArrayLike, eps: float = 0.0) -> np.ndarray:
    """BN as a weight normalization: ``w_i / sqrt(w_i^T Sigma w_i + eps)``.

    For a bias-free conv/linear layer followed by BN (affine ``gamma = 1``, ``beta = 0``, training-mode
    statistics with the biased variance, eps added to it), ``BN(y)_i = w_eff_i^T (x - E[x])`` with the
    returned ``w_eff``, where ``Sigma`` and ``E[x]`` are the batch (population, 1/N) moments of the
    input patches. With ``Sigma = sigma^2 I`` this is WN, ``w / ||w||``, times ``1 / sigma``, applied to
    centered inputs.

    Args:
        weight: ``(C_out, ...)`` or one filter ``(n,)``.
        input_cov: ``(n, n)`` population covariance, or a scalar variance (i.i.d. inputs).
        eps: BN's epsilon.

    Returns:
        float64 array of ``weight``'s shape.
    """
    w, _ = flatten_filters(weight)
    var = np.asarray(bn_centered_split(w, input_cov).total)
    return (w / np.sqrt(var + float(eps))[:, None]).reshape(as_float64(weight).shape)


def wn_shift_ratio(weight: ArrayLike) -> FloatOrArray:
    """Shift ratio ``rho_i = (sum_j w_ij)^2 / ||w_i||^2`` per filter, in ``[0, n]``.

    * Invariant to per-filter rescaling ``w_i -> g_i w_i`` (any ``g_i != 0``), hence to WN's
      ``g v / ||v||``: WN fixes ``||w||`` but leaves ``rho`` (and so the shift) as it is.
    * 0 exactly for centered filters (``sum_j w_ij = 0``, as in PWS or centered-only weights);
      ``n`` for constant filters (Cauchy-Schwarz bound).
    * ``E[rho] = 1`` exactly for i.i.d. weights symmetric about 0 (He normal ``N(0, 2/n)``, uniform...):
      ``rho = sum_j w_j^2 / ||w||^2 + sum_{j != k} w_j w_k / ||w||^2`` and flipping the sign of ``w_j``
      leaves ``||w||`` unchanged, so the cross terms have zero mean.
    * For i.i.d. inputs the shift term is ``mu^2 rho_i ||w_i||^2`` and the zero-mean term
      ``sigma^2 ||w_i||^2``, so ``shift / zero_mean = rho_i mu^2 / sigma^2``.

    Filters with ``||w_i|| = 0`` give nan.

    Args:
        weight: ``(C_out, ...)`` (e.g. the effective WN weight ``g v / ||v||``) or one filter ``(n,)``.

    Returns:
        ``(C_out,)`` float64 array, or a float for a 1-D weight.
    """
    w, single = flatten_filters(weight)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = w.sum(axis=1) ** 2 / np.einsum("ij,ij->i", w, w)
    return per_filter(rho, single)
