"""Statistics of the filters of a conv or linear weight: scale and "shift" (filter sums)."""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["FILTER_STATS", "filter_stats", "filter_moments"]

#: Order of the entries returned by :func:`filter_stats`.
FILTER_STATS = ("fan_var", "filter_mean_abs", "filter_sum_var", "filter_sum_sq", "sq_norm")


def filter_moments(w: Tensor) -> tuple[Tensor, Tensor]:
    """Per-filter mean m_i and biased variance v_i of a weight of shape (O, ...), each of shape (O,).

    Filter i is w[i], flattened to its n = w[0].numel() entries (C_in/groups * kh * kw for a conv,
    in_features for a linear layer). Computed in float64.
    """
    f = w.detach().flatten(1).to(torch.float64)
    m = f.mean(1)
    v = (f - m[:, None]).square().mean(1)
    return m, v


def filter_stats(w: Tensor) -> Tensor:
    """Filter statistics of a weight w of shape (O, ...), as a float64 tensor of shape (5,):

    - fan_var = mean_i (n * v_i): n times the biased variance of each filter, averaged over the O
      filters (2 for a He-initialised ReLU layer);
    - filter_mean_abs = mean_i |m_i|: how far filters are from zero mean;
    - filter_sum_var = Var_i(n * m_i), biased, over filters: the spread of the filter sums
      1^T w_i, the authors' own "shift" statistic (``__cal_shift`` of the official TF code);
    - filter_sum_sq = mean_i (n * m_i)^2: the squared filter sum, whose product with the squared
      input mean is the shift term of the output second moment, E[(w_i^T x)^2] =
      w_i^T Sigma_x w_i + mu^2 (1^T w_i)^2;
    - sq_norm = mean_i ||w_i||^2 = mean_i n (v_i + m_i^2): with the input variance sigma^2 it gives
      the zero-mean term sigma^2 ||w_i||^2 of that second moment for i.i.d. inputs.

    m_i and v_i are the mean and biased variance over filter i's n entries (:func:`filter_moments`).
    """
    m, v = filter_moments(w)
    n = w[0].numel()
    sums = m * n
    return torch.stack([(v * n).mean(), m.abs().mean(), (sums - sums.mean()).square().mean(),
                        sums.square().mean(), (n * (v + m * m)).mean()])
