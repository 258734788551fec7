"""2-D convolution on the BRGEMM, numpy in and out: :class:`Conv2d` (float32 and bfloat16
training) and :class:`QuantizedConv2d` (int8 inference).

Parameters follow PyTorch (``weight`` (K, C, R, S), ``bias`` (K,)) as float32 numpy arrays the
layer owns: write them in place or assign new ones, and the next forward packs them again (an
exact comparison with what was packed last finds the change). Gradients accumulate into
``weight_grad`` and ``bias_grad`` until :meth:`Conv2d.zero_grad`.

A layer takes plain NCHW arrays or blocked ones (``[N][C/bc][H][W][bc]``, :mod:`brgemm.layout`)
and returns the kind it was given, so a chain of layers stays blocked. Every contraction is one
BRGEMM call over a batch of (channel block, tap) pairs (layers/conv.cpp); padding is never
materialised.

:class:`QuantizedConv2d` multiplies uint8 activations by int8 weights with one scale per output
channel (exact int32 sums), then dequantizes, adds the bias, applies the activation and either
returns float32 or requantizes to uint8 in the same epilogue, so a chain of quantized layers
passes uint8 arrays without a float round-trip.
"""

import ml_dtypes
import numpy as np

from .. import _core
from ._parameters import Parameters, QuantizedIO
from .linear import _MAX_SIZE, _activation_arg, _dtype_arg, _positive_int

_BF16 = np.dtype(ml_dtypes.bfloat16)
_F32 = np.dtype(np.float32)
_U8 = np.dtype(np.uint8)
_S8 = np.dtype(np.int8)


def _pair(v, name):
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an integer or a pair of integers, got {v!r}")
        return _positive_int(v[0], name), _positive_int(v[1], name)
    v = _positive_int(v, name)
    return v, v


def _padding_arg(padding, r, s, dilation):
    """(top, bottom, left, right) from an int, a pair (rows, columns), a 4-tuple, "valid" or
    "same" (stride 1 only; an odd total puts the extra row or column at the bottom or right, as
    PyTorch does)."""
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        if padding == "same":
            th, tw = dilation[0] * (r - 1), dilation[1] * (s - 1)
            return th // 2, th - th // 2, tw // 2, tw - tw // 2
        raise ValueError(f"padding must be an integer, a pair, a 4-tuple, 'valid' or 'same', got {padding!r}")
    vals = tuple(padding) if isinstance(padding, (tuple, list)) else (padding,)
    if len(vals) not in (1, 2, 4):
        raise ValueError(f"padding must be an integer, a pair, a 4-tuple, 'valid' or 'same', got {padding!r}")
    for p in vals:
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or not 0 <= p <= _MAX_SIZE:
            raise ValueError(f"padding must hold integers in 0..2**31 - 1, got {padding!r}")
    vals = tuple(int(p) for p in vals)
    if len(vals) == 1:
        return vals * 4
    if len(vals) == 2:
        return vals[0], vals[0], vals[1], vals[1]
    return vals


