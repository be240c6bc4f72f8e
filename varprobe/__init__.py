"""varprobe: variance-transmission analysis for PyTorch.

Records per-layer activation variance, the shift of the average gradient of conv filters and weight
statistics during training, and compares BN, WN and PWS (Liu et al., AAAI 2021).

``Probe`` and ``spp`` (which need torch) and the ``plot`` module (which needs matplotlib) load on
first use, so ``import varprobe.plot`` or ``varprobe.load_runs`` never import torch.
"""
from importlib import import_module

from .record import load_run, load_runs

__version__ = "0.1.0"
__all__ = ["Probe", "spp", "load_run", "load_runs", "plot"]

_LAZY = {"Probe": ("varprobe.probe", "Probe"), "spp": ("varprobe.probe", "spp"), "plot": ("varprobe.plot", None)}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'varprobe' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = import_module(module) if attr is None else getattr(import_module(module), attr)
    globals()[name] = value
    return value
