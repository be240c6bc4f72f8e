"""Models of the paper's experiments, built for every normalization scheme; conversion of user models."""
from .convert import convert
from .resnet import resnet_cifar
from .resnet34 import resnet34_cifar
from .vgg import simple_cnn, vgg_cifar

__all__ = ["resnet_cifar", "resnet34_cifar", "vgg_cifar", "simple_cnn", "convert"]
