"""varprobe: variance-transmission analysis for PyTorch.

Records per-layer activation variance, the shift of the average gradient of conv filters and weight
statistics during training, and compares BN, WN and PWS (Liu et al., AAAI 2021).

Every name loads on first use: ``Probe`` and ``spp`` need torch, ``load_run`` and ``load_runs``
pyarrow, ``plot`` matplotlib; so ``import varprobe`` costs nothing, ``varprobe.load_runs`` never
imports torch and ``import varprobe.plot`` neither torch nor pyarrow.
"""
from importlib import import_module

__version__ = "0.1.0"
__all__ = ["Probe", "spp", "register_layout", "load_run", "load_runs", "plot"]

_LAZY = {"Probe": ("varprobe.probe", "Probe"), "spp": ("varprobe.probe", "spp"),
         "register_layout": ("varprobe.layouts", "register_layout"),
         "load_run": ("varprobe.record", "load_run"), "load_runs": ("varprobe.record", "load_runs"),
         "plot": ("varprobe.plot", None)}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'varprobe' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = import_module(module) if attr is None else getattr(import_module(module), attr)
    globals()[name] = value
    return value
