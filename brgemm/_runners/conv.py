"""The convolution runner: ConvGeometry (the arguments' checks and the output size) and
ConvRunner, which owns a float32/bfloat16 ``_core._Conv2d``, its packed weights, its scratch
arrays and the plain (N, C, H, W) ↔ blocked (N, C/bc, H, W, bc) conversions."""

import functools
import threading
from collections import namedtuple

import ml_dtypes
import numpy as np

from .. import _core
from .._args import MAX_SIZE, positive_int
from .scratch import Scratch
from .weights import PackedWeights

F32, BF16 = np.dtype(np.float32), np.dtype(ml_dtypes.bfloat16)


def pair_arg(v, name):
    """(rows, columns) from an integer or one or two integers, each at least 1."""
    if isinstance(v, (tuple, list)):
        if len(v) not in (1, 2):
            raise ValueError(f"{name} must be an integer or a pair of integers, got {v!r}")
        return positive_int(v[0], name), positive_int(v[-1], name)
    v = positive_int(v, name)
    return v, v


def padding_arg(padding, kernel, dilation):
    """(top, bottom, left, right) from an int, one or two (rows, columns) or four integers,
    "valid" or "same" (stride 1 only; an odd total puts the extra row or column at the bottom or
    right, as PyTorch does)."""
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        if padding == "same":
            return _core.conv_same_padding(*kernel, *dilation)
        raise ValueError(f"padding must be an integer, a pair, a 4-tuple, 'valid' or 'same', got {padding!r}")
    vals = tuple(padding) if isinstance(padding, (tuple, list)) else (padding,)
    if len(vals) not in (1, 2, 4):
        raise ValueError(f"padding must be an integer, a pair, a 4-tuple, 'valid' or 'same', got {padding!r}")
    for p in vals:
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or not 0 <= p <= MAX_SIZE:
            raise ValueError(f"padding must hold integers in 0..2**31 - 1, got {padding!r}")
    vals = tuple(int(p) for p in vals)
    if len(vals) == 1:
        return vals * 4
    if len(vals) == 2:
        return vals[0], vals[0], vals[1], vals[1]
    return vals


class ConvGeometry(namedtuple("ConvGeometry", "in_channels out_channels kernel_size stride padding dilation groups",
                              defaults=(1,))):
    """A convolution's shape: channels, kernel (R, S), stride, padding (top, bottom, left,
    right), dilation and groups (output channel k reads the in_channels/groups input channels
    of its group k // (out_channels/groups); groups = in_channels = out_channels: depthwise),
    checked."""

    @classmethod
    def of(cls, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1):
        kernel, dilation = pair_arg(kernel_size, "kernel_size"), pair_arg(dilation, "dilation")
        stride = pair_arg(stride, "stride")
        if isinstance(padding, str) and padding == "same" and stride != (1, 1):
            raise ValueError("padding='same' needs stride 1")
        c, k = positive_int(in_channels, "in_channels"), positive_int(out_channels, "out_channels")
        groups = positive_int(groups, "groups")
        for v, name in ((c, "in_channels"), (k, "out_channels")):
            if v % groups:
                raise ValueError(f"{name} ({v}) must be divisible by groups ({groups})")
        return cls(c, k, kernel, stride, padding_arg(padding, kernel, dilation), dilation, groups)

    def core_args(self):
        """(C, K, R, S, stride_h, stride_w, pad_t, pad_b, pad_l, pad_r, dil_h, dil_w) for _core
        (groups goes by keyword: core_kwargs)."""
        return (self.in_channels, self.out_channels, *self.kernel_size, *self.stride, *self.padding, *self.dilation)

    def core_kwargs(self):
        return {"groups": self.groups} if self.groups != 1 else {}

    def weight_shape(self):
        """(K, C/groups, R, S), as PyTorch holds a convolution's weight."""
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def out_size(self, h, w):
        """(OH, OW) for an input of h × w, as the C++ layer computes it (layers/conv.h);
        ValueError when the kernel does not fit."""
        return _out_size(self, int(h), int(w))


@functools.lru_cache(maxsize=1024)
def _out_size(geometry, h, w):  # remembered: a call into C++ per layer call would cost ~1 µs
    return _core.conv_out_size(h, w, *geometry.core_args()[2:])


def out_size(h, w, kernel, stride, padding, dilation):
    """(OH, OW), unchecked: layers/conv.h's formula on sizes that may be symbolic (torch's fake
    tensors), which cannot cross into C++; tests/test_conv.py checks it against the core's."""
    (r, s), (sh, sw), (dh, dw), (pt, pb, pl, pr) = kernel, stride, dilation, padding
    return (h + pt + pb - dh * (r - 1) - 1) // sh + 1, (w + pl + pr - dw * (s - 1) - 1) // sw + 1


