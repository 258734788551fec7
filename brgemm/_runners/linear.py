"""The fully-connected runner: LinearRunner owns a float32/bfloat16 ``_core._Linear``, its packed
weights, its scratch arrays and the plain (N, features) ↔ blocked [N/bn][C/bc][bn][bc]
conversions of a single layer (brgemm.nn's MLP keeps the activations of a chain of them blocked
and drives their ``fc`` itself)."""

import threading

from .. import _core
from .conv import BF16, F32
from .scratch import Scratch
from .weights import PackedWeights


def blocked_size(n, bn, features, block):
    """Elements of n rows of ``features`` blocked in (bn × block) tiles."""
    return -(-n // bn) * bn * (-(-features // block) * block)


class LinearRunner:
    """y = activation(x · weightᵀ + bias) of ``dtype`` (float32 or bfloat16) with a fused
    ``activation``. Callers check their arguments and hold ``lock``, as for ConvRunner."""

    def __init__(self, dtype, in_features, out_features, activation, scratch=16):
        self.in_features, self.out_features = in_features, out_features
        self.fc = _core._Linear(dtype, in_features, out_features, activation)
        self.bc, self.bk, self.needs_z = self.fc.bc, self.fc.bk, self.fc.needs_z
        self.act_dtype = F32 if dtype == "float32" else BF16
        self.weights = PackedWeights(self.fc.refresh, core=True)
        self.scratch = Scratch(scratch)
        self.lock = threading.Lock()

    def refresh(self, weight, bias, version=None):
        """Packs weight (out, in) and bias (out,) (float32; bias may be None) if they changed
        (``version``: weights.PackedWeights)."""
        return self.weights.refresh(weight, bias, version=version)

    def _blocked(self, name, rows, bn, block, dtype, key=None, reuse=False):
        n, features = rows.shape
        b = self.scratch.get(name, (blocked_size(n, bn, features, block),), dtype)
        self.scratch.fill(name, b, lambda a: _core.fc_to_blocked(rows, a, bn, block), key, reuse)
        return b

    def forward(self, x, y, weight, bias, x_key=None, buffers=None, version=None):
        """y (N, out) ← the layer on x (N, in) by weight and bias (packed again if they changed),
        both plain and of the runner's dtype (x may be either float dtype), in one call into C++.
        ``buffers``: (xb, yb, zb) blocked arrays to fill instead of the scratch ones (an MLP's
        chain keeps them for backward; zb, None or the pre-activation's, only in training).
        Returns whether the scratch's blocked x and y now hold x and y: without ``buffers``, a
        float32 layer whose activation the epilogue applies goes from rows to rows in one gemm
        (fc.has_rows_forward) and blocks nothing; backward then blocks x itself. ``version``: as
        refresh's."""
        # Packed first: the packing (dense or block-sparse, fc.block_sparse) decides the path.
        self.weights.refresh(weight, bias, version=version)
        weight = bias = None   # the C++ call then skips its comparison
        if buffers is None and self.fc.has_rows_forward and x.dtype == F32 and y.dtype == F32:
            self.scratch.holds["x"] = None
            self.scratch.holds.pop("y", None)
            self.fc.forward_rows(x, y, weight, bias)
            return False
        n = x.shape[0]
        bn = _core.fc_row_block(n)
        if buffers is None:
            xb = self.scratch.get("x", (blocked_size(n, bn, self.in_features, self.bc),), self.act_dtype)
            yb = self.scratch.get("y", (blocked_size(n, bn, self.out_features, self.bk),), self.act_dtype)
            zb = None
        else:
            xb, yb, zb = buffers
        self.scratch.holds["x"] = None
        self.scratch.holds.pop("y", None)  # overwritten: the caller says whose blocked copy it then holds
        self.fc.forward_plain(x, bn, xb, yb, y, zb, weight, bias)
        self.scratch.holds["x"] = x_key
        return True

    def backward(self, x, y, grad_y, grad_x, weight_grad, bias_grad, x_key=None, y_key=None):
        """Writes weight_grad, bias_grad (or None) and, when grad_x is not None, ∂x (float32 (N,
        in)) from ∂y (N, out) and the forward's plain x and y (y read only for an activation's
        derivative); the blocked x and y the forward left are reused when their keys match."""
        n = x.shape[0]
        bn = _core.fc_row_block(n)
        xb = self._blocked("x", x, bn, self.bc, self.act_dtype, x_key, reuse=True)
        if self.needs_z or y is None:
            yb = self.scratch.get("y", (blocked_size(n, bn, self.out_features, self.bk),), self.act_dtype)
        else:
            yb = self._blocked("y", y, bn, self.bk, self.act_dtype, y_key, reuse=True)
        gyb = self._blocked("gy", grad_y, bn, self.bk, F32)
        gxb = None
        if grad_x is not None:
            gxb = self.scratch.get("gx", (blocked_size(n, bn, self.in_features, self.bc),), F32)
        self.fc.backward(n, bn, gyb, yb, None, xb, gxb, weight_grad, bias_grad, False)
        if grad_x is not None:
            _core.fc_from_blocked(gxb, bn, self.bc, grad_x)
