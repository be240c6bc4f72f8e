"""Training experiments on the package's models and data."""
from .train import TrainResult, accuracy, sgd, train

__all__ = ["sgd", "accuracy", "train", "TrainResult"]
