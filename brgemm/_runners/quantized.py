"""The int8 runners: QuantizedConvRunner (a ``_core._QuantizedConv2d``) and QuantizedLinearRunner
(``pack_b`` panels and a gemm with the int8 output pipeline as its epilogue), with the checks of
the quantization they share."""

import math
import threading

import numpy as np

from .. import _core
from .._api import Epilogue, gemm, pack_b
from .._quantize import QParams, quantize
from .conv import blocked_shape
from .scratch import Scratch
from .weights import PackedWeights

U8 = np.dtype(np.uint8)


def quantization_arg(input_scale, input_zero_point, output_scale, output_zero_point):
    """(input_scale, input_zero_point, output_scale, output_zero_point) as float, int, float,
    int; TypeError or ValueError naming the one that is wrong."""
    out = []
    for name, v, real in (("input_scale", input_scale, True), ("input_zero_point", input_zero_point, False),
                          ("output_scale", output_scale, True), ("output_zero_point", output_zero_point, False)):
        kinds = (int, float, np.integer, np.floating) if real else (int, np.integer)
        if isinstance(v, bool) or not isinstance(v, kinds):
            raise TypeError(f"{name} must be {'a real number' if real else 'an integer'}, got {type(v).__name__}")
        if real and not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be positive and finite, got {v}")
        if not real and not 0 <= v <= 255:
            raise ValueError(f"{name} must be in [0, 255] for uint8, got {v}")
        out.append(float(v) if real else int(v))
    return tuple(out)


def weights_arg(weight, weight_scale, bias, shape):
    """Checks int8 ``weight`` of ``shape``, float32 ``weight_scale`` and ``bias`` (or None) of
    shape (K,): numpy arrays, naming the one that is wrong."""
    k = shape[0]
    for name, v, want, dt in (("weight", weight, shape, np.int8), ("weight_scale", weight_scale, (k,), np.float32),
                              ("bias", bias, (k,), np.float32)):
        if v is None and name == "bias":
            continue
        if not isinstance(v, np.ndarray):
            raise TypeError(f"{name} must be a numpy array of {np.dtype(dt).name}, got {type(v).__name__}")
        if v.dtype != dt:
            raise TypeError(f"{name} must have dtype {np.dtype(dt).name}, got {v.dtype}")
        if v.shape != want:
            raise ValueError(f"{name} must have shape {want}, got {v.shape}")
    if not (np.all(np.isfinite(weight_scale)) and np.all(weight_scale > 0)):
        raise ValueError("weight_scale must be positive and finite")


class QuantizedConvRunner:
    """uint8 × int8 convolution of ``geometry`` (brgemm.nn.QuantizedConv2d): exact int32 sums,
    then dequantization, bias, ``activation`` and, for out_dtype "uint8", requantization in the
    epilogue. As ConvRunner: callers check their arguments and hold ``lock``."""

    def __init__(self, geometry, activation, out_dtype, scratch=16):
        self.geometry = geometry
        self.cv = _core._QuantizedConv2d(*geometry.core_args(), activation, out_dtype, **geometry.core_kwargs())
        self.bc, self.bk = self.cv.bc, self.cv.bk
        self.weights = PackedWeights(self.cv.refresh, core=True)
        self.scratch = Scratch(scratch)
        self.lock = threading.Lock()

    def refresh(self, weight, weight_scale, bias, quantization, version=None):
        """Packs the weights and builds the epilogue if anything changed; ``quantization`` as
        quantization_arg returns it (``version``: weights.PackedWeights)."""
        key = tuple(quantization)
        if self.weights.current(version, key):
            return False
        weights_arg(weight, weight_scale, bias, self.geometry.weight_shape())
        return self.weights.refresh(weight, weight_scale, bias, key=key, version=version)

    def forward(self, x, y, input_scale, input_zero_point):
        """y ← the layer on x: contiguous uint8 or float32 (quantized with input_scale and
        input_zero_point on the way into the blocked layout) (N, C, H, W), or blocked uint8; y:
        the plain or blocked output array (uint8 or float32 as the layer stores)."""
        n, h, w = x.shape[0], x.shape[2], x.shape[3]
        oh, ow = self.geometry.out_size(h, w)
        if x.ndim == 5:
            xb = x
        else:
            xb = self.scratch.get("x", blocked_shape(n, self.geometry.in_channels, self.bc, h, w), U8)
            quant = {} if x.dtype == U8 else {"scale": input_scale, "zero_point": input_zero_point}
            _core.conv_to_blocked(x, xb, **quant)
        yb = y if y.ndim == 5 else self.scratch.get(
            "y", blocked_shape(n, self.geometry.out_channels, self.bk, oh, ow), y.dtype)
        self.cv.forward(n, h, w, xb, yb)
        if y.ndim == 4:
            _core.conv_from_blocked(yb, y)


class QuantizedLinearRunner:
    """uint8 × int8 fully-connected layer (brgemm.nn.QuantizedLinear): the weights packed once
    into ``pack_b`` panels, one gemm whose epilogue dequantizes, adds the bias, applies the
    activation and, for out_dtype "uint8", requantizes (no activation or ReLU: 1/output_scale
    folded into the scale and bias, one multiply-add per value, as fbgemm does)."""

    def __init__(self, in_features, out_features):
        self.in_features, self.out_features = in_features, out_features
        self.packed = self.epilogue = None
        self.weights = PackedWeights(self._pack)
        self.scales = PackedWeights(self._build_epilogue)   # the epilogue's inputs
        self.lock = threading.Lock()

    def _pack(self, w):
        self.packed = pack_b(np.ascontiguousarray(w.T), "u8s8", layout="panels")

    def _build_epilogue(self, ws, b, xs, xz, ys, yz, activation, out_dtype):
        scale, bias = np.float32(xs) * ws, None if b is None else b.copy()   # the epilogue keeps its own
        fold = out_dtype == "uint8" and activation in (None, "relu")
        if fold:
            scale = scale / np.float32(ys)
            bias = None if b is None else b / np.float32(ys)
        requant = out_dtype == "uint8"
        self.epilogue = Epilogue(scale=scale.astype(np.float32), bias=bias, activation=activation,
                                 out_dtype=out_dtype, a_zero_point=xz,
                                 out_scale=(1.0 if fold else ys) if requant else None,
                                 out_zero_point=yz if requant else None)

    def refresh(self, weight, weight_scale, bias, quantization, activation, out_dtype, version=None):
        """Packs the weights and builds the epilogue for ``activation`` (None or a name) and
        ``out_dtype`` ("float32" or "uint8") if anything changed (``version``:
        weights.PackedWeights)."""
        key = (*quantization, activation, out_dtype)
        if self.weights.current(version) and self.scales.current(version, key):
            return
        weights_arg(weight, weight_scale, bias, (self.out_features, self.in_features))
        self.weights.refresh(weight, version=version)
        self.scales.refresh(weight_scale, bias, key=key, version=version)

    def forward(self, x, y, quantization, epilogue=None):
        """y ← the layer on x (N, in): uint8, or float32 quantized first with the input scale and
        zero point. ``epilogue``: another output pipeline for the same product."""
        if x.dtype == np.float32:
            x = quantize(x, QParams(quantization[0], quantization[1]))
        return gemm(np.ascontiguousarray(x), self.packed, y, epilogue=epilogue or self.epilogue)
