"""2-D convolution on the BRGEMM: :class:`Conv2d`, numpy in and out.

Parameters follow PyTorch (``weight`` (K, C, R, S), ``bias`` (K,)) as float32 numpy arrays the
layer owns: write them in place or assign new ones, and the next forward packs them again (an
exact comparison with what was packed last finds the change). Gradients accumulate into
``weight_grad`` and ``bias_grad`` until :meth:`Conv2d.zero_grad`.

A layer takes plain NCHW arrays or blocked ones (``[N][C/bc][H][W][bc]``, :mod:`brgemm.layout`)
and returns the kind it was given, so a chain of layers stays blocked. Every contraction is one
BRGEMM call over a batch of (channel block, tap) pairs (layers/conv.cpp); padding is never
materialised.
"""

import ml_dtypes
import numpy as np

from .. import _core
from ._parameters import Parameters
from .linear import _activation_arg, _dtype_arg, _positive_int

_BF16 = np.dtype(ml_dtypes.bfloat16)
_F32 = np.dtype(np.float32)


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
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 0:
            raise ValueError(f"padding must hold non-negative integers, got {padding!r}")
    vals = tuple(int(p) for p in vals)
    if len(vals) == 1:
        return vals * 4
    if len(vals) == 2:
        return vals[0], vals[0], vals[1], vals[1]
    return vals


