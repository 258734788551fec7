"""The convolution operators: ``conv2d`` and ``conv2d_backward``, plain or blocked layout."""

import numpy as np
import torch

from .. import _core
from ._bridge import _F32, _FLOATS, _activation, _dtype_name, _identity, _layer, _master, _np, _np_dtype, _op, _tensor
from ._products import _product_grads_fake, _setup_product


def _pads(padding):
    """(top, bottom, left, right) from [rows, columns] or [top, bottom, left, right]."""
    p = [int(v) for v in padding]
    if len(p) not in (1, 2, 4) or min(p) < 0:
        raise ValueError(f"padding must be 1, 2 or 4 non-negative integers, got {list(padding)}")
    if len(p) == 1:
        p = p * 2
    return (p[0], p[0], p[1], p[1]) if len(p) == 2 else tuple(p)


def _pair(v, name):
    v = [int(e) for e in v] if isinstance(v, (list, tuple)) else [int(v)]
    if len(v) == 1:
        v = v * 2
    if len(v) != 2 or min(v) < 1:
        raise ValueError(f"{name} must be one or two positive integers, got {v}")
    return tuple(v)


def _conv_out(h, w, r, s, stride, pads, dilation):
    oh = (h + pads[0] + pads[1] - dilation[0] * (r - 1) - 1) // stride[0] + 1
    ow = (w + pads[2] + pads[3] - dilation[1] * (s - 1) - 1) // stride[1] + 1
    return oh, ow


