"""Normalized conv layers of the paper: PWS, WS, WN, centered; the scheme factory; deploy folding."""
from .centered import CenteredConv2d
from .data_init import init_alpha
from .deploy import reparameterize
from .factory import SCHEMES, ConvNorm, make_conv
from .pws import PWSConv2d
from .reparam import ReparamConv2d, raw_weight
from .residual import ResidualBlock
from .wn import WNConv2d
from .ws import WSConv2d

__all__ = ["SCHEMES", "ConvNorm", "make_conv", "ReparamConv2d", "PWSConv2d", "WSConv2d", "WNConv2d",
           "CenteredConv2d", "ResidualBlock", "init_alpha", "reparameterize", "raw_weight"]