class _Convolution:
    """What the convolution layers share: geometry, output sizes, cached buffers, layouts."""

    def _init_geometry(self, in_channels, out_channels, kernel_size, stride, padding, dilation):
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.out_channels = _positive_int(out_channels, "out_channels")
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.dilation = _pair(dilation, "dilation")
        self.padding = _padding_arg(padding, *self.kernel_size, self.dilation)
        if padding == "same" and self.stride != (1, 1):
            raise ValueError("padding='same' needs stride 1")
        self._buffers = {}   # blocked scratch arrays by (name, shape, dtype)

    def _geometry_args(self):
        """(C, K, R, S, stride_h, stride_w, pad_t, pad_b, pad_l, pad_r, dil_h, dil_w) for _core."""
        (r, s), (sh, sw), (dh, dw), (pt, pb, pl, pr) = self.kernel_size, self.stride, self.dilation, self.padding
        return self.in_channels, self.out_channels, r, s, sh, sw, pt, pb, pl, pr, dh, dw

    def output_size(self, h, w):
        """(OH, OW) for an input of h × w; ValueError when the kernel does not fit."""
        (r, s), (sh, sw), (dh, dw), (pt, pb, pl, pr) = self.kernel_size, self.stride, self.dilation, self.padding
        h, w = _positive_int(h, "h"), _positive_int(w, "w")  # int() would take 2.5 and fail on inf
        oh = (int(h) + pt + pb - dh * (r - 1) - 1) // sh + 1
        ow = (int(w) + pl + pr - dw * (s - 1) - 1) // sw + 1
        if oh < 1 or ow < 1:
            raise ValueError(f"the kernel {self.kernel_size} (dilation {self.dilation}) is larger than the padded "
                             f"input ({h} x {w} with padding {self.padding})")
        return oh, ow

    def _buffer(self, name, shape, dtype):
        key = (name, shape, dtype)
        buf = self._buffers.get(key)
        if buf is None:
            if len(self._buffers) > 16:  # a few shapes in rotation, not every shape ever seen
                self._buffers.clear()
            buf = self._buffers[key] = np.empty(shape, dtype)
        return buf

    def _blocked_shape(self, n, channels, block, h, w):
        return (n, -(-channels // block), h, w, block)

    def _input(self, x, name, channels, block, dtype, plain_dtypes, **quantize):
        """(blocked array of `dtype`, was x given blocked) for a plain (N, C, H, W) x of one of
        plain_dtypes (converted, or quantized with ``quantize``'s scale and zero_point), or a
        blocked x."""
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
        if x.ndim == 4:
            if x.dtype not in plain_dtypes:
                raise TypeError(f"{name} must have dtype {' or '.join(d.name for d in plain_dtypes)}, got {x.dtype}")
            n, c, h, w = x.shape
            if c != channels:
                raise ValueError(f"{name} has {c} channels, this layer expects {channels} (shape {x.shape})")
            if min(x.shape) < 1:
                raise ValueError(f"{name} has a zero-size dimension (shape {x.shape})")
            xb = self._buffer(name, self._blocked_shape(n, channels, block, h, w), dtype)
            _core.conv_to_blocked(np.ascontiguousarray(x), xb, **(quantize if x.dtype != dtype else {}))
            return xb, False
        if x.ndim == 5:
            n, cb, h, w, b = x.shape
            if b != block or cb != -(-channels // block):
                raise ValueError(f"{name} is blocked as {x.shape}; this layer's {channels} channels need blocks of "
                                 f"{block}: shape (N, {-(-channels // block)}, H, W, {block})")
            if x.dtype != dtype:
                if name == "x":
                    raise TypeError(f"{name} is blocked {x.dtype}; this layer takes blocked {dtype.name}")
                x = x.astype(dtype)  # a bfloat16 gradient widened to float32
            if min(x.shape) < 1:
                raise ValueError(f"{name} has a zero-size dimension (shape {x.shape})")
            return np.ascontiguousarray(x), True
        raise ValueError(f"{name} must be 4-D (N, C, H, W) or blocked 5-D (N, C/bc, H, W, bc), got {x.ndim}-D")

    def _output(self, n, h, w, out, blocked, dtype):
        """(blocked output array, plain shape) for the output of n images of h × w; ``out``, when
        given, must be of the kind and dtype the layer returns."""
        oh, ow = self.output_size(h, w)
        yshape = self._blocked_shape(n, self.out_channels, self.bk, oh, ow)
        plain_shape = (n, self.out_channels, oh, ow)
        want = yshape if blocked else plain_shape
        if out is not None and (not isinstance(out, np.ndarray) or out.shape != want or out.dtype != dtype):
            raise ValueError(f"out must be a {np.dtype(dtype).name} array of shape {want}")
        if blocked:
            return (out if out is not None else np.empty(yshape, dtype)), plain_shape
        return self._buffer("y", yshape, dtype), plain_shape

    @staticmethod
    def _unblock(yb, blocked, out, plain_shape):
        if blocked:
            return yb
        y = out if out is not None else np.empty(plain_shape, yb.dtype)
        _core.conv_from_blocked(yb, y)
        return y

    def _geometry_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}")


class Conv2d(_Convolution, Parameters):
    """y = activation(conv2d(x, weight) + bias), groups = 1, bias and activation fused into the
    BRGEMM's epilogue.

    ``kernel_size``, ``stride``, ``dilation``: an integer or (rows, columns). ``padding``: an
    integer, (rows, columns), (top, bottom, left, right), "valid" or "same" (stride 1).
    ``activation``: None, "relu", or any of :class:`brgemm.nn.Linear`'s. ``dtype``: "float32",
    or "bfloat16" (bf16 activations and weights in the products, f32 accumulation, f32 master
    weights and gradients; the weight gradient is computed in f32 from the bf16 activations,
    which are exact in f32). Initialised as PyTorch does: U(−1/√(C·R·S), 1/√(C·R·S)), from ``seed``.

    >>> conv = Conv2d(64, 64, 3, padding=1, activation="relu")
    >>> y = conv(x)                      # x (N, 64, H, W) → y (N, 64, H, W)
    >>> dx = conv.backward(dy)           # and conv.weight_grad, conv.bias_grad
    """

    training = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, bias=True,
                 activation=None, dtype="float32", seed=None):
        self._init_geometry(in_channels, out_channels, kernel_size, stride, padding, dilation)
        self.activation = _activation_arg(activation)
        self.dtype = _dtype_arg(dtype)
        self._act_dtype = _F32 if self.dtype == "float32" else _BF16
        self._cv = _core._Conv2d(self.dtype, *self._geometry_args(), activation or "none")
        self.bc, self.bk = self._cv.bc, self._cv.bk
        r, s = self.kernel_size
        rng = np.random.default_rng(seed)
        self._init_parameters(rng, (self.out_channels, self.in_channels, r, s), self.in_channels * r * s, bias)
        self._saved = None   # what the last training forward keeps for backward

    # --- modes ----------------------------------------------------------------------------

    def zero_grad(self):
        """Sets the gradients to zero (lazily: the next backward writes instead of adding)."""
        self._grad_zero = True

    def train(self, mode=True):
        """Training mode (the default) keeps what backward needs."""
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    # --- forward and backward -----------------------------------------------------------

    def forward(self, x, out=None):
        """y for x (N, C, H, W) or blocked (N, C/bc, H, W, bc), float32 or bfloat16 (a blocked x
        must have the layer's dtype). y has the layer's dtype and x's kind: (N, K, OH, OW) or
        (N, K/bk, OH, OW, bk). ``out`` may give its array."""
        xb, blocked = self._input(x, "x", self.in_channels, self.bc, self._act_dtype, (_F32, _BF16))
        n, _, h, w, _ = xb.shape
        yb, plain_shape = self._output(n, h, w, out, blocked, self._act_dtype)
        zb = self._buffer("z", yb.shape, _F32) if self.training and self._cv.needs_z else None
        self._cv.refresh(self._weight, self._bias)
        self._cv.forward(n, h, w, xb, yb, zb)
        self._saved = (xb, yb, zb, n, h, w) if self.training else None
        return self._unblock(yb, blocked, out, plain_shape)

    __call__ = forward

    def backward(self, grad_out, input_grad=True, out=None):
        """From grad_out = ∂loss/∂y of the last training forward (plain or blocked, float32 or
        bfloat16): accumulates ``weight_grad`` and ``bias_grad`` and returns ∂loss/∂x as float32
        of grad_out's kind, or None when ``input_grad`` is False (one product fewer)."""
        if self._saved is None:
            raise RuntimeError("backward needs a forward in training mode first")
        xb, yb, zb, n, h, w = self._saved
        gyb, blocked = self._input(grad_out, "grad_out", self.out_channels, self.bk, _F32, (_F32, _BF16))
        if gyb.shape != yb.shape:
            raise ValueError(f"grad_out must match the last forward's output: blocked shape {yb.shape}, "
                             f"got {gyb.shape}")
        gxb = None
        xshape = self._blocked_shape(n, self.in_channels, self.bc, h, w)
        plain_shape = (n, self.in_channels, h, w)
        if input_grad:
            want = xshape if blocked else plain_shape
            if out is not None and (not isinstance(out, np.ndarray) or out.shape != want or out.dtype != _F32):
                raise ValueError(f"out must be a float32 array of shape {want}")
            if blocked:
                gxb = out if out is not None else np.empty(xshape, _F32)
            else:
                gxb = self._buffer("grad_in", xshape, _F32)
        accumulate = not self._grad_zero
        self._cv.backward(n, h, w, gyb, yb, zb, xb, gxb, self._weight_grad, self._bias_grad, accumulate)
        self._grad_zero = False
        return self._unblock(gxb, blocked, out, plain_shape) if input_grad else None

    def __repr__(self):
        return (f"Conv2d({self._geometry_repr()}, bias={self._bias is not None}, activation={self.activation!r}, "
                f"dtype={self.dtype!r})")


def quantize_per_channel(weight):
    """Symmetric int8 quantization of float weights (K, ...) with one scale per output channel:
    (w_q int8, scale float32 (K,)) with scale = max|w|/127 and w_q = clip(round(w/scale), ±127)
    (ties to even); a channel of zeros gets scale 1."""
    w = np.asarray(weight, np.float32)
    if w.ndim < 2:
        raise ValueError(f"weight must be at least 2-D (out_channels, ...), got {w.ndim}-D")
    if w.size == 0:  # the reshape below could not infer its -1 (and a max of nothing has no value)
        raise ValueError(f"weight has a zero-size dimension (shape {w.shape})")
    if not np.isfinite(w).all():
        raise ValueError("weight holds NaN or infinity")
    amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    scale = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
    scale = np.maximum(scale, np.finfo(np.float32).tiny)  # subnormal amax / 127 rounds to 0: w / 0
    q = np.clip(np.rint(w / scale.reshape((-1,) + (1,) * (w.ndim - 1))), -127, 127).astype(np.int8)
    return q, scale


class QuantizedConv2d(_Convolution, QuantizedIO):
    """int8 inference: y = activation(input_scale·weight_scale[k]·conv2d(x_q − input_zero_point,
    weight) + bias), with uint8 activations x_q, int8 ``weight`` (K, C, R, S) and one float32
    ``weight_scale`` per output channel (zero point 0). The int32 sums are exact; dequantization,
    bias and activation are the BRGEMM's epilogue, which then stores float32 or, with
    ``out_dtype="uint8"``, y_q = clip(round(y / output_scale) + output_zero_point, 0, 255)
    (ties to even). Padding is a real zero (x_q = input_zero_point).

    Geometry arguments as :class:`Conv2d`. ``out_dtype`` defaults to "uint8" when
    ``output_scale`` is given, else "float32". ``weight``, ``weight_scale``, ``bias`` and the
    scale and zero-point attributes may be changed at any time (in place too); the next forward
    packs again when they differ from what it packed. New layers start from PyTorch's float
    initialisation quantized per channel; :meth:`from_float` quantizes a trained :class:`Conv2d`.

    ``forward`` takes uint8 (N, C, H, W), float32 (N, C, H, W) (quantized with input_scale and
    input_zero_point on the way into the blocked layout), or blocked uint8 (N, C/bc, H, W, bc),
    and returns out_dtype of the kind it was given.

    >>> q = QuantizedConv2d.from_float(conv, input_scale=0.02, output_scale=0.05)
    >>> y_q = q(x_q)                     # uint8 (N, C, H, W) → uint8 (N, K, OH, OW)
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, bias=True,
                 activation=None, *, input_scale=1.0, input_zero_point=0, output_scale=None, output_zero_point=0,
                 out_dtype=None, seed=None):
        self._init_geometry(in_channels, out_channels, kernel_size, stride, padding, dilation)
        self.activation = _activation_arg(activation)
        self._init_quantization(input_scale, input_zero_point, output_scale, output_zero_point, out_dtype)
        self._cv = _core._QuantizedConv2d(*self._geometry_args(), activation or "none", self.out_dtype)
        self.bc, self.bk = self._cv.bc, self._cv.bk
        r, s = self.kernel_size
        bound = 1.0 / np.sqrt(self.in_channels * r * s)
        rng = np.random.default_rng(seed)
        self.weight, self.weight_scale = quantize_per_channel(
            rng.uniform(-bound, bound, (self.out_channels, self.in_channels, r, s)))
        self.bias = rng.uniform(-bound, bound, self.out_channels).astype(np.float32) if bias else None
        # the (re)pack check runs once per forward; a failure names the argument
        self._refresh()

    @classmethod
    def from_float(cls, conv, input_scale, input_zero_point=0, output_scale=None, output_zero_point=0,
                   out_dtype=None):
        """The int8 version of a float :class:`Conv2d`: its weights quantized per output
        channel (:func:`quantize_per_channel`), its bias and activation kept, with the given
        input and output quantization."""
        if not isinstance(conv, Conv2d):
            raise TypeError(f"conv must be a brgemm.nn.Conv2d, got {type(conv).__name__}")
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                conv.bias is not None, conv.activation, input_scale=input_scale, input_zero_point=input_zero_point,
                output_scale=output_scale, output_zero_point=output_zero_point, out_dtype=out_dtype)
        q.weight, q.weight_scale = quantize_per_channel(conv.weight)
        if conv.bias is not None:
            q.bias = conv.bias.copy()
        q._refresh()
        return q

    def _refresh(self):
        r, s = self.kernel_size
        for name, shape in (("weight", (self.out_channels, self.in_channels, r, s)),
                            ("weight_scale", (self.out_channels,)), ("bias", (self.out_channels,))):
            v = getattr(self, name)
            if isinstance(v, np.ndarray) and v.shape != shape:
                raise ValueError(f"{name} must have shape {shape}, got {v.shape}")
        self._cv.refresh(self.weight, self.weight_scale, self.bias, *self._quantization())

    def forward(self, x, out=None):
        """y for x: uint8 or float32 (N, C, H, W), or blocked uint8 (N, C/bc, H, W, bc). y is
        out_dtype, of x's kind. ``out`` may give its array."""
        self._refresh()
        xs, xz, _, _ = self._quantization()
        xb, blocked = self._input(x, "x", self.in_channels, self.bc, _U8, (_U8, _F32), scale=xs, zero_point=xz)
        n, _, h, w, _ = xb.shape
        yb, plain_shape = self._output(n, h, w, out, blocked, np.dtype(self.out_dtype))
        self._cv.forward(n, h, w, xb, yb)
        return self._unblock(yb, blocked, out, plain_shape)

    __call__ = forward

    def __repr__(self):
        return (f"QuantizedConv2d({self._geometry_repr()}, bias={self.bias is not None}, "
                f"activation={self.activation!r}, out_dtype={self.out_dtype!r})")

