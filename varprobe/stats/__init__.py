"""Pure tensor reductions behind the probes: channel moments and their exact merges, filter
statistics of a weight, the shift of the average gradient, and the split of a conv's output second
moment into its i.i.d., filter-sum and remaining parts. Imports nothing from varprobe."""
from .decomposition import layer_tap_overlap, second_moment_parts, tap_overlap
from .filters import FILTER_STATS, filter_moments, filter_stats
from .segments import (Segments, filter_stats_many, grad_shift_many, segment_correlation,
                       segment_sum)
from .grads import (GRAD_STATS, correlation, filter_grad_means, grad_shift_stats, sign_persistence,
                    within_rounding)
from .moments import (chan_merge, channel_count, channel_sum_norm, channel_max, channel_sums, count_nonfinite,
                      fused_channel_sums, merge_sums, moments_from_sums, sums_to_welford, welford_to_sums)

__all__ = ["channel_sums", "channel_sum_norm", "Segments", "segment_sum", "filter_stats_many",
           "grad_shift_many", "segment_correlation", "layer_tap_overlap", "channel_max", "fused_channel_sums", "channel_count", "count_nonfinite",
           "moments_from_sums", "merge_sums", "chan_merge", "sums_to_welford", "welford_to_sums",
           "FILTER_STATS", "filter_stats", "filter_moments", "GRAD_STATS", "grad_shift_stats",
           "filter_grad_means", "sign_persistence", "correlation", "within_rounding", "tap_overlap",
           "second_moment_parts"]
