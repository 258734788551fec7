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
from .._args import activation_arg, dtype_arg, positive_int
from .._quantize import quantize_per_channel
from .._runners.conv import ConvGeometry, ConvRunner, blocked_shape
from .._runners.dfp import DFPConvRunner
from .._runners.quantized import QuantizedConvRunner
from ._parameters import Parameters, QuantizedIO
from ._pruning import Prunable

_BF16 = np.dtype(ml_dtypes.bfloat16)
_F32 = np.dtype(np.float32)
_U8 = np.dtype(np.uint8)


class _Convolution:
    """What the convolution layers share: geometry, output sizes, the checks of their arrays."""

    def _init_geometry(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups=1):
        self.geometry = ConvGeometry.of(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        (self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
         self.dilation, self.groups) = self.geometry

    def output_size(self, h, w):
        """(OH, OW) for an input of h × w; ValueError when the kernel does not fit."""
        # checked here: int() below would take 2.5 and fail on inf with OverflowError
        return self.geometry.out_size(positive_int(h, "h"), positive_int(w, "w"))

    def _checked(self, x, name, channels, block, dtype, plain_dtypes):
        """(x, whether it is blocked) for a plain (N, C, H, W) x of one of plain_dtypes (made
        contiguous) or a blocked x of ``dtype`` (a blocked gradient of another float dtype is
        widened by the runner)."""
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
        if x.ndim == 4:
            if x.dtype not in plain_dtypes:
                raise TypeError(f"{name} must have dtype {' or '.join(d.name for d in plain_dtypes)}, got {x.dtype}")
            if x.shape[1] != channels:
                raise ValueError(f"{name} has {x.shape[1]} channels, this layer expects {channels} (shape {x.shape})")
            if min(x.shape) < 1:
                raise ValueError(f"{name} has a zero-size dimension (shape {x.shape})")
            return np.ascontiguousarray(x), False
        if x.ndim == 5:
            n, cb, h, w, b = x.shape
            if x.dtype != dtype and name == "x":  # first: the block below 16 channels depends on the dtype
                raise TypeError(f"{name} is blocked {x.dtype}; this layer takes blocked {dtype.name}")
            if b != block or cb != -(-channels // block):
                raise ValueError(f"{name} is blocked as {x.shape}; this layer's {channels} channels need blocks of "
                                 f"{block}: shape (N, {-(-channels // block)}, H, W, {block})")
            if min(x.shape) < 1:
                raise ValueError(f"{name} has a zero-size dimension (shape {x.shape})")
            return np.ascontiguousarray(x), True
        raise ValueError(f"{name} must be 4-D (N, C, H, W) or blocked 5-D (N, C/bc, H, W, bc), got {x.ndim}-D")

    def _output(self, x, blocked, out, channels, block, h, w, dtype):
        """``out`` checked, or a new array, for n images of ``channels`` of h × w, of x's kind."""
        n = x.shape[0]
        want = blocked_shape(n, channels, block, h, w) if blocked else (n, channels, h, w)
        if out is None:
            return np.empty(want, dtype)
        if not isinstance(out, np.ndarray) or out.shape != want or out.dtype != dtype:
            raise ValueError(f"out must be a {np.dtype(dtype).name} array of shape {want}")
        return out

    def _geometry_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}"
                + (f", groups={self.groups}" if self.groups != 1 else ""))


