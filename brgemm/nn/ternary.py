"""TernaryLinear: inference on ternary weights with residual levels (Kundu et al., "Ternary
Residual Networks", SysML 2018), 8-bit activations × 2-bit weights ("8a-2w"): the weight is a
:class:`brgemm.quant.Ternary` (brgemm.quant.ternarize), packed once into ternary panels
(csrc/include/brgemm/ternary.h: 2 bits per weight and level, one float32 α per block of a column
and level), and each forward is one call of the ternary product, which widens the codes in
registers to s8, sums u8 × s8 exactly in int32 per block and adds α·S in float32, then applies
the input's scale and zero point, the bias and ReLU. How many residual levels a forward uses
(``residuals``) can be lowered at any time without repacking: fewer levels read fewer bytes.
"""

import numpy as np

from .. import _core
from .._args import positive_int
from .._quantize import QParams, quantize
from ..quant.ternary import Ternary, ternarize


class TernaryLinear:
    """y = activation(input_scale · Σ_k (x_q[k] − input_zero_point) · W[k] + bias) with W the
    ternary weight's first ``residuals`` + 1 levels Σ α·Ŵ; x is uint8 (N, in_features) or
    float32 (quantized with input_scale and input_zero_point first); y float32 (N, out_features).
    ``activation`` is None or "relu"."""

    def __init__(self, ternary, bias=None, activation=None, *, input_scale=1.0, input_zero_point=0, residuals=None):
        if not isinstance(ternary, Ternary):
            raise TypeError(f"ternary must be a brgemm.quant.Ternary, got {type(ternary).__name__}")
        if len(ternary.shape) != 2:
            raise ValueError(f"ternary must hold a 2-D (out, in) weight, got shape {ternary.shape}")
        if ternary.block % 4 or not 4 <= ternary.block <= 256:
            raise ValueError(f"ternary.block must be a multiple of 4 in 4..256 for the ternary product, got {ternary.block}")
        if activation not in (None, "relu"):
            raise ValueError(f"activation must be None or 'relu', got {activation!r}")
        self.out_features, self.in_features = (int(s) for s in ternary.shape)
        self.ternary, self.activation = ternary, activation
        self.input_scale = float(input_scale)
        if not (np.isfinite(self.input_scale) and self.input_scale > 0):
            raise ValueError(f"input_scale must be positive and finite, got {input_scale!r}")
        if isinstance(input_zero_point, bool) or not isinstance(input_zero_point, (int, np.integer)) \
                or not 0 <= input_zero_point <= 255:
            raise ValueError(f"input_zero_point must be an integer in 0..255, got {input_zero_point!r}")
        self.input_zero_point = int(input_zero_point)
        if bias is not None:
            bias = np.ascontiguousarray(bias, np.float32)
            if bias.shape != (self.out_features,):
                raise ValueError(f"bias must have shape ({self.out_features},), got {bias.shape}")
        self.bias = bias
        self._k = ternary.codes.shape[2]  # the input width padded to whole blocks
        self._packed, self._alpha = _core.ternary_pack(np.ascontiguousarray(ternary.codes),
                                                       np.ascontiguousarray(ternary.alpha, np.float32), ternary.block)
        # Σ_k W[k] per output and number of levels used: the zero point's share, in float64 then float32.
        sums = (ternary.alpha.astype(np.float64)
                * ternary.codes.reshape(ternary.levels, self.out_features, -1, ternary.block).sum(axis=3))
        self._corr = np.ascontiguousarray(np.cumsum(sums.sum(axis=2), axis=0), np.float32)
        self.residuals = ternary.levels - 1 if residuals is None else residuals

    @classmethod
    def from_float(cls, linear, input_scale, input_zero_point=0, *, block=64, max_residuals=2, error_target=0.1,
                   residuals=None):
        """The ternary version of a float :class:`brgemm.nn.Linear` (bias and activation kept):
        its weight ternarized per block of ``block`` inputs with up to ``max_residuals`` residual
        levels (:func:`brgemm.quant.ternarize`)."""
        from .linear import Linear
        if not isinstance(linear, Linear):
            raise TypeError(f"linear must be a brgemm.nn.Linear, got {type(linear).__name__}")
        t = ternarize(np.asarray(linear.weight, np.float32), block=block, max_residuals=max_residuals,
                      error_target=error_target)
        return cls(t, linear.bias, linear.activation, input_scale=input_scale, input_zero_point=input_zero_point,
                   residuals=residuals)

    @property
    def residuals(self):
        """Residual levels each forward uses (0: the plain ternary weight); at most the stored ones."""
        return self._levels - 1

    @residuals.setter
    def residuals(self, r):
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 0:
            raise ValueError(f"residuals must be a non-negative integer, got {r!r}")
        self._levels = min(int(r) + 1, self.ternary.levels)

    def nbytes(self):
        """Bytes one forward reads of the weight (codes and α of the levels used)."""
        per = (self._packed.nbytes + self._alpha.nbytes) // self.ternary.levels
        return per * self._levels

    def forward(self, x, out=None):
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"x must be a (N, {self.in_features}) numpy array, got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        if x.dtype == np.float32:
            x = quantize(x, QParams(self.input_scale, self.input_zero_point))
        elif x.dtype != np.uint8:
            raise TypeError(f"x must have dtype uint8 or float32, got {x.dtype}")
        if self._k != self.in_features:  # ragged last block: its codes are 0, the padding's value is irrelevant
            x = np.pad(x, ((0, 0), (0, self._k - self.in_features)))
        elif x.strides[1] != 1:
            x = np.ascontiguousarray(x)
        shape = (x.shape[0], self.out_features)
        if out is not None and (not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != np.float32):
            raise ValueError(f"out must be a float32 array of shape {shape}")
        y = out if out is not None else np.empty(shape, np.float32)
        _core.ternary_gemm(x, self._packed, self._alpha, self.ternary.levels, self._levels, self.out_features,
                           self.ternary.block, self.input_scale, self.input_zero_point, self._corr[self._levels - 1],
                           self.bias, self.activation == "relu", y)
        return y

    __call__ = forward

    def __repr__(self):
        return (f"TernaryLinear({self.in_features}, {self.out_features}, block={self.ternary.block}, "
                f"levels={self.ternary.levels}, residuals={self.residuals}, activation={self.activation!r})")
