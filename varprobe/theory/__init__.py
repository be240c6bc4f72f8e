"""Float64 theory of variance transmission, the filter-mean shift, BN/WN and PWS (paper-notes section 1).

Pure numpy math: accepts numpy arrays, torch tensors or numbers, returns float64 numpy arrays, floats
or small frozen dataclasses. Imports nothing else of varprobe.
"""
from .amplification import shift_amplification, shift_weight_norm_change, shifted_filter_split
from .normalization import bn_centered_split, bn_effective_weight, wn_shift_ratio
from .shift_ratio import NULL_SHIFT_RATIO
from .width import KAIMING, STANDARD, filter_sum_slope, init_sq_mean_slopes, loglog_slope
from .pws import (
    filter_variance,
    pws_fan_var,
    pws_grad_scale,
    pws_grad_scale_bound,
    pws_kernel,
    pws_raw_grad,
)
from .transmission import (
    ChannelMoments,
    ReluMoments,
    Split,
    he_transmission,
    he_weight_var,
    output_sq_mean,
    predict_layer_sq_mean,
    predict_output_sq_mean,
    channel_moments,
    relu_gaussian_moments,
    second_moment_split,
    second_moment_split_cov,
    split_from_norms,
)

__all__ = [
    # transmission
    "Split",
    "ReluMoments",
    "second_moment_split",
    "second_moment_split_cov",
    "split_from_norms",
    "ChannelMoments",
    "channel_moments",
    "output_sq_mean",
    "predict_output_sq_mean",
    "predict_layer_sq_mean",
    "he_weight_var",
    "he_transmission",
    "relu_gaussian_moments",
    # amplification
    "shift_amplification",
    "shifted_filter_split",
    "shift_weight_norm_change",
    # pws
    "filter_variance",
    "pws_kernel",
    "pws_fan_var",
    "pws_raw_grad",
    "pws_grad_scale",
    "pws_grad_scale_bound",
    # shift ratio
    "NULL_SHIFT_RATIO",
    # width
    "KAIMING",
    "STANDARD",
    "loglog_slope",
    "init_sq_mean_slopes",
    "filter_sum_slope",
    # normalization
    "bn_centered_split",
    "bn_effective_weight",
    "wn_shift_ratio",
]
