"""Analysis of probe tables: uncertainty over seeds, verdicts, theory against measurement."""
from .association import auc_ci, auc_diff_ci, spearman_ci, spearman_diff_ci
from .compare import compare, compare_summary, layer_table
from .logscale import geometric_ci
from .paired import paired_ci, sign_string
from .planning import seeds_for_interval, seeds_for_mean, seeds_for_proportion, seeds_for_two_proportions
from .proportion import fisher_p, odds_ratio_ci, proportion_ci
from .ratios import transmission_ratios
from .uncertainty import Interval, mean_ci
from .verdict import VERDICTS, verdict

__all__ = ["compare", "compare_summary", "layer_table", "transmission_ratios", "Interval", "mean_ci", "verdict", "VERDICTS",
           "proportion_ci", "odds_ratio_ci", "fisher_p", "geometric_ci", "paired_ci", "sign_string",
           "seeds_for_mean", "seeds_for_proportion", "seeds_for_two_proportions", "seeds_for_interval",
           "auc_ci", "auc_diff_ci", "spearman_ci", "spearman_diff_ci"]
