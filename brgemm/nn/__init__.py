"""Layers on the BRGEMM (brgemm.nn) and their element-wise functions (brgemm.nn.functional)."""

from . import functional

__all__ = ["functional"]
