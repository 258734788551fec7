"""Layers on the BRGEMM (brgemm.nn) and their element-wise functions (brgemm.nn.functional)."""

from .._quantize import quantize_per_channel
from . import functional
from .conv import Conv2d, QuantizedConv2d
from .linear import MLP, Linear, QuantizedLinear
from .rnn import GRU, LSTM, bucket_by_length
from .sequential import Flatten, Sequential
from .shared import SharedLinear
from .ternary import TernaryConv2d, TernaryLinear

__all__ = ["functional", "Conv2d", "QuantizedConv2d", "Linear", "QuantizedLinear", "TernaryLinear", "TernaryConv2d",
           "MLP", "LSTM", "GRU", "bucket_by_length", "Sequential", "Flatten", "quantize_per_channel", "SharedLinear"]
