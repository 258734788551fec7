"""Pooling on the blocked layout (N, C/bc, H, W, bc), the one activations keep from the stem to
the pool: ``max_pool2d_blocked`` (PyTorch's max_pool2d with dilation 1 and ceil_mode off; the
gradient goes where PyTorch's goes, the first maximum of each window in row-major order, NaN
winning) and ``global_avg_pool_blocked`` (blocked in, plain (N, C) out), with their backward
operators (float32).

The max-pool backward finds each window's maximum again from the input instead of reading an
index tensor: the forward keeps one output and writes nothing more. Measured on ResNet-50's pool
(one core, data in cache), finding the maxima again is about a quarter of the backward's time;
in memory the input is 51 of the 116 MB the backward moves, where uint8 indices would be 3 MB
(plus 3 MB written by every forward, inference too).

int8 inference passes uint8 activations (per-tensor affine, real = scale·(q − zero_point))
between quantized convolutions. ``max_pool2d_blocked`` takes them as they are: the quantization
is monotone, so the maximum of the q is the q of the maximum and the output keeps the input's
scale and zero point (no gradient: integer tensors have none). The average needs the qparams and
leaves the integers, so it is an operator of its own rather than defaulted arguments of the float
one, whose output dtype is its input's and which has a gradient:
``global_avg_pool_blocked_u8(input, channels, scale, zero_point)`` gives float32 (N, channels),
scale·(mean of q − zero_point), for H·W ≤ 65793 (H·W·255 < 2^24 keeps the sums exact).
"""

import ml_dtypes
import numpy as np
import torch

from .. import _core
from ._bridge import _BF16, _F32, _FLOATS, _np, _op, _tensor

_U8 = torch.uint8
_POOLED = _FLOATS + (_U8,)  # what max pooling takes


def _torch(a):
    """A numpy array _core returned (float32, ml_dtypes.bfloat16 or uint8) as a tensor, no copy."""
    if a.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(a.view(np.int16)).view(_BF16)
    return torch.from_numpy(a)


def _pair(v):
    return (v[0], v[1]) if len(v) == 2 else (v[0], v[0])


def _pooled(h, w, kernel_size, stride, padding):
    """(OH, OW) from sizes that may be symbolic (a fake implementation's)."""
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel_size), _pair(stride), _pair(padding)
    return (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1


@_op("max_pool2d_blocked", "(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding) -> Tensor")
def _max_pool2d_blocked(input, kernel_size, stride, padding):
    """The maximum of each kernel_size window at stride over the input padded by padding on
    each side (padding is never picked); input and output blocked, float32, bfloat16 or uint8
    (quantized: the output keeps the input's scale and zero point)."""
    x = _tensor(input, "input", _POOLED, ndim=5)
    return _torch(_core.max_pool2d_blocked(_np(x), list(kernel_size), list(stride), list(padding)))


def max_pool2d_blocked_into(input, kernel_size, stride, padding, out_buffer):
    """max_pool2d_blocked for an optimized model in inference (no autograd, not traced), into
    ``out_buffer(shape, dtype)``: a buffer reused from call to call."""
    x = _tensor(input, "input", _POOLED, ndim=5)
    n, cb, h, w, bc = x.shape
    oh, ow = _pooled(h, w, kernel_size, stride, padding)
    if oh < 1 or ow < 1:   # the operator says why
        return torch.ops.brgemm.max_pool2d_blocked(x, kernel_size, stride, padding)
    out = out_buffer((n, cb, oh, ow, bc), x.dtype)
    if out.numel():
        _core.max_pool2d_blocked(_np(x), list(kernel_size), list(stride), list(padding), out=_np(out))
    return out


@_max_pool2d_blocked.register_fake
def _(input, kernel_size, stride, padding):
    n, cb, h, w, bc = input.shape
    return input.new_empty((n, cb, *_pooled(h, w, kernel_size, stride, padding), bc))


@_op("max_pool2d_blocked_backward",
     "(Tensor grad_output, Tensor input, int[2] kernel_size, int[2] stride, int[2] padding) -> Tensor")
def _max_pool2d_blocked_backward(grad_output, input, kernel_size, stride, padding):
    """∂input of max_pool2d_blocked (float32, blocked like input): each output's gradient added
    at its window's maximum, found again from input."""
    x = _tensor(input, "input", _FLOATS, ndim=5)
    g = _tensor(grad_output, "grad_output", _FLOATS, ndim=5).float()
    return _torch(_core.max_pool2d_blocked_backward(_np(g), _np(x), list(kernel_size), list(stride), list(padding)))


@_max_pool2d_blocked_backward.register_fake
def _(grad_output, input, kernel_size, stride, padding):
    return input.new_empty(input.shape, dtype=_F32)


def _setup_max(ctx, inputs, output):
    input, kernel_size, stride, padding = inputs
    ctx.save_for_backward(input)
    ctx.geometry = (kernel_size, stride, padding)


def _max_grad(ctx, grad):
    (input,) = ctx.saved_tensors
    gx = _max_pool2d_blocked_backward(grad, input, *ctx.geometry)
    return gx.to(input.dtype), None, None, None


_max_pool2d_blocked.register_autograd(_max_grad, setup_context=_setup_max)


@_op("global_avg_pool_blocked", "(Tensor input, int channels) -> Tensor")
def _global_avg_pool_blocked(input, channels):
    """The mean over H and W of each of the first ``channels`` channels of a blocked input:
    (N, channels) in the input's dtype (bfloat16: summed in float32, rounded once)."""
    x = _tensor(input, "input", _FLOATS, ndim=5)
    return _torch(_core.global_avg_pool_blocked(_np(x), channels))


@_global_avg_pool_blocked.register_fake
def _(input, channels):
    return input.new_empty((input.shape[0], channels))


@_op("global_avg_pool_blocked_backward", "(Tensor grad_output, SymInt[5] input_shape) -> Tensor")
def _global_avg_pool_blocked_backward(grad_output, input_shape):
    """∂input of global_avg_pool_blocked: float32, blocked to input_shape, grad_output / (H·W)
    in every position of the real channels, 0 in the padded ones."""
    g = _tensor(grad_output, "grad_output", _FLOATS, ndim=2).float()
    return _torch(_core.global_avg_pool_blocked_backward(_np(g), list(input_shape)))


@_global_avg_pool_blocked_backward.register_fake
def _(grad_output, input_shape):
    return grad_output.new_empty(tuple(input_shape), dtype=_F32)


def _setup_avg(ctx, inputs, output):
    ctx.input_shape = tuple(inputs[0].shape)
    ctx.dtype = inputs[0].dtype


def _avg_grad(ctx, grad):
    return _global_avg_pool_blocked_backward(grad, ctx.input_shape).to(ctx.dtype), None


_global_avg_pool_blocked.register_autograd(_avg_grad, setup_context=_setup_avg)


@_op("global_avg_pool_blocked_u8", "(Tensor input, int channels, float scale, int zero_point) -> Tensor")
def _global_avg_pool_blocked_u8(input, channels, scale, zero_point):
    """The dequantized mean over H and W of each of the first ``channels`` channels of a blocked
    uint8 input (real = scale·(q − zero_point)): float32 (N, channels), the sums exact, then one
    division and one product, each rounded once. Inference only (no gradient)."""
    x = _tensor(input, "input", (_U8,), ndim=5)
    return _torch(_core.global_avg_pool_blocked(_np(x), channels, scale, zero_point))


@_global_avg_pool_blocked_u8.register_fake
def _(input, channels, scale, zero_point):
    return input.new_empty((input.shape[0], channels), dtype=_F32)
