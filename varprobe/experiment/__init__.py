"""Training experiments: a configured run into a run directory, grids of runs, the shared loop."""
from .config import RunConfig
from .runner import grid, run
from .train import TrainResult, accuracy, sgd, train

__all__ = ["RunConfig", "run", "grid", "sgd", "accuracy", "train", "TrainResult"]