def _conv_args(input, weight, bias, stride, padding, dilation, groups):
    """(x, weight f32, bias f32, geometry, (OH, OW), (N, H, W)) for a plain (N, C, H, W) or a
    blocked (N, C/bc, H, W, bc) input."""
    x = _tensor(input, "input", _FLOATS, ndim=(4, 5))
    w = _tensor(weight, "weight", _FLOATS, ndim=4)
    if groups != 1:
        raise ValueError(f"groups must be 1 (grouped and depthwise convolutions are not supported), got {groups}")
    c = w.shape[1]
    if x.dim() == 5:
        bc = _core.conv_block(c)
        if x.shape[1] != -(-c // bc) or x.shape[4] != bc:
            raise ValueError(f"input is blocked as {tuple(x.shape)}; weight {tuple(w.shape)} needs blocks of {bc}: "
                             f"(N, {-(-c // bc)}, H, W, {bc})")
    elif x.shape[1] != c:
        raise ValueError(f"input has {x.shape[1]} channels, weight {tuple(w.shape)} expects {c}")
    n, h, wd = x.shape[0], x.shape[2], x.shape[3]
    geo = (_pair(stride, "stride"), _pads(padding), _pair(dilation, "dilation"))
    oh, ow = _conv_out(h, wd, w.shape[2], w.shape[3], *geo)
    if oh < 1 or ow < 1:
        raise ValueError(f"the kernel {tuple(w.shape[2:])} (dilation {geo[2]}) is larger than the padded input "
                         f"{(h, wd)} (padding {geo[1]})")
    return x, _master(w, "weight", w.shape), _master(bias, "bias", (w.shape[0],)), geo, (oh, ow), (n, h, wd)


def _conv_layer(dt, weight, geo, activation):  # weight: the caller's tensor, as _linear_layer
    k, c, r, s = weight.shape
    (sh, sw), pads, (dh, dw) = geo
    args = (dt, c, k, r, s, sh, sw, *pads, dh, dw, activation)
    return _layer(("conv",) + args + (weight.data_ptr(),), lambda: _core._Conv2d(*args))


def _conv_blocked(e, name, n, channels, block, h, w, dtype):
    return e.buffer(name, (n, -(-channels // block), h, w, block), dtype)


def _conv_output_shape(n, k, oh, ow, blocked):
    if blocked:
        bk = _core.conv_block(k)
        return (n, -(-k // bk), oh, ow, bk)
    return (n, k, oh, ow)


_CONV_SCHEMA = ("(Tensor input, Tensor weight, Tensor? bias=None, int[2] stride=1, int[] padding=[0, 0], "
                'int[2] dilation=1, int groups=1, str activation="none", bool blocked_output=False) -> Tensor')


@_op("conv2d", _CONV_SCHEMA)
def _conv2d(input, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, activation="none",
            blocked_output=False):
    """input: plain (N, C, H, W) or blocked (N, C/bc, H, W, bc); the output is plain, or blocked
    with blocked_output (what a following brgemm conv2d takes without converting)."""
    x, w, b, geo, (oh, ow), (n, h, wd) = _conv_args(input, weight, bias, stride, padding, dilation, groups)
    act = _activation(activation)
    c, k = w.shape[1], w.shape[0]
    out = torch.empty(_conv_output_shape(n, k, oh, ow, blocked_output), dtype=x.dtype)
    if out.numel() == 0:
        return out
    e = _conv_layer(_dtype_name(x), weight, geo, act)
    dt = _np_dtype(x)
    with e.lock:
        cv = e.layer
        cv.refresh(_np(w), None if b is None else _np(b))
        if x.dim() == 5:
            xb = _np(x)
        else:
            xb = _conv_blocked(e, "x", n, c, cv.bc, h, wd, dt)
            e.block("x", x, xb, lambda t, buf: _core.conv_to_blocked(_np(t), buf), reuse=False)
        yb = _np(out) if blocked_output else _conv_blocked(e, "y", n, k, cv.bk, oh, ow, dt)
        cv.forward(n, h, wd, xb, yb, None)
        if not blocked_output:
            _core.conv_from_blocked(yb, _np(out))
            e.holds["y"] = _identity(out)
    return out


@_conv2d.register_fake
def _(input, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, activation="none",
      blocked_output=False):
    oh, ow = _conv_out(input.shape[2], input.shape[3], weight.shape[2], weight.shape[3], _pair(stride, "stride"),
                       _pads(padding), _pair(dilation, "dilation"))
    return input.new_empty(_conv_output_shape(input.shape[0], weight.shape[0], oh, ow, blocked_output))


@_op("conv2d_backward", "(Tensor grad_output, Tensor input, Tensor weight, Tensor? bias, Tensor output, int[2] stride, "
                        "int[] padding, int[2] dilation, str activation, bool input_grad) -> (Tensor, Tensor, Tensor)")
def _conv2d_backward(grad_output, input, weight, bias, output, stride, padding, dilation, activation, input_grad):
    """(∂input or an empty tensor, ∂weight, ∂bias or an empty tensor) of conv2d, in float32;
    grad_output has the output's layout, ∂input the input's (plain or blocked)."""
    x, w, b, geo, (oh, ow), (n, h, wd) = _conv_args(input, weight, bias, stride, padding, dilation, 1)
    act = _activation(activation)
    c, k = w.shape[1], w.shape[0]
    g = _tensor(grad_output, "grad_output", _FLOATS, ndim=(4, 5))
    want = _conv_output_shape(n, k, oh, ow, g.dim() == 5)
    if tuple(g.shape) != want:
        raise ValueError(f"grad_output must have the output's shape {want}, got {tuple(g.shape)}")
    # The kernels write every gradient entry (accumulate=False): no zero-fill but for no images.
    gw = (torch.empty if n else torch.zeros)(w.shape)
    gb = (torch.empty if n else torch.zeros)((k,) if b is not None else (0,))
    gx = torch.empty(x.shape if input_grad else (0,))
    if n == 0:
        return gx.zero_(), gw, gb
    e = _conv_layer(_dtype_name(x), weight, geo, act)
    dt = _np_dtype(x)
    with e.lock:
        cv = e.layer
        cv.refresh(_np(w), None if b is None else _np(b))  # as the forward packed them: no repacking
        if x.dim() == 5:
            xb = _np(x)
        else:
            xb = _conv_blocked(e, "x", n, c, cv.bc, h, wd, dt)
            e.block("x", x, xb, lambda t, buf: _core.conv_to_blocked(_np(t), buf), reuse=True)
        yb = None
        if act != "none":  # the ReLU mask
            y = _tensor(output, "output", (x.dtype,), ndim=(4, 5))
            if y.dim() == 5:
                yb = _np(y)
            else:
                yb = _conv_blocked(e, "y", n, k, cv.bk, oh, ow, dt)
                e.block("y", y, yb, lambda t, buf: _core.conv_to_blocked(_np(t), buf), reuse=True)
        if g.dim() == 5:
            gyb = _np(g if g.dtype == _F32 else g.float())
        else:
            gyb = _conv_blocked(e, "gy", n, k, cv.bk, oh, ow, np.float32)
            _core.conv_to_blocked(_np(g), gyb)
        gxb = None
        if input_grad:
            gxb = _np(gx) if x.dim() == 5 else _conv_blocked(e, "gx", n, c, cv.bc, h, wd, np.float32)
        if yb is None:
            yb = _conv_blocked(e, "y", n, k, cv.bk, oh, ow, dt)  # not read without an activation
        cv.backward(n, h, wd, gyb, yb, None, xb, gxb, _np(gw), None if b is None else _np(gb), False)
        if input_grad and x.dim() == 4:
            _core.conv_from_blocked(gxb, _np(gx))
    return gx, gw, gb


@_conv2d_backward.register_fake
def _(grad_output, input, weight, bias, output, stride, padding, dilation, activation, input_grad):
    return _product_grads_fake(input, weight, bias, input_grad)


def _conv2d_grad(ctx, grad):
    input, weight, bias, output = ctx.saved_tensors
    stride, padding, dilation, _, activation, _ = ctx.args
    need = ctx.needs_input_grad
    gx, gw, gb = _conv2d_backward(grad, input, weight, bias, output, stride, padding, dilation, activation, need[0])
    return (gx.to(input.dtype) if need[0] else None, gw.to(weight.dtype) if need[1] else None,
            gb.to(bias.dtype) if bias is not None and need[2] else None, None, None, None, None, None, None)


_conv2d.register_autograd(_conv2d_grad, setup_context=_setup_product)


