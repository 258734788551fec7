"""The DFP-16 fully-connected runner (Linear(dtype="dfp16")): the forward, the input gradient and
the weight gradient are each one DFP-16 product (brgemm.dfp.matmul: int16 mantissas on the s16s16
BRGEMM, int32 sums over K-chunks that cannot overflow, added in float32), as in Das et al., ICLR
2018; the master weights, bias and gradients stay float32. Each operand is converted with its own
shared exponent at every call (the dynamic part), in C++; the weight's and the input's DFP-16
copies of a training forward are kept for its backward."""

import numpy as np

from .. import dfp

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
