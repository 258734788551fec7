"""The DFP-16 fully-connected runner (Linear(dtype="dfp16")): the forward, the input gradient and
the weight gradient are each one DFP-16 product (brgemm.dfp.matmul: int16 mantissas on the s16s16
BRGEMM, int32 sums over K-chunks that cannot overflow, added in float32), as in Das et al., ICLR
2018; the master weights, bias and gradients stay float32. Each operand is converted with its own
shared exponent at every call (the dynamic part), in C++; the weight's and the input's DFP-16
copies of a training forward are kept for its backward."""

import threading

import numpy as np

from .. import _core, dfp
from .conv import F32, ConvRunner, blocked_shape
from .scratch import Scratch
from .weights import PackedWeights

ACTIVATIONS = ("none", "relu")


class DFPLinearRunner:
    def __init__(self, in_features, out_features, activation):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be None or 'relu' for dtype='dfp16', got {activation!r}")
        self.relu = activation == "relu"
        self.saved = None  # (x's DFP-16, the weight's, y) of the last training forward

    def forward(self, x, weight, bias, out, training):
        """out (N, out) = act(x · weightᵀ + bias) in DFP-16; x (N, in) float32."""
        xd = dfp.to_dfp16(np.ascontiguousarray(x, np.float32))
        wd = dfp.to_dfp16(weight)
        wt = dfp.transpose(wd)  # (in, out): B of x·Wᵀ
        dfp.matmul(xd, wt, out=out)
        if bias is not None:
            out += bias
        if self.relu:
            np.maximum(out, 0, out=out)
        self.saved = (xd, wd, out) if training else None
        return out

    def backward(self, grad_y, weight_grad, bias_grad, accumulate, grad_x):
        """weight_grad (+)= dzᵀ·x, bias_grad (+)= Σ dz, and grad_x = dz·W (when not None), each
        product in DFP-16; dz = grad_y, times y > 0 after a ReLU."""
        if self.saved is None or self.saved[2].shape != grad_y.shape:
            raise RuntimeError("backward needs a forward of the same batch size in training mode first")
        xd, wd, y = self.saved
        dz = np.ascontiguousarray(grad_y, np.float32)
        if self.relu:
            dz = np.where(y > 0, dz, np.float32(0))
        dzd = dfp.to_dfp16(dz)
        if grad_x is not None:
            dfp.matmul(dzd, wd, out=grad_x)
        dzt = dfp.transpose(dzd)  # (out, N): A of dzᵀ·x
        if accumulate:
            weight_grad += dfp.matmul(dzt, xd)
            if bias_grad is not None:
                bias_grad += dz.sum(axis=0, dtype=np.float32)
        else:
            dfp.matmul(dzt, xd, out=weight_grad)
            if bias_grad is not None:
                np.sum(dz, axis=0, dtype=np.float32, out=bias_grad)
        return grad_x


def _plain_f32(x):
    return x.ndim == 4 and x.dtype == F32 and x.flags.c_contiguous


class DFPConvRunner(ConvRunner):
    """The DFP-16 convolution runner (Conv2d(dtype="dfp16")): ``_core._DFPConv2d`` blocks a plain
    float32 x and ∂y itself (and writes a plain y and ∂x), converts the blocked float32 input, the
    weights (when they change) and ∂y to int16 mantissas with one
    exponent each, and runs forward, ∂x and ∂W as s16s16f32 BRGEMMs (layers/dfp_conv.h).
    ConvRunner's scratch arrays and layout conversions; float32 activations only."""

    def __init__(self, geometry, activation, scratch=16):
        if geometry.groups != 1:
            raise ValueError(f"groups must be 1 for dtype='dfp16', got {geometry.groups}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be None or 'relu' for dtype='dfp16', got {activation!r}")
        self.geometry = geometry
        self.cv = _core._DFPConv2d(*geometry.core_args(), activation)
        self.bc, self.bk, self.needs_z = self.cv.bc, self.cv.bk, False
        self.act_dtype = F32
        self.weights = PackedWeights(self.cv.refresh, core=True)
        self.scratch = Scratch(scratch)
        self.lock = threading.Lock()
        self.gy_plain = None  # a plain ∂y whose blocking is left to the next backward (blocked)

    def forward(self, x, y, weight, bias, keep_z=False, x_key=None, add=None, version=None, moments=None):
        """As ConvRunner.forward (float32 x; no residual or moments). Returns (xb, yb, None)."""
        if add is not None or moments is not None:
            raise ValueError("dtype='dfp16' takes no residual (add) or moments")
        n, h, w = x.shape[0], x.shape[2], x.shape[3]
        oh, ow = y.shape[2:4]
        yb = y if y.ndim == 5 else self.scratch.get("y", blocked_shape(n, self.geometry.out_channels, self.bk, oh, ow),
                                                     F32)
        self.scratch.holds.pop("y", None)
        self.refresh(weight, bias, version)
        # A plain float32 x is blocked by the layer itself (each plane scanned for the exponent
        # while in cache), a plain y written by it from each finished group of rows.
        y_plain = y if _plain_f32(y) else None
        if _plain_f32(x):
            xb = self.scratch.get("x", blocked_shape(n, self.geometry.in_channels, self.bc, h, w), F32)
            self.scratch.fill("x", xb, lambda b: self.cv.forward(n, h, w, b, yb, x, y_plain), x_key)
        else:
            xb = self.blocked("x", x, self.bc, F32, x_key)
            self.cv.forward(n, h, w, xb, yb, None, y_plain)
        if y.ndim == 4 and y_plain is None:
            _core.conv_from_blocked(yb, y)
        return xb, yb, None

    def blocked(self, name, x, block, dtype, key=None, reuse=False):
        """As ConvRunner.blocked, except for a plain float32 ∂y ("gy"): its blocked array is
        returned unwritten and the next backward writes it (plane by plane, each plane scanned
        for the exponent while it is in cache)."""
        self.gy_plain = None
        if name == "gy" and _plain_f32(x) and dtype == F32:
            n, c, h, w = x.shape
            xb = self.scratch.get(name, blocked_shape(n, c, block, h, w), dtype)
            self.scratch.holds[name] = None
            self.gy_plain = x
            return xb
        return super().blocked(name, x, block, dtype, key, reuse)

    def backward(self, n, h, w, gyb, yb, zb, xb, gx, weight_grad, bias_grad, accumulate):
        """As ConvRunner.backward; x's mantissas are the ones the last forward kept."""
        gxb = None
        if gx is not None:
            gxb = gx if gx.ndim == 5 else self.scratch.get(
                "gx", blocked_shape(n, self.geometry.in_channels, self.bc, h, w), F32)
        gy_plain, self.gy_plain = self.gy_plain, None
        gx_plain = gx if gx is not None and _plain_f32(gx) else None
        self.cv.backward(n, h, w, gyb, yb, gxb, weight_grad, bias_grad, accumulate, gy_plain, gx_plain)
        if gx is not None and gx.ndim == 4 and gx_plain is None:
            _core.conv_from_blocked(gxb, gx)
