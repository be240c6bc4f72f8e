"""Training experiments: a configured run into a run directory, grids of runs, the paper's claims."""
from .config import RunConfig
from .projection import project_filter_mean_
from .grid import grid
from .runner import load_model, run
from .train import accuracy, sgd

__all__ = ["RunConfig", "run", "grid", "load_model", "sgd", "accuracy", "project_filter_mean_"]
