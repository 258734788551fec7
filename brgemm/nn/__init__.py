"""Layers on the BRGEMM (brgemm.nn) and their element-wise functions (brgemm.nn.functional)."""

from . import functional
from .conv import Conv2d
from .linear import MLP, Linear

__all__ = ["functional", "Conv2d", "Linear", "MLP"]
