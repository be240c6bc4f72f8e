"""Training experiments: a configured run into a run directory, grids of runs, the paper's claims.

Every name loads on first use (PEP 562), so that ``varprobe.experiment.config`` and ``.stop``, which
the command line needs to build its parser, import without torch. ``grid`` is the function, as it
always was, even after the submodule ``varprobe.experiment.grid`` was imported; ``sweep`` likewise.
"""
from __future__ import annotations

import sys
import types
from typing import Any

from .._lazy import lazy_names

__all__ = ["RunConfig", "run", "grid", "sweep", "load_model", "sgd", "accuracy", "project_filter_mean_"]

#: public name -> the submodule that defines it.
_LAZY = {"RunConfig": "config", "run": "runner", "grid": "grid", "sweep": "sweep", "load_model": "runner", "sgd": "train",
         "accuracy": "train", "project_filter_mean_": "projection"}


__getattr__, __dir__ = lazy_names(__name__, _LAZY, __all__)


class _Package(types.ModuleType):
    """This package: importing its submodule ``grid`` (``sweep``) does not replace the function."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}":
            return  # the import system binding the submodule; it stays in sys.modules
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
