"""Deprecated: import from :mod:`varprobe.claims.attribution`. Importing this module warns
(DeprecationWarning)."""
import warnings

from ..claims.attribution import COMPARISONS, CONTROLS, Comparison, causes_report

__all__ = ["CONTROLS", "Comparison", "COMPARISONS", "causes_report"]

warnings.warn("varprobe.experiment.attribution is deprecated: import from varprobe.claims.attribution",
              DeprecationWarning, stacklevel=2)