class Conv2d(_Convolution, Prunable, Parameters):
    """y = activation(conv2d(x, weight) + bias), bias and activation fused into the BRGEMM's
    epilogue.

    ``kernel_size``, ``stride``, ``dilation``: an integer or (rows, columns). ``padding``: an
    integer, (rows, columns), (top, bottom, left, right), "valid" or "same" (stride 1).
    ``groups``: as PyTorch's; ``weight`` is then (K, C/groups, R, S). Grouped convolutions are
    BRGEMMs whose blocks hold whole groups or parts of one (block-diagonal weights for groups
    narrower than a block); groups = in_channels = out_channels (depthwise) is a per-channel
    stencil instead (layers/depthwise.cpp).
    ``algorithm``: "auto" (the default), "direct" or "winograd".
    "winograd" runs forward and ∂x as Winograd F(m×m, 3×3) (layers/winograd.h; the weight
    gradient stays direct): 3×3 kernels, stride 1, dilation 1, groups 1, float32, activation
    None, "relu" or "relu6", else ValueError; F(4×4) or F(2×2), whichever the cost model of
    layers/winograd.h finds cheaper for the call's shape ("winograd2", "winograd4" force one;
    "winograd6" forces F(6×6), which auto never picks: it measured no faster than F(4×4)).
    "auto" takes that tile where Winograd applies and the model finds it at least 1.1× cheaper
    than the direct convolution (the multiplies saved against the transforms' work and the
    (m+2)²/9 larger filters read from memory: direct for few channels, or for many channels
    on few tiles), the direct convolution otherwise, per call shape. ``algorithm_used``: what
    the last forward ran, "direct" or "winograd F(4x4,3x3)" / "winograd F(2x2,3x3)" (None
    before the first). Winograd results differ from the direct ones by rounding: measured
    against float64 on ResNet-50's 3×3 layers, the largest error is ≤ 2e-5 of the output's
    largest magnitude for F(4×4), ≤ 1e-6 for F(2×2), ≤ 3e-5 for F(6×6) (direct: ≤ 1e-6).
    ``activation``: None, "relu", or any of :class:`brgemm.nn.Linear`'s. ``dtype``: "float32",
    "bfloat16" (bf16 activations and weights in the products, f32 accumulation, f32 master
    weights and gradients; the weight gradient is computed in f32 from the bf16 activations,
    which are exact in f32), or "dfp16" (dynamic fixed point, Das et al. 2018: forward, ∂x and ∂W
    multiply int16 mantissas with one shared exponent per tensor, each batch element's int32 sum
    exact, converted to float32 and added; float32 activations, master weights and gradients;
    groups 1, activation None or "relu", algorithm "auto" or "direct"; ``exponents`` after a
    call; layers/dfp_conv.h). Initialised as PyTorch does: U(−1/√(C/groups·R·S), 1/√(C/groups·R·S)),
    from ``seed``.

    >>> conv = Conv2d(64, 64, 3, padding=1, activation="relu")
    >>> y = conv(x)                      # x (N, 64, H, W) → y (N, 64, H, W)
    >>> dx = conv.backward(dy)           # and conv.weight_grad, conv.bias_grad
    """

    training = True

    def _prune_block(self):
        """The kernels' own block of the weight seen as (K, C·R·S): bk output channels × bc input
        channels with all their taps (one B block of the BRGEMM and its R·S offsets)."""
        r, s = self.kernel_size
        return (self.bk, self.bc * r * s)

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, bias=True,
                 activation=None, dtype="float32", seed=None, groups=1, algorithm="auto"):
        self._init_geometry(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        self.activation = activation_arg(activation)
        if not isinstance(algorithm, str):
            raise TypeError(f"algorithm must be a string, got {type(algorithm).__name__}")
        self.algorithm = algorithm
        if dtype == "dfp16":
            if algorithm not in ("auto", "direct"):
                raise ValueError(f"algorithm must be 'auto' or 'direct' for dtype='dfp16', got {algorithm!r}")
            self.dtype = dtype
            self._runner = DFPConvRunner(self.geometry, activation or "none")
        else:
            self.dtype = dtype_arg(dtype)
            self._runner = ConvRunner(self.dtype, self.geometry, activation or "none", algorithm=algorithm)
        self._act_dtype, self.bc, self.bk = self._runner.act_dtype, self._runner.bc, self._runner.bk
        r, s = self.kernel_size
        rng = np.random.default_rng(seed)
        shape = self.geometry.weight_shape()
        self._init_parameters(rng, shape, shape[1] * r * s, bias)
        self._saved = None   # what the last training forward keeps for backward

    @property
    def algorithm_used(self):
        """What the last forward ran: "direct", "winograd F(4x4,3x3)" or "winograd F(2x2,3x3)";
        None before the first forward."""
        if self.dtype == "dfp16":
            return None if self._saved is None and not self._ran else "direct"
        return self._runner.cv.algorithm_used

    _ran = False  # a dfp16 layer's forward has run

    def _set_mask(self, keep):
        if self.dtype != "dfp16":  # dfp16 products are dense: the SGD step alone holds the mask
            self._runner.cv.set_mask(keep.view(np.uint8))

    @property
    def exponents(self):
        """dtype="dfp16": the shared exponents of the last forward and backward (``x``,
        ``weight``, ``grad`` for ∂y after the activation) and the bits the overflow bound added
        to x's and ∂y's (``x_shift``, ``grad_shift``; layers/dfp_conv.h), as a dict; None for the
        float32 and bfloat16 layers."""
        return self._runner.cv.exponents if self.dtype == "dfp16" else None

    @property
    def packing(self):
        """How forward and ∂x use the weights: "auto" (the default: block-sparse when at most
        ``brgemm.nn.Conv2d.sparse_crossover`` of the weight blocks, ki × ko channels of one tap,
        hold a nonzero, else dense), "dense" or "sparse" (forced). Block-sparse passes leave the
        zero blocks out of their BRGEMM batches and sum the rest in the dense order: the results
        are bit-identical to the dense ones for finite inputs. Depthwise and dfp16 layers stay
        dense."""
        return "dense" if self.dtype == "dfp16" else self._runner.cv.packing

    @packing.setter
    def packing(self, value):
        if not isinstance(value, str):
            raise TypeError(f"packing must be a string, got {type(value).__name__}")
        if self.dtype == "dfp16":
            if value not in ("auto", "dense"):
                raise ValueError(f"packing must be 'auto' or 'dense' for dtype='dfp16' (its products are dense), "
                                 f"got {value!r}")
            return
        self._runner.cv.packing = value

    @property
    def block_sparse(self):
        """Whether the last packing runs block-sparse (known after a forward)."""
        return False if self.dtype == "dfp16" else self._runner.cv.block_sparse

    @property
    def block_density(self):
        """The fraction of the forward weight blocks holding a nonzero (last packing)."""
        if self.dtype == "dfp16":
            return 1.0  # dense products: every block is used
        return self._runner.cv.block_density

    sparse_crossover = _core._Conv2d.sparse_crossover

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
        x, blocked = self._checked(x, "x", self.in_channels, self.bc, self._act_dtype,
                                   (_F32,) if self.dtype == "dfp16" else (_F32, _BF16))
        n, _, h, w = x.shape[:4]
        y = self._output(x, blocked, out, self.out_channels, self.bk, *self.output_size(h, w), self._act_dtype)
        token = self._owned.token()   # before the arrays are referenced below
        xb, yb, zb = self._runner.forward(x, y, self._weight, self._bias, keep_z=self.training, version=token)
        self._saved = (xb, yb, zb, n, h, w) if self.training else None
        self._ran = True
        return y

    __call__ = forward

    def backward(self, grad_out, input_grad=True, out=None):
        """From grad_out = ∂loss/∂y of the last training forward (plain or blocked, float32 or
        bfloat16): accumulates ``weight_grad`` and ``bias_grad`` and returns ∂loss/∂x as float32
        of grad_out's kind, or None when ``input_grad`` is False (one product fewer)."""
        if self._saved is None:
            raise RuntimeError("backward needs a forward in training mode first")
        xb, yb, zb, n, h, w = self._saved
        g, blocked = self._checked(grad_out, "grad_out", self.out_channels, self.bk, _F32, (_F32, _BF16))
        gyb = self._runner.blocked("gy", g, self.bk, _F32)
        if gyb.shape != yb.shape:
            raise ValueError(f"grad_out must match the last forward's output: blocked shape {yb.shape}, "
                             f"got {gyb.shape}")
        gx = self._output(gyb, blocked, out, self.in_channels, self.bc, h, w, _F32) if input_grad else None
        self._runner.backward(n, h, w, gyb, yb, zb, xb, gx, self._weight_grad, self._bias_grad, not self._grad_zero)
        self._grad_zero = False
        return gx

    def __repr__(self):
        return (f"Conv2d({self._geometry_repr()}, bias={self._bias is not None}, activation={self.activation!r}, "
                f"dtype={self.dtype!r}" + (f", algorithm={self.algorithm!r}" if self.algorithm != "auto" else "") + ")")


class QuantizedConv2d(_Convolution, QuantizedIO):
    """int8 inference: y = activation(input_scale·weight_scale[k]·conv2d(x_q − input_zero_point,
    weight) + bias), with uint8 activations x_q, int8 ``weight`` (K, C/groups, R, S) and one float32
    ``weight_scale`` per output channel (zero point 0). The int32 sums are exact; dequantization,
    bias and activation are the BRGEMM's epilogue, which then stores float32 or, with
    ``out_dtype="uint8"``, y_q = clip(round(y / output_scale) + output_zero_point, 0, 255)
    (ties to even). Padding is a real zero (x_q = input_zero_point).

    Geometry arguments as :class:`Conv2d`; ``algorithm`` "auto" or "direct" (both the direct
    convolution: Winograd is float32 only, "winograd" is a ValueError). ``out_dtype`` defaults to "uint8" when
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
                 out_dtype=None, seed=None, groups=1, algorithm="direct"):
        self._init_geometry(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        self.activation = activation_arg(activation)
        if not isinstance(algorithm, str):
            raise TypeError(f"algorithm must be a string, got {type(algorithm).__name__}")
        if algorithm.startswith("winograd"):
            raise ValueError(f"algorithm={algorithm!r} is not available for this layer: int8 (QuantizedConv2d) "
                             "runs the direct convolution only")
        if algorithm not in ("auto", "direct"):
            raise ValueError(f"algorithm must be 'auto' or 'direct' for QuantizedConv2d, got {algorithm!r}")
        self._init_quantization(input_scale, input_zero_point, output_scale, output_zero_point, out_dtype)
        self._runner = QuantizedConvRunner(self.geometry, activation or "none", self.out_dtype)
        self.bc, self.bk = self._runner.bc, self._runner.bk
        shape = self.geometry.weight_shape()
        bound = 1.0 / np.sqrt(shape[1] * shape[2] * shape[3])
        rng = np.random.default_rng(seed)
        self.weight, self.weight_scale = quantize_per_channel(rng.uniform(-bound, bound, shape))
        self.bias = rng.uniform(-bound, bound, self.out_channels).astype(np.float32) if bias else None
        # the (re)pack check runs once per forward; a failure names the argument
        self._refresh()

    @classmethod
    def from_float(cls, conv, input_scale, input_zero_point=0, output_scale=None, output_zero_point=0,
                   out_dtype=None, *, weights="int8", **ternary):
        """The int8 version of a float :class:`Conv2d`: its weights quantized per output
        channel (:func:`quantize_per_channel`), its bias and activation kept, with the given
        input and output quantization.

        ``weights="ternary"``: 8-bit activations × ternary weights with residual levels instead
        (a :class:`~brgemm.nn.TernaryConv2d`, groups 1); ``ternary`` takes its ``block``,
        ``max_residuals``, ``error_target`` and ``residuals``."""
        from .linear import _check_ternary_args
        if weights not in ("int8", "ternary"):
            raise ValueError(f"weights must be 'int8' or 'ternary', got {weights!r}")
        _check_ternary_args(weights, ternary)
        if weights == "ternary":
            from .ternary import TernaryConv2d
            return TernaryConv2d.from_float(conv, input_scale, input_zero_point, output_scale, output_zero_point,
                                            out_dtype, **ternary)
        if not isinstance(conv, Conv2d):
            raise TypeError(f"conv must be a brgemm.nn.Conv2d, got {type(conv).__name__}")
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                conv.bias is not None, conv.activation, input_scale=input_scale, input_zero_point=input_zero_point,
                output_scale=output_scale, output_zero_point=output_zero_point, out_dtype=out_dtype,
                groups=conv.groups)
        q.weight, q.weight_scale = quantize_per_channel(conv.weight)
        if conv.bias is not None:
            q.bias = conv.bias
        q._refresh()
        return q

    def _refresh(self):
        w, ws, b, token = self._arrays()
        self._runner.refresh(w, ws, b, self._quantization(), token)

    def forward(self, x, out=None):
        """y for x: uint8 or float32 (N, C, H, W), or blocked uint8 (N, C/bc, H, W, bc). y is
        out_dtype, of x's kind. ``out`` may give its array."""
        self._refresh()
        x, blocked = self._checked(x, "x", self.in_channels, self.bc, _U8, (_U8, _F32))
        h, w = x.shape[2:4]
        y = self._output(x, blocked, out, self.out_channels, self.bk, *self.output_size(h, w), np.dtype(self.out_dtype))
        xs, xz, _, _ = self._quantization()
        self._runner.forward(x, y, xs, xz)
        return y

    __call__ = forward

    def __repr__(self):
        return (f"QuantizedConv2d({self._geometry_repr()}, bias={self._owned.own('bias') is not None}, "
                f"activation={self.activation!r}, out_dtype={self.out_dtype!r})")

