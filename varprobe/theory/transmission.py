"""He variance transmission with the filter-mean ("shift") term (paper-notes sections 1.2-1.3).

For one filter ``w`` (its ``n`` weights flattened) and an input patch ``x`` with mean vector ``m`` and
covariance ``Sigma``, the output ``y = w^T x`` (bias excluded) has the second moment

    E[y^2] = w^T Sigma w + (w^T m)^2                                   (zero-mean part + shift part)

and for i.i.d. inputs of common mean ``mu`` and variance ``sigma^2`` (``Sigma = sigma^2 I``, ``m = mu 1``)

    E[y^2] = sigma^2 ||w||^2 + (mu * sum_j w_j)^2.

All functions accept numpy arrays, torch tensors or Python numbers, compute in float64 and return numpy
float64 arrays (or floats). Weights are ``(C_out, ...)``: a conv weight ``(O, I/groups, kh, kw)`` or a
linear weight ``(O, I)`` is flattened per output filter to ``(C_out, n)``; a 1-D weight is one filter.
Nothing here imports the rest of varprobe.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

__all__ = [
    "ArrayLike",
    "ChannelMoments",
    "FloatOrArray",
    "ReluMoments",
    "Split",
    "as_float64",
    "channel_moments",
    "he_transmission",
    "he_weight_var",
    "output_sq_mean",
    "predict_layer_sq_mean",
    "predict_output_sq_mean",
    "relu_gaussian_moments",
    "second_moment_split",
    "second_moment_split_cov",
    "split_from_norms",
]

ArrayLike = Union[np.ndarray, float, int, Any]  # Any: a torch.Tensor (torch is never imported here)
FloatOrArray = Union[float, np.ndarray]


def as_float64(x: ArrayLike) -> np.ndarray:
    """Convert a numpy array, torch tensor (any device/dtype, grad or not) or number to float64 numpy."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        x = x.detach().cpu().double().numpy()
    return np.array(x, dtype=np.float64)  # always a copy: callers' arrays are never aliased


def scalar_or_array(x: np.ndarray) -> FloatOrArray:
    """A 0-d result as a Python float, anything else as a float64 array."""
    x = np.asarray(x, dtype=np.float64)
    return float(x) if x.ndim == 0 else x


def as_scalar(x: ArrayLike, name: str) -> float:
    """A scalar argument as a Python float; ``ValueError`` naming ``name`` if it has several values."""
    arr = as_float64(x)
    if arr.size != 1:
        raise ValueError(f"{name} must be a scalar, got shape {arr.shape}")
    return float(arr.reshape(()))


def flatten_filters(weight: ArrayLike) -> tuple[np.ndarray, bool]:
    """``(C_out, n)`` float64 view of a weight, and whether it was a single 1-D filter."""
    w = as_float64(weight)
    if w.ndim == 0:
        raise ValueError("weight must have at least one dimension (one filter of n weights)")
    if w.ndim == 1:
        return w[None, :], True
    return w.reshape(w.shape[0], -1), False


def per_filter(values: np.ndarray, single: bool) -> FloatOrArray:
    """Return a per-filter ``(C_out,)`` result, or a float for a single 1-D filter."""
    return float(values[0]) if single else values


