"""Normalized conv layers of the paper: PWS, WS, WN, centered, in 1, 2 and 3 dimensions, plain and
transposed; the scheme factory; deploy folding."""
from .centered import (CenteredConv1d, CenteredConv2d, CenteredConv3d, CenteredConvNd, CenteredConvTranspose1d,
                       CenteredConvTranspose2d, CenteredConvTranspose3d)
from .data_init import init_alpha
from .deploy import reparameterize
from .factory import SCHEMES, ConvNorm, make_conv, scheme_conv_class
from .pws import (PWSConv1d, PWSConv2d, PWSConv3d, PWSConvNd, PWSConvTranspose1d, PWSConvTranspose2d,
                  PWSConvTranspose3d)
from .reparam import (ReparamConv1d, ReparamConv2d, ReparamConv3d, ReparamConvNd, ReparamConvTranspose1d,
                      ReparamConvTranspose2d, ReparamConvTranspose3d, raw_weight)
from .residual import ResidualBlock
from .wn import WNConv1d, WNConv2d, WNConv3d, WNConvNd, WNConvTranspose1d, WNConvTranspose2d, WNConvTranspose3d
from .ws import WSConv1d, WSConv2d, WSConv3d, WSConvNd, WSConvTranspose1d, WSConvTranspose2d, WSConvTranspose3d

__all__ = ["SCHEMES", "ConvNorm", "make_conv", "scheme_conv_class", "ReparamConvNd", "ReparamConv1d",
           "ReparamConv2d", "ReparamConv3d", "ReparamConvTranspose1d", "ReparamConvTranspose2d",
           "ReparamConvTranspose3d", "PWSConvNd", "PWSConv1d", "PWSConv2d", "PWSConv3d", "PWSConvTranspose1d",
           "PWSConvTranspose2d", "PWSConvTranspose3d", "WSConvNd", "WSConv1d", "WSConv2d", "WSConv3d",
           "WSConvTranspose1d", "WSConvTranspose2d", "WSConvTranspose3d", "WNConvNd", "WNConv1d", "WNConv2d",
           "WNConv3d", "WNConvTranspose1d", "WNConvTranspose2d", "WNConvTranspose3d", "CenteredConvNd",
           "CenteredConv1d", "CenteredConv2d", "CenteredConv3d", "CenteredConvTranspose1d",
           "CenteredConvTranspose2d", "CenteredConvTranspose3d", "ResidualBlock", "init_alpha",
           "reparameterize", "raw_weight"]
