"""TernaryLinear: inference on ternary weights with residual levels (Kundu et al., "Ternary
Residual Networks", SysML 2018), 8-bit activations × 2-bit weights ("8a-2w"): the weight is a
:class:`brgemm.quant.Ternary` (brgemm.quant.ternarize), packed once into ternary panels
(csrc/include/brgemm/ternary.h: 2 bits per weight and level, one float32 α per block of a column
and level), and each forward is one call of the ternary product, which widens the codes in
registers to s8, sums u8 × s8 exactly in int32 per block and adds α·S in float32, then applies
the input's scale and zero point, the bias and ReLU. How many residual levels a forward uses
(``residuals``) can be lowered at any time without repacking: fewer levels read fewer bytes.

:class:`TernaryConv2d` is the same product on a convolution: the weight (K, C, R, S) is ternarized
over each output channel's R·S·C inputs in tap-major, channel-minor order (a block is a run of
channels of one tap, or of consecutive taps, as the blocked layouts hold them), the input's
windows are gathered into rows of that order (from a channels-last copy of the input, a
workspace kept per input shape with the padding filled with the zero point: runs of C
contiguous bytes) and each forward is one call of the ternary product on them. Both layers are what
``QuantizedLinear.from_float`` / ``QuantizedConv2d.from_float`` return with ``weights="ternary"``
and what ``brgemm.quant.quantize_model(..., weights="ternary")`` builds; like the int8 layers they
can requantize their output to uint8 (``output_scale``), so a chain passes uint8 arrays.
"""

import numpy as np

from .. import _core
from .._args import positive_int
from .._quantize import QParams, quantize
from ..quant.ternary import Ternary, ternarize


def _output_arg(output_scale, output_zero_point, out_dtype):
    """(output QParams or None, out_dtype) as the int8 layers take them (out_dtype "uint8" by
    default when output_scale is given)."""
    if out_dtype is None:
        out_dtype = "uint8" if output_scale is not None else "float32"
    if out_dtype not in ("uint8", "float32"):
        raise ValueError(f"out_dtype must be 'uint8' or 'float32', got {out_dtype!r}")
    if output_scale is None:
        if out_dtype == "uint8":
            raise ValueError("out_dtype='uint8' needs output_scale")
        return None, out_dtype
    try:
        scale = float(output_scale)
    except (TypeError, ValueError):
        raise TypeError(f"output_scale must be a number, got {type(output_scale).__name__}") from None
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"output_scale must be positive and finite, got {output_scale!r}")
    if isinstance(output_zero_point, bool) or not isinstance(output_zero_point, (int, np.integer)) \
            or not 0 <= output_zero_point <= 255:
        raise ValueError(f"output_zero_point must be an integer in 0..255, got {output_zero_point!r}")
    return QParams(scale, int(output_zero_point)), out_dtype


