"""Models of the paper's experiments, built for every normalization scheme; conversion of user models."""
from .convert import convert
from .resnet import resnet_cifar
from .vgg import simple_cnn, vgg_cifar

__all__ = ["resnet_cifar", "vgg_cifar", "simple_cnn", "convert"]
