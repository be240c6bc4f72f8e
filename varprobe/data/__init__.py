"""Image classification sets as preprocessed train/test tensors: digits, synthetic, CIFAR-10."""
from .cifar10 import cifar10
from .digits import digits
from .split import Split
from .synthetic import synthetic

__all__ = ["Split", "digits", "synthetic", "cifar10"]
