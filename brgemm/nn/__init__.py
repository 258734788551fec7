"""Layers on the BRGEMM (brgemm.nn) and their element-wise functions (brgemm.nn.functional)."""

from . import functional
from .linear import MLP, Linear

__all__ = ["functional", "Linear", "MLP"]
