"""Moved to :mod:`varprobe.claims.attribution`; kept so that existing imports work."""
from ..claims.attribution import COMPARISONS, CONTROLS, Comparison, causes_report

__all__ = ["CONTROLS", "Comparison", "COMPARISONS", "causes_report"]