def blocked_shape(n, channels, block, h, w):
    return (n, -(-channels // block), h, w, block)


class ConvRunner:
    """A float32 or bfloat16 convolution (``dtype``) of ``geometry`` with a fused ``activation``
    ("none", "relu", ...). Callers check their arguments (naming them as their users know
    them; _core checks again for memory safety) and hold ``lock`` while they use the runner:
    its scratch arrays are shared between calls."""

    def __init__(self, dtype, geometry, activation, scratch=16, algorithm="direct"):
        self.geometry = geometry
        self.cv = _core._Conv2d(dtype, *geometry.core_args(), activation, **geometry.core_kwargs())
        self.cv.set_algorithm(algorithm)  # ValueError naming `algorithm` and why, for a Winograd one it cannot run
        self.bc, self.bk, self.needs_z = self.cv.bc, self.cv.bk, self.cv.needs_z
        self.act_dtype = F32 if dtype == "float32" else BF16
        self.weights = PackedWeights(self.cv.refresh, core=True)
        self.scratch = Scratch(scratch)
        self.lock = threading.Lock()

    def refresh(self, weight, bias, version=None):
        """Packs weight (K, C/groups, R, S) and bias (K,) (float32; bias may be None) if they changed.
        ``version``: what tells the caller's weights apart (weights.PackedWeights); the same
        version as the last pack's skips the byte comparison."""
        return self.weights.refresh(weight, bias, version=version)

    def blocked(self, name, x, block, dtype, key=None, reuse=False):
        """A contiguous x (N, C, H, W) as blocked ``dtype`` in the scratch array ``name`` (key and
        reuse: Scratch.fill); a blocked x as it is (widened to ``dtype`` if it differs)."""
        if x.ndim == 5:
            return x if x.dtype == dtype else x.astype(dtype)
        n, c, h, w = x.shape
        xb = self.scratch.get(name, blocked_shape(n, c, block, h, w), dtype)
        self.scratch.fill(name, xb, lambda b: _core.conv_to_blocked(x, b), key, reuse)
        return xb

    def forward(self, x, y, weight, bias, keep_z=False, x_key=None, add=None, version=None, moments=None):
        """y ← the convolution of x by weight and bias (packed again if they changed). x:
        contiguous plain (N, C, H, W) float32 or bfloat16, or blocked of the runner's dtype; y:
        the plain or blocked output array of the runner's dtype. ``keep_z``: keep the
        pre-activation when backward needs it (training). ``add``: a blocked residual (y's
        shape and dtype; y must be blocked) added before the activation. ``version``: see
        refresh. ``moments``: a float64 array (N, K/bk, OH, 2, bk) for each output row's
        per-channel mean and Σ (y − mean)² (a BatchNorm's statistics; y must be blocked). Returns the blocked (x, y, z) a backward takes (z None when not kept)."""
        n, h, w = x.shape[0], x.shape[2], x.shape[3]
        oh, ow = y.shape[2:4]
        yshape = blocked_shape(n, self.geometry.out_channels, self.bk, oh, ow)
        yb = y if y.ndim == 5 else self.scratch.get("y", yshape, self.act_dtype)
        zb = self.scratch.get("z", yshape, F32) if keep_z and self.needs_z else None
        self.scratch.holds.pop("y", None)  # overwritten: the caller says whose blocked copy it then holds
        if x.ndim == 4 and y.ndim == 4 and add is None and moments is None:  # one call: refresh, block, compute, unblock
            xshape = blocked_shape(n, self.geometry.in_channels, self.bc, h, w)
            xb = self.scratch.get("x", xshape, self.act_dtype)
            self.scratch.holds["x"] = None
            if self.weights.current(version):
                self.cv.forward_plain(x, xb, yb, y, zb, None, None)
            else:   # the C++ call compares and packs: as refresh with the core's pack
                self.weights.forget()
                self.cv.forward_plain(x, xb, yb, y, zb, weight, bias)
                self.weights.mark(version)
            self.scratch.holds["x"] = x_key
            return xb, yb, zb
        if (add is not None or moments is not None) and y.ndim != 5:
            raise ValueError("a residual (add) and moments need the blocked output layout")
        self.refresh(weight, bias, version)
        xb = self.blocked("x", x, self.bc, self.act_dtype, x_key)
        self.cv.forward(n, h, w, xb, yb, zb, add, moments)
        if y.ndim == 4:
            _core.conv_from_blocked(yb, y)
        return xb, yb, zb

    def backward(self, n, h, w, gyb, yb, zb, xb, gx, weight_grad, bias_grad, accumulate):
        """Weight and bias gradients (added to, or written when not ``accumulate``) and, when gx
        is not None, ∂x into gx (float32, plain or blocked), from the blocked float32 ∂y (a
        bfloat16 runner also takes a bfloat16 one, as it is) and what forward returned."""
        gxb = None
        if gx is not None:
            gxb = gx if gx.ndim == 5 else self.scratch.get(
                "gx", blocked_shape(n, self.geometry.in_channels, self.bc, h, w), F32)
        self.cv.backward(n, h, w, gyb, yb, zb, xb, gxb, weight_grad, bias_grad, accumulate)
        if gx is not None and gx.ndim == 4:
            _core.conv_from_blocked(gxb, gx)