class Conv2d(Parameters):
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
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.out_channels = _positive_int(out_channels, "out_channels")
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.dilation = _pair(dilation, "dilation")
        self.padding = _padding_arg(padding, *self.kernel_size, self.dilation)
        if padding == "same" and self.stride != (1, 1):
            raise ValueError("padding='same' needs stride 1")
        self.activation = _activation_arg(activation)
        self.dtype = _dtype_arg(dtype)
        self._act_dtype = _F32 if self.dtype == "float32" else _BF16
        (r, s), (sh, sw), (dh, dw), (pt, pb, pl, pr) = self.kernel_size, self.stride, self.dilation, self.padding
        self._cv = _core._Conv2d(self.dtype, self.in_channels, self.out_channels, r, s, sh, sw, pt, pb, pl, pr, dh, dw,
                                 activation or "none")
        self.bc, self.bk = self._cv.bc, self._cv.bk
        rng = np.random.default_rng(seed)
        self._init_parameters(rng, (self.out_channels, self.in_channels, r, s), self.in_channels * r * s, bias)
        self._buffers = {}   # blocked scratch arrays by (name, n, h, w)
        self._saved = None   # what the last training forward keeps for backward

    # --- modes and sizes ------------------------------------------------------------------

    def zero_grad(self):
        """Sets the gradients to zero (lazily: the next backward writes instead of adding)."""
        self._grad_zero = True

    def train(self, mode=True):
        """Training mode (the default) keeps what backward needs."""
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def output_size(self, h, w):
        """(OH, OW) for an input of h × w; ValueError when the kernel does not fit."""
        oh, ow = self._cv.out_size(int(h), int(w))
        if oh < 1 or ow < 1:
            raise ValueError(f"the kernel {self.kernel_size} (dilation {self.dilation}) is larger than the padded "
                             f"input ({h} x {w} with padding {self.padding})")
        return oh, ow

    # --- forward and backward -----------------------------------------------------------

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

    def _input(self, x, name, channels, block, dtype):
        """(blocked array, was it given blocked) for a plain (N, C, H, W) or blocked x."""
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{name} must be a numpy array of float32 or bfloat16, got {type(x).__name__}")
        if x.dtype not in (_F32, _BF16):
            raise TypeError(f"{name} must have dtype float32 or bfloat16, got {x.dtype}")
        if x.ndim == 4:
            n, c, h, w = x.shape
            if c != channels:
                raise ValueError(f"{name} has {c} channels, this layer expects {channels} (shape {x.shape})")
            if min(x.shape) < 1:
                raise ValueError(f"{name} has a zero-size dimension (shape {x.shape})")
            xb = self._buffer(name, self._blocked_shape(n, channels, block, h, w), dtype)
            _core.conv_to_blocked(np.ascontiguousarray(x), xb)
            return xb, False
        if x.ndim == 5:
            n, cb, h, w, b = x.shape
            if b != block or cb != -(-channels // block):
                raise ValueError(f"{name} is blocked as {x.shape}; this layer's {channels} channels need blocks of "
                                 f"{block}: shape (N, {-(-channels // block)}, H, W, {block})")
            if x.dtype != dtype:
                if name == "x":
                    raise TypeError(f"{name} is blocked {x.dtype}; this {self.dtype} layer takes blocked {dtype}")
                x = x.astype(dtype)  # a bfloat16 gradient widened to float32
            if min(x.shape) < 1:
                raise ValueError(f"{name} has a zero-size dimension (shape {x.shape})")
            return np.ascontiguousarray(x), True
        raise ValueError(f"{name} must be 4-D (N, C, H, W) or blocked 5-D (N, C/bc, H, W, bc), got {x.ndim}-D")

    def forward(self, x, out=None):
        """y for x (N, C, H, W) or blocked (N, C/bc, H, W, bc), float32 or bfloat16 (a blocked x
        must have the layer's dtype). y has the layer's dtype and x's kind: (N, K, OH, OW) or
        (N, K/bk, OH, OW, bk). ``out`` may give its array."""
        xb, blocked = self._input(x, "x", self.in_channels, self.bc, self._act_dtype)
        n, _, h, w, _ = xb.shape
        oh, ow = self.output_size(h, w)
        yshape = self._blocked_shape(n, self.out_channels, self.bk, oh, ow)
        plain_shape = (n, self.out_channels, oh, ow)
        want = yshape if blocked else plain_shape
        if out is not None and (not isinstance(out, np.ndarray) or out.shape != want or out.dtype != self._act_dtype):
            raise ValueError(f"out must be a {self._act_dtype.name} array of shape {want}")
        if blocked:
            yb = out if out is not None else np.empty(yshape, self._act_dtype)
        else:
            yb = self._buffer("y", yshape, self._act_dtype)
        zb = self._buffer("z", yshape, _F32) if self.training and self._cv.needs_z else None
        self._cv.refresh(self._weight, self._bias)
        self._cv.forward(n, h, w, xb, yb, zb)
        self._saved = (xb, yb, zb, n, h, w) if self.training else None
        if blocked:
            return yb
        y = out if out is not None else np.empty(plain_shape, self._act_dtype)
        _core.conv_from_blocked(yb, y)
        return y

    __call__ = forward

    def backward(self, grad_out, input_grad=True, out=None):
        """From grad_out = ∂loss/∂y of the last training forward (plain or blocked, float32 or
        bfloat16): accumulates ``weight_grad`` and ``bias_grad`` and returns ∂loss/∂x as float32
        of grad_out's kind, or None when ``input_grad`` is False (one product fewer)."""
        if self._saved is None:
            raise RuntimeError("backward needs a forward in training mode first")
        xb, yb, zb, n, h, w = self._saved
        gyb, blocked = self._input(grad_out, "grad_out", self.out_channels, self.bk, _F32)
        if gyb.shape != yb.shape:
            raise ValueError(f"grad_out must match the last forward's output: blocked shape {yb.shape}, "
                             f"got {gyb.shape}")
        gxb = None
        if input_grad:
            xshape = self._blocked_shape(n, self.in_channels, self.bc, h, w)
            plain_shape = (n, self.in_channels, h, w)
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
        if not input_grad:
            return None
        if blocked:
            return gxb
        gx = out if out is not None else np.empty((n, self.in_channels, h, w), _F32)
        _core.conv_from_blocked(gxb, gx)
        return gx

    def __repr__(self):
        return (f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"bias={self._bias is not None}, activation={self.activation!r}, dtype={self.dtype!r})")
