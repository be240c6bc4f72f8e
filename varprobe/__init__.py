"""varprobe: variance-transmission analysis for PyTorch.

Records per-layer activation variance, the shift of the average gradient of conv filters and weight
statistics during training, and compares BN, WN and PWS (Liu et al., AAAI 2021).
"""
from .record import load_run, load_runs

__version__ = "0.1.0"
__all__ = ["load_run", "load_runs"]