class TernaryLinear:
    """y = activation(input_scale · Σ_k (x_q[k] − input_zero_point) · W[k] + bias) with W the
    ternary weight's first ``residuals`` + 1 levels Σ α·Ŵ; x is uint8 (N, in_features) or
    float32 (quantized with input_scale and input_zero_point first); y float32 (N, out_features).
    ``activation`` is None or "relu". With ``output_scale`` (and ``out_dtype`` "uint8", its
    default then) y is requantized to uint8: clip(round(y / output_scale) + output_zero_point)."""

    def __init__(self, ternary, bias=None, activation=None, *, input_scale=1.0, input_zero_point=0, residuals=None,
                 output_scale=None, output_zero_point=0, out_dtype=None):
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
        try:
            self.input_scale = float(input_scale)
        except (TypeError, ValueError):
            raise TypeError(f"input_scale must be a number, got {type(input_scale).__name__}") from None
        if not (np.isfinite(self.input_scale) and self.input_scale > 0):
            raise ValueError(f"input_scale must be positive and finite, got {input_scale!r}")
        if isinstance(input_zero_point, bool) or not isinstance(input_zero_point, (int, np.integer)) \
                or not 0 <= input_zero_point <= 255:
            raise ValueError(f"input_zero_point must be an integer in 0..255, got {input_zero_point!r}")
        self.input_zero_point = int(input_zero_point)
        self._output_qp, self.out_dtype = _output_arg(output_scale, output_zero_point, out_dtype)
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
    def from_float(cls, linear, input_scale, input_zero_point=0, output_scale=None, output_zero_point=0,
                   out_dtype=None, *, block=64, max_residuals=2, error_target=0.1, residuals=None):
        """The ternary version of a float :class:`brgemm.nn.Linear` (bias and activation kept):
        its weight ternarized per block of ``block`` inputs with up to ``max_residuals`` residual
        levels (:func:`brgemm.quant.ternarize`). ``QuantizedLinear.from_float(...,
        weights="ternary")`` is this."""
        from .linear import Linear
        if not isinstance(linear, Linear):
            raise TypeError(f"linear must be a brgemm.nn.Linear, got {type(linear).__name__}")
        t = ternarize(np.asarray(linear.weight, np.float32), block=block, max_residuals=max_residuals,
                      error_target=error_target)
        return cls(t, linear.bias, linear.activation, input_scale=input_scale, input_zero_point=input_zero_point,
                   residuals=residuals, output_scale=output_scale, output_zero_point=output_zero_point,
                   out_dtype=out_dtype)

    @property
    def output_scale(self):
        return None if self._output_qp is None else float(self._output_qp.scale)

    @property
    def output_zero_point(self):
        return 0 if self._output_qp is None else int(self._output_qp.zero_point)

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

    def _u8(self, x):
        """x as uint8: float32 quantized with input_scale and input_zero_point."""
        if x.dtype == np.float32:
            return quantize(x, QParams(self.input_scale, self.input_zero_point))
        if x.dtype != np.uint8:
            raise TypeError(f"x must have dtype uint8 or float32, got {x.dtype}")
        return x

    def _product(self, x, y):
        """y (M, out) float32 = the product on x (M, ≥ in_features) uint8, rows of unit stride."""
        _core.ternary_gemm(x, self._packed, self._alpha, self.ternary.levels, self._levels, self.out_features,
                           self.ternary.block, self.input_scale, self.input_zero_point, self._corr[self._levels - 1],
                           self.bias, self.activation == "relu", y)

    def _requantized(self, y, out):
        """y, or y requantized to uint8 (into out when given) for out_dtype "uint8"."""
        if self.out_dtype == "float32":
            return y
        q = quantize(y, self._output_qp)
        if out is None:
            return q
        out[...] = q
        return out

    def forward(self, x, out=None):
        """y (N, out_features) of out_dtype for x (N, in_features) uint8 or float32; ``out`` may give it."""
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"x must be a (N, {self.in_features}) numpy array, got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        x = self._u8(x)
        if self._k != self.in_features:  # ragged last block: its codes are 0, the padding's value is irrelevant
            x = np.pad(x, ((0, 0), (0, self._k - self.in_features)))
        elif x.strides[1] != 1:
            x = np.ascontiguousarray(x)
        shape = (x.shape[0], self.out_features)
        if out is not None and (not isinstance(out, np.ndarray) or out.shape != shape
                                or out.dtype != np.dtype(self.out_dtype)):
            raise ValueError(f"out must be a {self.out_dtype} array of shape {shape}")
        y = out if out is not None and self.out_dtype == "float32" else np.empty(shape, np.float32)
        self._product(x, y)
        return self._requantized(y, out)

    __call__ = forward

    def __repr__(self):
        return (f"TernaryLinear({self.in_features}, {self.out_features}, block={self.ternary.block}, "
                f"levels={self.ternary.levels}, residuals={self.residuals}, activation={self.activation!r}, "
                f"out_dtype={self.out_dtype!r})")


