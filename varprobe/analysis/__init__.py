"""Analysis of probe tables: uncertainty over seeds, verdicts, theory against measurement.

The association, planning and proportion functions load with their modules on first use (PEP
562; the ``TYPE_CHECKING`` block states the same imports for tools): they import scipy at the
top, which the plots, importing this package for ``compare`` and ``transmission_ratios``, do not
need."""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .compare import compare, compare_summary, layer_table
from .logscale import geometric_ci
from .paired import paired_ci, sign_string
from .ratios import transmission_ratios
from .slopes import WIDTH_BAND, compare_slopes, fit_slopes, width_verdict
from .uncertainty import Interval, mean_ci
from .verdict import VERDICTS, verdict

if TYPE_CHECKING:
    from .association import auc_ci, auc_diff_ci, spearman_ci, spearman_diff_ci
    from .planning import seeds_for_interval, seeds_for_mean, seeds_for_proportion, seeds_for_two_proportions
    from .proportion import fisher_p, odds_ratio_ci, proportion_ci

_LAZY = {
    **dict.fromkeys(("auc_ci", "auc_diff_ci", "spearman_ci", "spearman_diff_ci"), "association"),
    **dict.fromkeys(("seeds_for_interval", "seeds_for_mean", "seeds_for_proportion", "seeds_for_two_proportions"),
                    "planning"),
    **dict.fromkeys(("fisher_p", "odds_ratio_ci", "proportion_ci"), "proportion"),
}
__all__ = ["compare", "compare_summary", "layer_table", "transmission_ratios", "Interval", "mean_ci", "verdict",
           "VERDICTS", "geometric_ci", "paired_ci", "sign_string", "fit_slopes", "width_verdict", "compare_slopes",
           "WIDTH_BAND", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'varprobe.analysis' has no attribute {name!r}")
    value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value
