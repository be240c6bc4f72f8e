"""Figures from probe tables: signal propagation, heat maps, curves, the gradient shift,
transmission ratios, theory checks and collapse maps.

Every function takes a DataFrame in the long format of ``Probe.frame()`` or
``varprobe.load_runs`` (one run or many) and returns a matplotlib ``Figure``; none touches a
model or a probe, and ``import varprobe.plot`` does not import torch. Runs that differ only by
``seed`` are averaged, with the Student-t 95% interval of the mean as a band (``lines.mean_band``,
the claims report's interval for a mean); colour is
the scheme, dashes other settings that vary (e.g. learning rate). Figures live on an Agg canvas
outside pyplot: return one from a notebook cell to show it, or ``fig.savefig("f.png")``. Nothing
here loads a run or writes a file (``varprobe plot`` does: ``varprobe.cli.figure``), and
``import varprobe.plot`` imports neither torch nor pyarrow.

=======================  ====================================================================
``spp``                  channel variance and squared channel mean over depth, per step
``heatmap``              one quantity, depth x step
``curves``               one quantity over steps, per layer
``shift``                ``gw.shift_ratio`` and ``w.filter_sum_var`` over training, by scheme
``transmission``         forward Var(out)/Var(in) and backward gradient ratio per layer
``theory_vs_measured``   predicted vs measured, y = x and an error band
``collapse_map``         learning rate x scheme: collapsed or finished, final loss
``decomposition``        shares of conv output variance: i.i.d., filter-sum (shift) and rest
``result_map``           one number per run (e.g. train accuracy), settings x learning rates
``coord_check``          a width sweep: each layer's statistic against the width, per step
``per_run``              one number per run against a setting (e.g. batch size), per scheme
``predictors``           each predictor's early value per run against the outcome it should rank
``draw``                 the figure of a ``varprobe plot --kind`` for a table, with its selections
=======================  ====================================================================
"""
from .collapse import collapse_map
from .coord_check import coord_check
from .curves import curves
from .decomposition import decomposition, decomposition_table
from .heatmap import heatmap
from .kinds import KINDS, SELECTIONS, draw
from .predictors import predictors
from .result_map import result_map
from .results import per_run
from .shift import shift
from .spp import spp
from .theory import theory_vs_measured
from .transmission import transmission

__all__ = ["spp", "heatmap", "curves", "shift", "transmission", "theory_vs_measured", "collapse_map",
           "decomposition", "decomposition_table", "result_map", "per_run", "predictors", "coord_check", "draw",
           "KINDS", "SELECTIONS"]