class TernaryConv2d:
    """The ternary product on a 2-D convolution (groups 1): y = activation(input_scale ·
    conv2d(x_q − input_zero_point, W) + bias) with W the ternary weight's first ``residuals`` + 1
    levels. ``ternary`` holds the weight channels last, (K, R, S, C): it is
    ``ternarize(weight.transpose(0, 2, 3, 1), ...)`` of a PyTorch-order weight (K, C, R, S), so its
    blocks run over each tap's channels (:meth:`from_float` does this). x uint8 or float32
    (N, C, H, W) (float32 is quantized first;
    padding is a real zero: x_q = input_zero_point); y (N, K, OH, OW) float32, or uint8 with
    ``output_scale`` as :class:`TernaryLinear`. Stride, padding and dilation as
    :class:`brgemm.nn.Conv2d`. ``residuals`` can be lowered at any time."""

    def __init__(self, ternary, bias=None, activation=None, *, stride=1, padding=0, dilation=1, input_scale=1.0,
                 input_zero_point=0, residuals=None, output_scale=None, output_zero_point=0, out_dtype=None):
        from .._runners.conv import ConvGeometry
        if not isinstance(ternary, Ternary):
            raise TypeError(f"ternary must be a brgemm.quant.Ternary, got {type(ternary).__name__}")
        if len(ternary.shape) != 4:
            raise ValueError(f"ternary must hold a 4-D channels-last (K, R, S, C) weight, got shape {ternary.shape}")
        k, r, s, c = ternary.shape
        self.geometry = ConvGeometry.of(c, k, (r, s), stride, padding, dilation)
        (self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
         self.dilation, _) = self.geometry
        self.ternary = ternary
        # The product itself: the same codes and α seen as a (K, R·S·C) weight.
        self._gemm = TernaryLinear(Ternary(ternary.codes, ternary.alpha, (k, r * s * c), ternary.block), bias,
                                   activation, input_scale=input_scale, input_zero_point=input_zero_point,
                                   residuals=residuals, output_scale=output_scale,
                                   output_zero_point=output_zero_point, out_dtype=out_dtype)
        self._plan = None  # (x shape and zero point, padded input, window rows, product) of the last input shape

    @classmethod
    def from_float(cls, conv, input_scale, input_zero_point=0, output_scale=None, output_zero_point=0,
                   out_dtype=None, *, block=64, max_residuals=2, error_target=0.1, residuals=None):
        """The ternary version of a float :class:`brgemm.nn.Conv2d` (groups 1; bias and
        activation kept): each output channel's weights ternarized per block of ``block`` in
        (R, S, C) order (:func:`brgemm.quant.ternarize` of the channels-last weight). ``QuantizedConv2d.from_float(..., weights="ternary")``
        is this."""
        from .conv import Conv2d
        if not isinstance(conv, Conv2d):
            raise TypeError(f"conv must be a brgemm.nn.Conv2d, got {type(conv).__name__}")
        if conv.groups != 1:
            raise ValueError(f"conv.groups must be 1 for a ternary convolution, got {conv.groups}")
        t = ternarize(np.asarray(conv.weight, np.float32).transpose(0, 2, 3, 1), block=block,
                      max_residuals=max_residuals, error_target=error_target)
        return cls(t, conv.bias, conv.activation, stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                   input_scale=input_scale, input_zero_point=input_zero_point, residuals=residuals,
                   output_scale=output_scale, output_zero_point=output_zero_point, out_dtype=out_dtype)

    # The quantization and the residual levels are the product's.
    @property
    def residuals(self):
        """Residual levels each forward uses (0: the plain ternary weight); at most the stored ones."""
        return self._gemm.residuals

    @residuals.setter
    def residuals(self, r):
        self._gemm.residuals = r

    @property
    def input_scale(self):
        return self._gemm.input_scale

    @input_scale.setter
    def input_scale(self, v):
        self._gemm.input_scale = v

    @property
    def input_zero_point(self):
        return self._gemm.input_zero_point

    @property
    def activation(self):
        return self._gemm.activation

    @property
    def bias(self):
        return self._gemm.bias

    @property
    def out_dtype(self):
        return self._gemm.out_dtype

    @property
    def output_scale(self):
        return self._gemm.output_scale

    @property
    def output_zero_point(self):
        return self._gemm.output_zero_point

    def nbytes(self):
        """Bytes one forward reads of the weight (codes and α of the levels used)."""
        return self._gemm.nbytes()

    def output_size(self, h, w):
        """(OH, OW) for an input of h × w."""
        return self.geometry.out_size(h, w)

    def _windows(self, x):
        """The rows of the product: (N·OH·OW, R·S·C padded to whole blocks) uint8, each the
        window of one output pixel in (r, s, c) order, written into the plan's workspace."""
        n, c, h, w = x.shape
        oh, ow = self.output_size(h, w)
        (pt, pb, pl, pr), (sh, sw), (dh, dw), (r, s) = self.padding, self.stride, self.dilation, self.kernel_size
        if self._plan is None or self._plan[0] != (x.shape, self._gemm.input_zero_point):
            padded = np.full((n, h + pt + pb, w + pl + pr, c), self._gemm.input_zero_point, np.uint8)
            rows = np.zeros((n, oh, ow, self._gemm._k), np.uint8)  # past R·S·C: codes 0, any value
            z = np.empty((n * oh * ow, self.out_channels), np.float32)  # the product's rows
            self._plan = ((x.shape, self._gemm.input_zero_point), padded, rows, z)
        _, padded, rows, _ = self._plan
        padded[:, pt:pt + h, pl:pl + w, :] = x.transpose(0, 2, 3, 1)  # channels last: C contiguous
        win = np.lib.stride_tricks.sliding_window_view(padded, (dh * (r - 1) + 1, dw * (s - 1) + 1), axis=(1, 2))
        win = win[:, ::sh, ::sw][:, :oh, :ow][..., ::dh, ::dw]          # (N, OH, OW, C, R, S)
        dst = rows[..., :r * s * c].reshape(n, oh, ow, r, s, c)        # a view: rows are contiguous
        np.copyto(dst, win.transpose(0, 1, 2, 4, 5, 3))
        return rows.reshape(n * oh * ow, -1)

    def forward(self, x, out=None):
        """y (N, K, OH, OW) of out_dtype for x (N, C, H, W) uint8 or float32; ``out`` may give it."""
        if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[1] != self.in_channels or min(x.shape) < 1:
            raise ValueError(f"x must be a non-empty (N, {self.in_channels}, H, W) numpy array, got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        x = self._gemm._u8(x)
        n = x.shape[0]
        oh, ow = self.output_size(*x.shape[2:])
        shape = (n, self.out_channels, oh, ow)
        if out is not None and (not isinstance(out, np.ndarray) or out.shape != shape
                                or out.dtype != np.dtype(self.out_dtype)):
            raise ValueError(f"out must be a {self.out_dtype} array of shape {shape}")
        windows = self._windows(x)
        z = self._plan[3]
        self._gemm._product(windows, z)
        y = z.reshape(n, oh, ow, self.out_channels).transpose(0, 3, 1, 2)
        if self.out_dtype == "uint8":
            return self._gemm._requantized(np.ascontiguousarray(y), out)
        if out is None:
            return np.ascontiguousarray(y)
        out[...] = y
        return out

    __call__ = forward

    def __repr__(self):
        return (f"TernaryConv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, block={self.ternary.block}, "
                f"levels={self.ternary.levels}, residuals={self.residuals}, activation={self.activation!r}, "
                f"out_dtype={self.out_dtype!r})")