@dataclass(frozen=True, eq=False)
class Split:
    """Per-filter split of the output second moment ``E[y^2] = zero_mean + shift``.

    Attributes:
        zero_mean: ``w^T Cov(x) w`` (``sigma^2 ||w||^2`` for i.i.d. inputs): what E[y^2] would be if the
            inputs had zero mean; He's term.
        shift: ``(w^T E[x])^2`` (``(mu sum_j w_j)^2`` for i.i.d. inputs): the filter-sum ("shift") term.
        total: ``zero_mean + shift``.

    Each is a float64 array of shape ``(C_out,)``, or a float for a single 1-D filter.
    """

    zero_mean: FloatOrArray
    shift: FloatOrArray
    total: FloatOrArray

    @property
    def shift_fraction(self) -> FloatOrArray:
        """``shift / total`` per filter (nan where total is 0)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return scalar_or_array(np.asarray(self.shift) / np.asarray(self.total))


def _per_filter_split(zero_mean: np.ndarray, shift: np.ndarray, single: bool) -> Split:
    total = zero_mean + shift
    return Split(per_filter(zero_mean, single), per_filter(shift, single), per_filter(total, single))


def second_moment_split(weight: ArrayLike, input_mean: ArrayLike, input_var: ArrayLike) -> Split:
    """Split of each filter's output second moment for i.i.d. inputs.

    Inputs ``x_j`` are i.i.d. with common mean ``mu`` and variance ``sigma^2`` (population moments,
    i.e. the biased, 1/N variance of a large sample). For filter ``i`` with flattened weights ``w_i``:

        zero_mean_i = sigma^2 * ||w_i||^2
        shift_i     = (mu * sum_j w_ij)^2
        total_i     = zero_mean_i + shift_i = E[(w_i^T x)^2]

    For a conv this is the second moment of the output *before the bias* at every position whose patch
    lies inside the input (zero padding is ignored), for any stride, dilation or groups.

    Args:
        weight: ``(C_out, ...)`` (conv ``(O, I/g, kh, kw)``, linear ``(O, I)``) or one filter ``(n,)``.
        input_mean: ``mu``, a scalar.
        input_var: ``sigma^2 >= 0``, a scalar.

    Returns:
        :class:`Split` of ``(C_out,)`` arrays (floats for a 1-D weight).
    """
    w, single = flatten_filters(weight)
    mu, var = as_scalar(input_mean, "input_mean"), as_scalar(input_var, "input_var")
    if var < 0:
        raise ValueError(f"input_var must be >= 0, got {var}")
    split = split_from_norms(np.einsum("ij,ij->i", w, w), w.sum(axis=1) ** 2, mu, var)
    return _per_filter_split(np.asarray(split.zero_mean), np.asarray(split.shift), single)


def split_from_norms(sq_norm: ArrayLike, filter_sum_sq: ArrayLike, input_mean: ArrayLike,
                     input_var: ArrayLike) -> Split:
    """The i.i.d. split from a filter's squared norm and squared filter sum (the one place the
    formula is written):

        zero_mean = sigma^2 * ||w||^2,    shift = mu^2 * (1^T w)^2,    total = zero_mean + shift.

    Averaged over filters it takes the averages: with ``sq_norm`` = mean_i ||w_i||^2 and
    ``filter_sum_sq`` = mean_i (1^T w_i)^2 (a probe's ``w.sq_norm``, ``w.filter_sum_sq`` or
    ``k.*``), it gives the layer means of the per-filter split. Every argument broadcasts (numbers,
    arrays, pandas Series); nan propagates.

    Args:
        sq_norm: ``||w||^2 >= 0``.
        filter_sum_sq: ``(1^T w)^2 >= 0``.
        input_mean: ``mu`` of the i.i.d. inputs.
        input_var: ``sigma^2 >= 0`` (population variance) of the i.i.d. inputs.

    Returns:
        :class:`Split` of float64 arrays of the broadcast shape (floats for scalar arguments).
    """
    mu, var = as_float64(input_mean), as_float64(input_var)
    if np.any(var < 0):
        raise ValueError(f"input_var must be >= 0, got {var.min() if var.ndim else float(var)}")
    zero_mean = var * as_float64(sq_norm)
    shift = mu * mu * as_float64(filter_sum_sq)
    return Split(scalar_or_array(zero_mean), scalar_or_array(shift), scalar_or_array(zero_mean + shift))


@dataclass(frozen=True, eq=False)
class ChannelMoments:
    """Per output channel ``i``: ``mean`` (E over batch and positions of y_i, bias included) and
    ``var`` (the biased variance of y_i over batch and positions), float64 ``(C_out,)``;
    ``sq_mean = var + mean^2`` is E[y_i^2]."""

    mean: np.ndarray
    var: np.ndarray

    @property
    def sq_mean(self) -> np.ndarray:
        return self.var + self.mean * self.mean


def channel_moments(weight: ArrayLike, input_mean: ArrayLike, input_var: ArrayLike, *,
                    overlap: ArrayLike | None = None, bias: ArrayLike | None = None,
                    groups: int = 1) -> ChannelMoments:
    """Mean and variance of each output channel of a conv (or linear) layer whose input entries
    are independent, those of input channel ``c`` with mean ``mu_c`` and variance ``var_c``.

    With K_i the kernel of filter i as ``(C_in/groups, T)`` over its T spatial taps, r_i[t] =
    sum_c mu_c K_i[c, t], and C the ``(T, T)`` tap overlap (C[t, u]: the fraction of output
    positions at which taps t and u both read the input rather than zero padding; d = diag(C);
    ``varprobe.stats.tap_overlap``), over output positions and an infinite batch:

        mean_i = b_i + d^T r_i
        var_i  = sum_{c,t} var_c d_t K_i[c, t]^2  +  r_i^T C r_i - (d^T r_i)^2

    The first part of ``var_i`` is the mean over positions of Var[y_i]; the second, >= 0, is the
    spread over positions of E[y_i], which zero padding makes (border positions read fewer
    inputs). Without padding (C all ones) and with one pooled ``mu``, ``sigma^2``, ``var_i`` is
    :func:`second_moment_split`'s ``zero_mean`` and ``(mean_i - b_i)^2`` its ``shift``. A probe's
    ``out.ch_var`` and ``out.ch_sq_mean`` estimate ``mean_i var_i`` and ``mean_i mean_i^2``; its
    ``dec.pred_ch_var`` and ``dec.pred_ch_sq_mean`` are these with the step's per-channel input
    moments. Correlated inputs (neighbouring pixels of images) make the measurement differ.

    Args:
        weight: ``(C_out, C_in/groups, *kernel_size)`` (a conv) or ``(C_out, C_in)`` (a linear
            layer: one tap).
        input_mean, input_var: ``(C_in,)`` per input channel, or scalars (the same for every
            channel); ``input_var >= 0``.
        overlap: ``(T, T)``, T = prod(kernel_size); None: no padding (all ones).
        bias: ``(C_out,)``; None: no bias.
        groups: the conv's groups; filter i reads input channels of group i // (C_out / groups).

    Returns:
        :class:`ChannelMoments` of ``(C_out,)`` float64 arrays.
    """
    w = as_float64(weight)
    if w.ndim < 2:
        raise ValueError(f"weight must be (C_out, C_in/groups, ...) or (C_out, C_in), got shape {w.shape}")
    o, cin = w.shape[0], w.shape[1]
    if groups < 1 or o % groups:
        raise ValueError(f"groups must be >= 1 and divide C_out = {o}, got {groups}")
    k = w.reshape(o, cin, -1)
    t = k.shape[2]
    mu = np.broadcast_to(as_float64(input_mean), (cin * groups,))
    var = np.broadcast_to(as_float64(input_var), (cin * groups,))
    if np.any(var < 0):
        raise ValueError(f"input_var must be >= 0, got min {var.min()}")
    c = np.ones((t, t)) if overlap is None else as_float64(overlap)
    if c.shape != (t, t):
        raise ValueError(f"overlap must be ({t}, {t}) for a kernel of {t} taps, got shape {c.shape}")
    b = np.zeros(o) if bias is None else np.broadcast_to(as_float64(bias), (o,))
    group = np.arange(o) // (o // groups)
    channels = group[:, None] * cin + np.arange(cin)[None, :]  # (C_out, C_in/groups)
    mu_f, var_f = mu[channels], var[channels]
    d = np.diag(c)
    r = np.einsum("ic,ict->it", mu_f, k)
    dr = r @ d
    spread = np.einsum("it,tu,iu->i", r, c, r) - dr * dr
    zero_mean = np.einsum("ic,ict,t->i", var_f, k * k, d)
    return ChannelMoments(mean=b + dr, var=zero_mean + np.maximum(spread, 0.0))


def second_moment_split_cov(weight: ArrayLike, input_mean: ArrayLike, input_cov: ArrayLike) -> Split:
    """Split of each filter's output second moment for inputs with a general mean and covariance.

        zero_mean_i = w_i^T Sigma w_i,    shift_i = (w_i^T m)^2,    total_i = E[(w_i^T x)^2]

    Args:
        weight: ``(C_out, ...)`` flattened per filter to ``(C_out, n)``, or one filter ``(n,)``.
        input_mean: ``m``, shape ``(n,)`` (in the flattened filter order) or a scalar (``m = mu 1``).
        input_cov: ``Sigma``, shape ``(n, n)`` (population covariance), or a scalar ``sigma^2``
            meaning ``sigma^2 I``.

    Returns:
        :class:`Split` of ``(C_out,)`` arrays (floats for a 1-D weight).
    """
    w, single = flatten_filters(weight)
    n = w.shape[1]
    m = np.broadcast_to(as_float64(input_mean), (n,))
    cov = as_float64(input_cov)
    if cov.ndim == 0:
        zero_mean = float(cov) * np.einsum("ij,ij->i", w, w)
    elif cov.shape == (n, n):
        zero_mean = np.einsum("ij,jk,ik->i", w, cov, w)
    else:
        raise ValueError(f"input_cov must be a scalar or ({n}, {n}), got shape {cov.shape}")
    shift = (w @ m) ** 2
    return _per_filter_split(zero_mean, shift, single)


def output_sq_mean(weight: ArrayLike, input_mean: ArrayLike, input_cov: ArrayLike) -> FloatOrArray:
    """``E[(w_i^T x)^2] = w_i^T Sigma w_i + (w_i^T m)^2`` per filter; see :func:`second_moment_split_cov`.

    Returns:
        ``(C_out,)`` float64 array, or a float for a 1-D weight.
    """
    return second_moment_split_cov(weight, input_mean, input_cov).total


def predict_output_sq_mean(weight: ArrayLike, input_mean: ArrayLike, input_var: ArrayLike) -> FloatOrArray:
    """Per-filter ``E[y_i^2] = sigma^2 ||w_i||^2 + (mu sum_j w_ij)^2`` for i.i.d. inputs.

    This is what a probe's per-channel ``out.sq_mean`` (bias excluded, border positions affected by
    zero padding excluded) estimates when the layer input is i.i.d. with mean ``mu`` and variance
    ``sigma^2``. See :func:`second_moment_split`.

    Returns:
        ``(C_out,)`` float64 array, or a float for a 1-D weight.
    """
    return second_moment_split(weight, input_mean, input_var).total


def predict_layer_sq_mean(weight: ArrayLike, input_mean: ArrayLike, input_var: ArrayLike) -> float:
    """Layer-average output second moment ``(1/C_out) sum_i E[y_i^2]`` for i.i.d. inputs.

    The mean over filters of :func:`predict_output_sq_mean`; it is what the mean of ``y^2`` over all
    channels, positions and samples of the (bias-free, padding-free) conv output estimates.
    """
    return float(np.mean(predict_output_sq_mean(weight, input_mean, input_var)))


def he_weight_var(fan: ArrayLike) -> FloatOrArray:
    """He et al.'s weight variance ``2 / fan`` for ReLU networks."""
    fan = as_float64(fan)
    if np.any(fan <= 0):
        raise ValueError("fan must be > 0")
    return scalar_or_array(2.0 / fan)


