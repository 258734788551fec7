"""Layers on the BRGEMM (brgemm.nn) and their element-wise functions (brgemm.nn.functional)."""

from . import functional
from .conv import Conv2d, QuantizedConv2d, quantize_per_channel
from .linear import MLP, Linear

__all__ = ["functional", "Conv2d", "QuantizedConv2d", "Linear", "MLP", "quantize_per_channel"]
