"""Pure tensor reductions behind the probes: channel sums and moments, filter
statistics of a weight, the shift of the average gradient, and the split of a conv's output second
moment into its i.i.d., filter-sum and remaining parts. Imports nothing from varprobe."""
from .decomposition import layer_tap_overlap, second_moment_parts, tap_overlap
from .filters import FILTER_STATS, filter_moments, filter_stats
from .segments import (Segments, filter_stats_many, filter_sums, run_sums, grad_shift_many, segment_correlation,
                       segment_sum)
from .grads import (GRAD_STATS, correlation, grad_shift_stats, rounding_tolerance, sign_persistence,
                    within_rounding)
from .moments import (channel_count, channel_sum_norm, channel_max, channel_sums, count_nonfinite,
                      fused_channel_sums, moments_from_sums)

__all__ = ["channel_sums", "channel_sum_norm", "Segments", "segment_sum", "run_sums", "filter_sums", "filter_stats_many",
           "grad_shift_many", "segment_correlation", "layer_tap_overlap", "channel_max", "fused_channel_sums", "channel_count", "count_nonfinite",
           "moments_from_sums",
           "FILTER_STATS", "filter_stats", "filter_moments", "GRAD_STATS", "grad_shift_stats",
           "sign_persistence", "correlation", "within_rounding", "rounding_tolerance", "tap_overlap",
           "second_moment_parts"]