def he_transmission(fan: ArrayLike, weight_var: ArrayLike, input_sq_mean: ArrayLike = 1.0) -> FloatOrArray:
    """He et al.'s transmission ``Var[y] = fan * Var[w] * E[x^2]``.

    Holds in expectation over i.i.d. zero-mean weights (independent of the inputs), where ``fan`` is
    the number of weights per filter (fan-in) and ``E[x^2]`` the second moment (not the variance) of
    the layer input. With ``Var[w] = 2 / fan`` it gives ``2 E[x^2]``; a ReLU of the (symmetric) output
    then has ``E[ReLU(y)^2] = Var[y] / 2 = E[x^2]``, He's fixed point. Broadcasts over its arguments.

    Args:
        fan: fan-in ``n`` (``C_in/groups * kh * kw`` or linear ``in_features``).
        weight_var: ``Var[w]`` of the zero-mean weight distribution.
        input_sq_mean: ``E[x^2]`` of the inputs; the default 1 returns the gain ``fan * Var[w]``.

    Returns:
        ``E_w[Var[y]] = E_w[E[y^2]]`` (zero-mean weights make ``E[y] = 0``); float or array.
    """
    return scalar_or_array(as_float64(fan) * as_float64(weight_var) * as_float64(input_sq_mean))


@dataclass(frozen=True)
class ReluMoments:
    """Moments of ``ReLU(z)``, ``z ~ N(0, sigma^2)``: ``mean``, ``sq_mean = E[x^2]`` and ``var``."""

    mean: float
    sq_mean: float
    var: float


def relu_gaussian_moments(sigma: float = 1.0) -> ReluMoments:
    """Moments of ``x = ReLU(z)``, ``z ~ N(0, sigma^2)``.

        mean    = sigma / sqrt(2 pi)                (mean^2 = sigma^2 / (2 pi) ~= 0.159 sigma^2)
        sq_mean = sigma^2 / 2
        var     = sigma^2 (1/2 - 1/(2 pi))         (population variance)

    Args:
        sigma: standard deviation of the Gaussian pre-activation, ``>= 0``.
    """
    sigma = as_scalar(sigma, "sigma")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    mean = sigma / math.sqrt(2.0 * math.pi)
    sq_mean = 0.5 * sigma * sigma
    return ReluMoments(mean=mean, sq_mean=sq_mean, var=sigma * sigma * (0.5 - 0.5 / math.pi))
