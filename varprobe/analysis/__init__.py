"""Analysis of probe tables: uncertainty over seeds, verdicts, theory against measurement."""
from .compare import compare, layer_table
from .ratios import transmission_ratios
from .uncertainty import Interval, mean_ci, slope_ci
from .verdict import VERDICTS, verdict

__all__ = ["compare", "layer_table", "transmission_ratios", "Interval", "mean_ci", "slope_ci", "verdict", "VERDICTS"]
