"""brgemm inside PyTorch: the kernels as operators in the ``torch.ops.brgemm`` namespace (with
autograd and fake implementations, so ``torch.compile`` and ``opcheck`` see through them),
drop-in modules, and :func:`convert`, which swaps a model's layers for them.

This is the only module of the package that imports torch (``import brgemm`` does not).

Operators (each calls the pybind11 core on the tensors' memory: CPU, made contiguous when they
are not; bfloat16 tensors are viewed as ml_dtypes.bfloat16, not converted):

- ``gemm(A, B)``, ``batch_reduce(A, B)`` (Σ_i A[i] @ B[i]): float32 or bfloat16.
- ``linear(input, weight, bias=None, activation="none")`` and ``conv2d(input, weight,
  bias=None, stride=1, padding=[0, 0], dilation=1, groups=1, activation="none")`` in
  ``torch.nn.functional``'s argument order, with ``linear_backward`` and ``conv2d_backward``;
  ``activation="relu"`` fuses a ReLU into the product's epilogue. The input's dtype picks the
  path (float32, or bfloat16 products with float32 accumulation); weights are float32 masters
  (bfloat16 ones are widened).
- ``lstm``, ``gru``: one layer and one direction each, returning a workspace tensor that
  their backward operators (``lstm_backward``, ``gru_backward``) read.
- ``ktanh(x)``, ``taylor_softmax(x, dim=-1, order=2)`` and their backward operators.
- ``quantized_linear``, ``quantized_conv2d``: uint8 activations × int8 weights with one
  scale per output channel (inference only).

The C++ layers that pack weights are kept per (geometry, weight tensor): a call repacks only
when the weights' bytes differ from what was packed last (one parallel comparison), so
training steps and in-place edits are always seen.
"""

import collections
import sys
import threading

import ml_dtypes
import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import _api, _core
from .nn import functional as _fn
from .nn.conv import QuantizedConv2d as _NpQuantizedConv2d
from .nn.linear import QuantizedLinear as _NpQuantizedLinear

__all__ = ["Conv2d", "Linear", "LSTM", "GRU", "KTanh", "TaylorSoftmax", "AdaptiveAvgPool2d", "convert",
           "ConversionReport"]

_F32, _BF16 = torch.float32, torch.bfloat16
_FLOATS = (_F32, _BF16)
_FUSED = ("none", "relu")   # activations an operator's epilogue applies (backward from the output)


# --- tensors ↔ the core -------------------------------------------------------------------------

def _tensor(t, name, dtypes, ndim=None):
    """t detached and contiguous, after checking type, device, dtype and rank (naming t)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise ValueError(f"{name} must be on the CPU, got a tensor on {t.device}")
    if t.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype {' or '.join(str(d) for d in dtypes)}, got {t.dtype}")
    if ndim is not None and t.dim() not in ((ndim,) if isinstance(ndim, int) else ndim):
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    return t.detach().contiguous()


def _np(t):
    """The memory of a contiguous CPU tensor as a numpy array (bfloat16 via ml_dtypes), no copy."""
    if t.dtype == _BF16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def _master(t, name, shape):
    """A float32 parameter (bfloat16 ones widened, exactly) of the given shape, or None."""
    if t is None:
        return None
    t = _tensor(t, name, _FLOATS)
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    return t if t.dtype == _F32 else t.float()


def _dtype_name(t):
    return "float32" if t.dtype == _F32 else "bfloat16"


def _np_dtype(t):
    """The numpy dtype the core sees for a float32 or bfloat16 tensor."""
    return np.dtype(np.float32) if t.dtype == _F32 else np.dtype(ml_dtypes.bfloat16)


def _activation(activation):
    if activation not in _FUSED:
        raise ValueError(f"activation must be 'none' or 'relu', got {activation!r}")
    return activation


# --- the C++ layers, kept per geometry and weight tensor -----------------------------------------

def _identity(t):
    """What tells a tensor's contents apart while it is alive: its memory, shape, dtype and
    version counter (bumped by every in-place change; autograd checks saved tensors the same way)."""
    return (t.data_ptr(), t._version, tuple(t.shape), t.dtype)


class _Built:
    """A C++ layer, the lock that serialises its use, and its scratch arrays. ``holds`` maps a
    scratch array's name to the identity of the tensor whose blocked copy it holds, so that a
    backward finds the forward's blocked input and output instead of converting them again."""

    def __init__(self, layer):
        self.layer, self.lock, self._buffers, self.holds = layer, threading.Lock(), {}, {}

    def block(self, name, t, buf, convert, reuse):
        """Fills buf with the blocked copy of t (convert(t, buf)), unless ``reuse`` and it holds
        it already. Only a backward may reuse: its tensors were saved by the forward that
        recorded them and lived since, so no other tensor can have had their identity; a
        forward's input may sit where a freed one was, with the same shape and version."""
        key = _identity(t)
        if not reuse or self.holds.get(name) != key:
            self.holds[name] = None  # while converting
            convert(t, buf)
            self.holds[name] = key

    def buffer(self, name, shape, dtype):
        key = (name, shape)
        buf = self._buffers.get(key)
        if buf is None or buf.dtype != dtype:
            if len(self._buffers) > 8:  # a few batch shapes in rotation, not every shape ever seen
                self._buffers.clear()
                self.holds.clear()
            buf = self._buffers[key] = np.empty(shape, dtype)
            self.holds.pop(name, None)
        return buf


_built, _built_lock = collections.OrderedDict(), threading.Lock()


class _Workspaces:
    """float32 buffers for the recurrent operators' workspaces (tens of MB), handed out as
    tensors over numpy arrays and taken again once PyTorch has let go of them: a fresh
    workspace per training step faulted its pages in, ~20 of an LSTM tagger's 190 ms. A buffer
    is free when the pool holds the only reference to it (torch.from_numpy keeps its array
    alive while any tensor on that memory lives, autograd's saved copies included)."""

    keep = 8  # buffers kept (one per workspace alive at once: layers, directions, micro-batches)

    def __init__(self):
        self.buffers, self.lock = [], threading.Lock()

    def _free(self, i):  # references: the list's and getrefcount's argument, no other
        return sys.getrefcount(self.buffers[i]) == 2

    def take(self, size, zero):
        with self.lock:
            fits = [i for i in range(len(self.buffers))
                    if size <= self.buffers[i].shape[0] <= 2 * size and self._free(i)]
            if fits:
                buf = self.buffers[fits[0]]
            else:
                buf = np.empty(size, np.float32)
                if len(self.buffers) >= self.keep:  # drop a free one, or keep this one out
                    free = [i for i in range(len(self.buffers)) if self._free(i)]
                    if not free:
                        return torch.from_numpy(np.zeros(size, np.float32) if zero else buf)
                    del self.buffers[free[0]]
                self.buffers.append(buf)
            view = buf[:size]
            if zero:
                view.fill(0.0)
            return torch.from_numpy(view)


_workspaces = _Workspaces()


def _layer(key, make):
    with _built_lock:
        entry = _built.get(key)
        if entry is None:
            entry = _built[key] = _Built(make())
            if len(_built) > 256:
                _built.popitem(last=False)
        else:
            _built.move_to_end(key)
    return entry


def _op(name, schema):
    return torch.library.custom_op(f"brgemm::{name}", mutates_args=(), schema=schema)


# --- gemm and batch_reduce -----------------------------------------------------------------------

def _matmul_dtype(a, b, an, bn):
    a = _tensor(a, an, _FLOATS)
    b = _tensor(b, bn, _FLOATS)
    if a.dtype != b.dtype:
        raise TypeError(f"{an} and {bn} must have the same dtype, got {a.dtype} and {b.dtype}")
    return a, b


def _product_epilogue(t):
    return None if t.dtype == _F32 else _api.Epilogue(out_dtype="bfloat16")


def _product(fn, a, b, shape, reduces_nothing):
    """fn(a, b) into a new (shape) tensor of a's dtype; zeros when the sum has no terms."""
    out = torch.empty(shape, dtype=a.dtype)
    if out.numel():
        if reduces_nothing:
            return out.zero_()
        fn(_np(a), _np(b), _np(out), epilogue=_product_epilogue(a))
    return out


@_op("gemm", "(Tensor A, Tensor B) -> Tensor")
def _gemm(A, B):
    a, b = _matmul_dtype(A, B, "A", "B")
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"A (M, K) and B (K, N) must be 2-D with matching K, got {tuple(a.shape)} and {tuple(b.shape)}")
    return _product(_api.gemm, a, b, (a.shape[0], b.shape[1]), a.shape[1] == 0)


@_gemm.register_fake
def _(A, B):
    return A.new_empty((A.shape[0], B.shape[1]))


def _gemm_backward(ctx, grad):
    A, B = ctx.saved_tensors
    grad = grad.to(A.dtype)
    gA = _gemm(grad, B.t().contiguous()) if ctx.needs_input_grad[0] else None
    gB = _gemm(A.t().contiguous(), grad) if ctx.needs_input_grad[1] else None
    return gA, gB


def _save_inputs(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


_gemm.register_autograd(_gemm_backward, setup_context=_save_inputs)


@_op("batch_reduce", "(Tensor A, Tensor B) -> Tensor")
def _batch_reduce(A, B):
    a, b = _matmul_dtype(A, B, "A", "B")
    if a.dim() != 3 or b.dim() != 3 or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[1]:
        raise ValueError(f"A (batch, M, K) and B (batch, K, N) must be 3-D with matching batch and K, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    return _product(_api.batch_reduce, a, b, (a.shape[1], b.shape[2]), a.shape[0] == 0 or a.shape[2] == 0)


@_batch_reduce.register_fake
def _(A, B):
    return A.new_empty((A.shape[1], B.shape[2]))


def _batch_reduce_backward(ctx, grad):
    # Each gradient is one product: dA[i] = dC·B[i]ᵀ for every i at once is dC times the
    # (N, batch·K) matrix of the B[i]ᵀ side by side; dB[i] = A[i]ᵀ·dC stacks the A[i]ᵀ.
    A, B = ctx.saved_tensors
    grad = grad.to(A.dtype)
    b, m, k = A.shape
    gA = gB = None
    if ctx.needs_input_grad[0]:
        bt = B.permute(2, 0, 1).reshape(B.shape[2], b * k).contiguous()
        gA = _gemm(grad, bt).reshape(m, b, k).permute(1, 0, 2).contiguous()
    if ctx.needs_input_grad[1]:
        at = A.permute(0, 2, 1).reshape(b * k, m).contiguous()
        gB = _gemm(at, grad).reshape(b, k, grad.shape[1])  # not -1: ambiguous when b·k = 0
    return gA, gB


_batch_reduce.register_autograd(_batch_reduce_backward, setup_context=_save_inputs)


# --- linear --------------------------------------------------------------------------------------

def _linear_layer(dt, weight, activation):
    """weight: the caller's tensor (a bfloat16 one's float32 copy is new every call, so it
    cannot be the key)."""
    out_f, in_f = weight.shape
    return _layer(("linear", dt, in_f, out_f, activation, weight.data_ptr()),
                  lambda: _core._Linear(dt, in_f, out_f, activation))


def _linear_args(input, weight, bias):
    x = _tensor(input, "input", _FLOATS)
    if x.dim() < 1:
        raise ValueError("input must have at least one dimension")
    w = _tensor(weight, "weight", _FLOATS, ndim=2)
    if 0 in w.shape:  # as brgemm.nn.Linear: a layer has features in and out
        raise ValueError(f"weight must be (out_features, in_features), both at least 1, got {tuple(w.shape)}")
    if x.shape[-1] != w.shape[1]:
        raise ValueError(f"input has {x.shape[-1]} features, weight {tuple(w.shape)} expects {w.shape[1]}")
    return x, _master(w, "weight", w.shape), _master(bias, "bias", (w.shape[0],))


@_op("linear", '(Tensor input, Tensor weight, Tensor? bias=None, str activation="none") -> Tensor')
def _linear(input, weight, bias=None, activation="none"):
    x, w, b = _linear_args(input, weight, bias)
    act = _activation(activation)
    out_f, in_f = w.shape
    x2 = x.reshape(-1, in_f)
    n = x2.shape[0]
    out = torch.empty((n, out_f), dtype=x.dtype)
    if n:
        e = _linear_layer(_dtype_name(x), weight, act)
        with e.lock:
            fc = e.layer
            bn = _core.fc_row_block(n)
            xb = e.buffer("x", _blocks(n, bn, in_f, fc.bc), _np_dtype(x))
            yb = e.buffer("y", _blocks(n, bn, out_f, fc.bk), xb.dtype)
            fc.refresh(_np(w), None if b is None else _np(b))
            e.block("x", x, xb, lambda t, buf: _core.fc_to_blocked(_np(x2), buf, bn, fc.bc), reuse=False)
            fc.forward(n, bn, xb, yb, None)
            _core.fc_from_blocked(yb, bn, fc.bk, _np(out))
    out = out.reshape(*x.shape[:-1], out_f)
    if n:
        e.holds["y"] = _identity(out)  # as the backward will see it
    return out


def _blocks(n, bn, features, block):
    return (-(-n // bn) * bn * (-(-features // block) * block),)


@_linear.register_fake
def _(input, weight, bias=None, activation="none"):
    return input.new_empty((*input.shape[:-1], weight.shape[0]))


@_op("linear_backward", "(Tensor grad_output, Tensor input, Tensor weight, Tensor? bias, Tensor output, "
                        "str activation, bool input_grad) -> (Tensor, Tensor, Tensor)")
def _linear_backward(grad_output, input, weight, bias, output, activation, input_grad):
    """(∂input or an empty tensor, ∂weight, ∂bias or an empty tensor) of linear."""
    x, w, b = _linear_args(input, weight, bias)
    has_bias = b is not None
    act = _activation(activation)
    out_f, in_f = w.shape
    x2 = x.reshape(-1, in_f)
    n = x2.shape[0]
    g = _tensor(grad_output, "grad_output", _FLOATS).reshape(n, out_f)
    y = _tensor(output, "output", (x.dtype,)).reshape(n, out_f)
    # The kernels write every gradient entry (accumulate=False): no zero-fill but for no rows.
    gw = (torch.empty if n else torch.zeros)((out_f, in_f))
    gb = (torch.empty if n else torch.zeros)((out_f,) if has_bias else (0,))
    gx = torch.empty(x.shape if input_grad else (0,))
    if n:
        e = _linear_layer(_dtype_name(x), weight, act)
        with e.lock:
            fc = e.layer
            bn = _core.fc_row_block(n)
            dt = _np_dtype(x)
            xb = e.buffer("x", _blocks(n, bn, in_f, fc.bc), dt)
            yb = e.buffer("y", _blocks(n, bn, out_f, fc.bk), dt)
            gyb = e.buffer("gy", _blocks(n, bn, out_f, fc.bk), np.float32)
            gxb = e.buffer("gx", _blocks(n, bn, in_f, fc.bc), np.float32) if input_grad else None
            fc.refresh(_np(w), None if b is None else _np(b))  # as the forward packed them: no repacking
            e.block("x", x, xb, lambda t, buf: _core.fc_to_blocked(_np(x2), buf, bn, fc.bc), reuse=True)
            if act != "none":  # the ReLU mask
                e.block("y", output, yb, lambda t, buf: _core.fc_to_blocked(_np(y), buf, bn, fc.bk),
                        reuse=True)
            _core.fc_to_blocked(_np(g), gyb, bn, fc.bk)
            fc.backward(n, bn, gyb, yb, None, xb, gxb, _np(gw), _np(gb) if has_bias else None, False)
            if input_grad:
                _core.fc_from_blocked(gxb, bn, fc.bc, _np(gx).reshape(n, in_f))
    return gx, gw, gb


def _product_grads_fake(input, weight, bias, input_grad):
    """The float32 (∂input or empty, ∂weight, ∂bias or empty) of linear_backward and conv2d_backward."""
    return (input.new_empty(input.shape if input_grad else (0,), dtype=_F32), weight.new_empty(weight.shape, dtype=_F32),
            weight.new_empty((weight.shape[0],) if bias is not None else (0,), dtype=_F32))


@_linear_backward.register_fake
def _(grad_output, input, weight, bias, output, activation, input_grad):
    return _product_grads_fake(input, weight, bias, input_grad)


def _setup_product(ctx, inputs, output):
    input, weight, bias = inputs[:3]
    ctx.save_for_backward(input, weight, bias, output)
    ctx.args = inputs[3:]


def _linear_grad(ctx, grad):
    input, weight, bias, output = ctx.saved_tensors
    need = ctx.needs_input_grad
    gx, gw, gb = _linear_backward(grad, input, weight, bias, output, ctx.args[0], need[0])
    return (gx.to(input.dtype) if need[0] else None, gw.to(weight.dtype) if need[1] else None,
            gb.to(bias.dtype) if bias is not None and need[2] else None, None)


_linear.register_autograd(_linear_grad, setup_context=_setup_product)


# --- conv2d --------------------------------------------------------------------------------------

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


# --- lstm and gru: one layer, one direction ------------------------------------------------------

_RNN_GATES = {"lstm": 4, "gru": 3}


def _rnn_workspace_size(cell, t, n, hidden):
    """Floats the C++ driver keeps for backward (rnn_layer::workspace_size): h (and c) before
    every step and after the last, and the gates of every step, at the padded hidden size."""
    hp = -(-hidden // 16) * 16
    return ((2 if cell == "lstm" else 1) * (t + 1) + 4 * t) * n * hp


def _rnn_args(cell, input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, activation):
    x = _tensor(input, "input", _FLOATS, ndim=3)
    t, n, i = x.shape
    g = _RNN_GATES[cell]
    w_hh = _tensor(weight_hh, "weight_hh", _FLOATS, ndim=2)
    h = w_hh.shape[1]
    if w_hh.shape[0] != g * h:
        raise ValueError(f"weight_hh must be ({g}·hidden, hidden), got {tuple(w_hh.shape)}")
    w_ih = _master(weight_ih, "weight_ih", (g * h, i))
    w_hh = _master(w_hh, "weight_hh", (g * h, h))
    if (bias_ih is None) != (bias_hh is None):
        raise ValueError("bias_ih and bias_hh must both be given or both be None")
    b_ih, b_hh = _master(bias_ih, "bias_ih", (g * h,)), _master(bias_hh, "bias_hh", (g * h,))
    states = [_master(s, name, (n, h)) for s, name in ((h0, "h0"), (c0, "c0"))]
    if lengths is not None:
        lengths = _tensor(lengths, "lengths", (torch.int64,), ndim=1)
        if lengths.shape[0] != n:
            raise ValueError(f"lengths must hold one length per sequence ({n}), got {lengths.shape[0]}")
    if activation not in ("exact", "ktanh"):
        raise ValueError(f"activation must be 'exact' or 'ktanh', got {activation!r}")
    return x, w_ih, w_hh, b_ih, b_hh, states, lengths


def _rnn_layer(cell, x, w_ih, reverse, activation):  # w_ih: the caller's tensor, as _linear_layer
    i, h = x.shape[2], w_ih.shape[0] // _RNN_GATES[cell]
    args = (cell, _dtype_name(x), i, h, bool(reverse), activation == "ktanh")
    return _layer(("rnn",) + args + (w_ih.data_ptr(),), lambda: _core._RNN(*args))


def _rnn_forward(cell, input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse, activation, train):
    x, w_ih, w_hh, b_ih, b_hh, (h0, c0), ln = _rnn_args(cell, input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh,
                                                         lengths, activation)
    t, n, _ = x.shape
    h = w_hh.shape[1]
    y = (torch.zeros if ln is not None else torch.empty)((t, n, h))
    hT = torch.empty((n, h))
    cT = torch.empty((n, h)) if cell == "lstm" else None
    # With lengths, the steps past a row's end are never written: zeros keep the workspace a
    # pure function of the inputs (AOT tracing compares it).
    ws = _workspaces.take(_rnn_workspace_size(cell, t, n, h), ln is not None) if train else torch.empty((0,))
    if t and n:
        e = _rnn_layer(cell, x, weight_ih, reverse, activation)
        with e.lock:
            drv = e.layer
            drv.refresh(_np(w_ih), _np(w_hh), *((None, None) if b_ih is None else (_np(b_ih), _np(b_hh))))
            drv.forward(t, n, _np(x), None if ln is None else _np(ln), None if h0 is None else _np(h0),
                        None if c0 is None else _np(c0), _np(y), 0, _np(hT), None if cT is None else _np(cT), train,
                        _np(ws) if train else None)
    return y.to(x.dtype), hT, cT, ws


def _rnn_backward(cell, grad_output, grad_hn, grad_cn, input, weight_ih, weight_hh, bias_ih, bias_hh, lengths,
                  workspace, reverse, activation):
    x, w_ih, w_hh, b_ih, b_hh, _, ln = _rnn_args(cell, input, None, None, weight_ih, weight_hh, bias_ih, bias_hh,
                                                 lengths, activation)
    t, n, i = x.shape
    h = w_hh.shape[1]
    ws = _tensor(workspace, "workspace", (_F32,), ndim=1)
    if ws.shape[0] != _rnn_workspace_size(cell, t, n, h):
        raise ValueError("workspace is not the one a training forward of these shapes returned")
    # None: that output took no part in the loss (zero gradient)
    dy = None if grad_output is None else _tensor(grad_output, "grad_output", _FLOATS, ndim=3).float()
    if dy is not None and tuple(dy.shape) != (t, n, h):
        raise ValueError(f"grad_output must have the output's shape {(t, n, h)}, got {tuple(dy.shape)}")
    dhT = _master(grad_hn, "grad_hn", (n, h))
    dcT = _master(grad_cn, "grad_cn", (n, h)) if cell == "lstm" else None
    dx = torch.empty((t, n, i))
    dh0 = torch.empty((n, h))
    dc0 = torch.empty((n, h) if cell == "lstm" else (0,))
    grads = [torch.empty(w_ih.shape), torch.empty(w_hh.shape)]
    grads += [torch.empty(b_ih.shape), torch.empty(b_hh.shape)] if b_ih is not None else [torch.empty(0), torch.empty(0)]
    e = _rnn_layer(cell, x, weight_ih, reverse, activation)
    with e.lock:
        drv = e.layer
        drv.refresh(_np(w_ih), _np(w_hh), *((None, None) if b_ih is None else (_np(b_ih), _np(b_hh))))
        drv.backward_from(t, n, _np(x), None if ln is None else _np(ln), _np(ws), None if dy is None else _np(dy), 0,
                          None if dhT is None else _np(dhT), None if dcT is None else _np(dcT), _np(dx), False, _np(dh0),
                          _np(dc0) if cell == "lstm" else None, _np(grads[0]), _np(grads[1]),
                          *((_np(grads[2]), _np(grads[3])) if b_ih is not None else (None, None)), False)
    return (dx, dh0) + ((dc0,) if cell == "lstm" else ()) + tuple(grads)


_RNN_ARGS = ("Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, Tensor? bias_hh, Tensor? lengths=None, "
             'bool reverse=False, str activation="exact", bool train=True')


@_op("lstm", f"(Tensor input, Tensor? h0, Tensor? c0, {_RNN_ARGS}) -> (Tensor, Tensor, Tensor, Tensor)")
def _lstm(input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, lengths=None, reverse=False, activation="exact",
          train=True):
    """(output (T, N, H) in input's dtype, h_n, c_n (N, H) float32, workspace for lstm_backward)."""
    return _rnn_forward("lstm", input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse, activation,
                        train)


@_op("gru", f"(Tensor input, Tensor? h0, {_RNN_ARGS}) -> (Tensor, Tensor, Tensor)")
def _gru(input, h0, weight_ih, weight_hh, bias_ih, bias_hh, lengths=None, reverse=False, activation="exact",
         train=True):
    """(output (T, N, H) in input's dtype, h_n (N, H) float32, workspace for gru_backward)."""
    y, hT, _, ws = _rnn_forward("gru", input, h0, None, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse,
                                activation, train)
    return y, hT, ws


def _rnn_fake(cell, input, weight_hh, train):
    t, n, _ = input.shape
    h = weight_hh.shape[1]
    ws = input.new_empty((_rnn_workspace_size(cell, t, n, h) if train else 0,), dtype=_F32)
    return input.new_empty((t, n, h)), input.new_empty((n, h), dtype=_F32), ws


@_lstm.register_fake
def _(input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, lengths=None, reverse=False, activation="exact",
      train=True):
    y, hT, ws = _rnn_fake("lstm", input, weight_hh, train)
    return y, hT, hT.new_empty(hT.shape), ws


@_gru.register_fake
def _(input, h0, weight_ih, weight_hh, bias_ih, bias_hh, lengths=None, reverse=False, activation="exact", train=True):
    return _rnn_fake("gru", input, weight_hh, train)


_RNN_BACKWARD_ARGS = ("Tensor input, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, Tensor? bias_hh, "
                      "Tensor? lengths, Tensor workspace, bool reverse, str activation")


@_op("lstm_backward", f"(Tensor? grad_output, Tensor? grad_hn, Tensor? grad_cn, {_RNN_BACKWARD_ARGS}) -> "
                      "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)")
def _lstm_backward(grad_output, grad_hn, grad_cn, input, weight_ih, weight_hh, bias_ih, bias_hh, lengths, workspace,
                   reverse, activation):
    """(∂input, ∂h0, ∂c0, ∂weight_ih, ∂weight_hh, ∂bias_ih, ∂bias_hh), float32 (empty bias gradients
    without biases), by backpropagation through time from lstm's workspace."""
    return _rnn_backward("lstm", grad_output, grad_hn, grad_cn, input, weight_ih, weight_hh, bias_ih, bias_hh,
                         lengths, workspace, reverse, activation)


@_op("gru_backward", f"(Tensor? grad_output, Tensor? grad_hn, {_RNN_BACKWARD_ARGS}) -> "
                     "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)")
def _gru_backward(grad_output, grad_hn, input, weight_ih, weight_hh, bias_ih, bias_hh, lengths, workspace, reverse,
                  activation):
    """(∂input, ∂h0, ∂weight_ih, ∂weight_hh, ∂bias_ih, ∂bias_hh), float32, from gru's workspace."""
    return _rnn_backward("gru", grad_output, grad_hn, None, input, weight_ih, weight_hh, bias_ih, bias_hh, lengths,
                         workspace, reverse, activation)


def _rnn_backward_fake(cell, input, weight_ih, weight_hh, bias_ih):
    t, n, i = input.shape
    h = weight_hh.shape[1]
    f = dict(dtype=_F32)
    out = [input.new_empty((t, n, i), **f), input.new_empty((n, h), **f)]
    if cell == "lstm":
        out.append(input.new_empty((n, h), **f))
    out += [input.new_empty(weight_ih.shape, **f), input.new_empty(weight_hh.shape, **f)]
    nb = (weight_hh.shape[0],) if bias_ih is not None else (0,)
    return tuple(out + [input.new_empty(nb, **f), input.new_empty(nb, **f)])


@_lstm_backward.register_fake
def _(grad_output, grad_hn, grad_cn, input, weight_ih, weight_hh, bias_ih, bias_hh, lengths, workspace, reverse,
      activation):
    return _rnn_backward_fake("lstm", input, weight_ih, weight_hh, bias_ih)


@_gru_backward.register_fake
def _(grad_output, grad_hn, input, weight_ih, weight_hh, bias_ih, bias_hh, lengths, workspace, reverse, activation):
    return _rnn_backward_fake("gru", input, weight_ih, weight_hh, bias_ih)


def _setup_rnn(ctx, inputs, output):
    lstm = len(output) == 4
    x, h0 = inputs[0], inputs[1]
    c0 = inputs[2] if lstm else None
    w_ih, w_hh, b_ih, b_hh, lengths, reverse, activation, train = inputs[3 if lstm else 2:]
    if not train:
        ctx.untrained = True
        return
    ctx.untrained = False
    # The workspace has no gradient, and an output nobody used gets None instead of a zero-filled
    # tensor (the workspace alone would be tens of MB of zeros a step).
    ctx.mark_non_differentiable(output[-1])
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x, w_ih, w_hh, b_ih, b_hh, lengths, output[-1])
    ctx.meta = (reverse, activation, h0 is not None, c0 is not None)


def _rnn_grad(ctx, cell, grads):
    if ctx.untrained:
        raise RuntimeError(f"brgemm::{cell} was called with train=False, which keeps nothing for backward: "
                           "call it with train=True to differentiate it")
    x, w_ih, w_hh, b_ih, b_hh, lengths, ws = ctx.saved_tensors
    reverse, activation, has_h0, has_c0 = ctx.meta
    gy, ghT = grads[0], grads[1]
    if cell == "lstm":
        dx, dh0, dc0, *gw = _lstm_backward(gy, ghT, grads[2], x, w_ih, w_hh, b_ih, b_hh, lengths, ws, reverse,
                                           activation)
        states = (dh0 if has_h0 else None, dc0 if has_c0 else None)
    else:
        dx, dh0, *gw = _gru_backward(gy, ghT, x, w_ih, w_hh, b_ih, b_hh, lengths, ws, reverse, activation)
        states = (dh0 if has_h0 else None,)
    params = (w_ih, w_hh, b_ih, b_hh)
    gw = [None if p is None else g.to(p.dtype) for g, p in zip(gw, params)]
    return (dx.to(x.dtype),) + states + tuple(gw) + (None, None, None, None)


_lstm.register_autograd(lambda ctx, *g: _rnn_grad(ctx, "lstm", g), setup_context=_setup_rnn)
_gru.register_autograd(lambda ctx, *g: _rnn_grad(ctx, "gru", g), setup_context=_setup_rnn)


# --- K-TanH and Taylor softmax -------------------------------------------------------------------

@_op("ktanh", "(Tensor x) -> Tensor")
def _ktanh(x):
    """tanh by K-TanH (brgemm.nn.functional.ktanh): float32 or bfloat16, same out."""
    x = _tensor(x, "x", _FLOATS)
    out = torch.empty_like(x)
    if x.numel():
        _fn.ktanh(_np(x), out=_np(out))
    return out


_ktanh.register_fake(lambda x: torch.empty_like(x))


@_op("ktanh_backward", "(Tensor grad_output, Tensor output) -> Tensor")
def _ktanh_backward(grad_output, output):
    """grad · (1 − y²) from K-TanH's output y, as the K-TanH paper does (float32)."""
    y = _tensor(output, "output", _FLOATS).float()
    g = _tensor(grad_output, "grad_output", _FLOATS).float()
    if g.shape != y.shape:
        raise ValueError(f"grad_output must have output's shape {tuple(y.shape)}, got {tuple(g.shape)}")
    out = torch.empty_like(y)
    if y.numel():
        _fn.activation_backward("ktanh", _np(g), y=_np(y), out=_np(out))
    return out


_ktanh_backward.register_fake(lambda grad_output, output: torch.empty_like(output, dtype=_F32))


def _setup_output(ctx, inputs, output):
    ctx.save_for_backward(output)
    ctx.dtype = inputs[0].dtype


_ktanh.register_autograd(lambda ctx, g: _ktanh_backward(g, ctx.saved_tensors[0]).to(ctx.dtype),
                         setup_context=_setup_output)


def _softmax_rows(x, dim, name="x"):
    if x.dim() == 0:
        raise ValueError(f"{name} must have at least one dimension")
    if not -x.dim() <= dim < x.dim():
        raise ValueError(f"dim {dim} is out of range for {name} with {x.dim()} dimensions")
    return dim % x.dim()


@_op("taylor_softmax", "(Tensor x, int dim=-1, int order=2) -> Tensor")
def _taylor_softmax(x, dim=-1, order=2):
    """P_n(x_i) / Σ_j P_n(x_j) along dim (brgemm.nn.functional.taylor_softmax; n = order, even)."""
    x = _tensor(x, "x", _FLOATS)
    d = _softmax_rows(x, dim)
    if x.numel() == 0:
        return torch.empty_like(x)
    y = _fn.taylor_softmax(_np(x), axis=d, order=order)
    return torch.from_numpy(np.ascontiguousarray(y).view(np.int16)).view(_BF16) if x.dtype == _BF16 else \
        torch.from_numpy(np.ascontiguousarray(y))


_taylor_softmax.register_fake(lambda x, dim=-1, order=2: torch.empty_like(x))


@_op("taylor_softmax_backward", "(Tensor grad_output, Tensor x, int dim, int order) -> Tensor")
def _taylor_softmax_backward(grad_output, x, dim, order):
    """∂x of taylor_softmax at x given ∂y (float32)."""
    x = _tensor(x, "x", _FLOATS).float()
    g = _tensor(grad_output, "grad_output", _FLOATS).float()
    d = _softmax_rows(x, dim)
    if g.shape != x.shape:
        raise ValueError(f"grad_output must have x's shape {tuple(x.shape)}, got {tuple(g.shape)}")
    if x.numel() == 0:
        return torch.empty_like(x)
    return torch.from_numpy(np.ascontiguousarray(_fn.taylor_softmax_backward(_np(g), _np(x), axis=d, order=order)))


_taylor_softmax_backward.register_fake(lambda grad_output, x, dim, order: torch.empty_like(x, dtype=_F32))


def _setup_softmax(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])
    ctx.args = inputs[1:]


_taylor_softmax.register_autograd(
    lambda ctx, g: (_taylor_softmax_backward(g, ctx.saved_tensors[0], *ctx.args).to(ctx.saved_tensors[0].dtype),
                    None, None), setup_context=_setup_softmax)


# --- int8 inference ------------------------------------------------------------------------------

_QUANT = ("float input_scale, int input_zero_point, float output_scale=1.0, int output_zero_point=0, "
          'str out_dtype="float32", str activation="none"')


def _quantized_input(input, ndim):
    return _tensor(input, "input", (torch.uint8, _F32), ndim=ndim)


def _quantized_weights(weight, weight_scale, bias, ndim):
    w = _tensor(weight, "weight", (torch.int8,), ndim=ndim)
    ws = _tensor(weight_scale, "weight_scale", (_F32,), ndim=1)
    if ws.shape[0] != w.shape[0]:
        raise ValueError(f"weight_scale must hold one scale per output channel ({w.shape[0]}), got {ws.shape[0]}")
    return w, ws, _master(bias, "bias", (w.shape[0],))


def _quantized_layer(e, weight, weight_scale, bias, input_scale, input_zero_point, output_scale, output_zero_point):
    q = e.layer
    q.weight, q.weight_scale, q.bias = _np(weight), _np(weight_scale), None if bias is None else _np(bias)
    q.input_scale, q.input_zero_point = input_scale, input_zero_point
    q.output_scale, q.output_zero_point = output_scale, output_zero_point
    return q


def _out_dtype(out_dtype):
    if out_dtype not in ("float32", "uint8"):
        raise ValueError(f"out_dtype must be 'float32' or 'uint8', got {out_dtype!r}")
    return torch.float32 if out_dtype == "float32" else torch.uint8


@_op("quantized_linear", f"(Tensor input, Tensor weight, Tensor weight_scale, Tensor? bias, {_QUANT}) -> Tensor")
def _quantized_linear(input, weight, weight_scale, bias, input_scale, input_zero_point, output_scale=1.0,
                      output_zero_point=0, out_dtype="float32", activation="none"):
    """brgemm.nn.QuantizedLinear: uint8 (or float32, quantized first) input (*, in) × int8 weight
    (out, in) with per-channel weight_scale → out_dtype (*, out)."""
    x = _quantized_input(input, None)
    w, ws, b = _quantized_weights(weight, weight_scale, bias, 2)
    if 0 in w.shape:
        raise ValueError(f"weight must be (out_features, in_features), both at least 1, got {tuple(w.shape)}")
    if x.dim() < 1 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"input must be (*, {w.shape[1]}), got {tuple(x.shape)}")
    odt = _out_dtype(out_dtype)
    act = _activation(activation)
    x2 = x.reshape(-1, w.shape[1])
    out = torch.empty((x2.shape[0], w.shape[0]), dtype=odt)
    if x2.shape[0]:
        e = _layer(("qlinear", w.shape[1], w.shape[0], b is not None, act, out_dtype, w.data_ptr()),
                   lambda: _NpQuantizedLinear(w.shape[1], w.shape[0], b is not None, None if act == "none" else act,
                                              output_scale=1.0, out_dtype=out_dtype))
        with e.lock:
            q = _quantized_layer(e, w, ws, b, input_scale, input_zero_point, output_scale, output_zero_point)
            q.forward(_np(x2), out=_np(out))
    return out.reshape(*x.shape[:-1], w.shape[0])


@_quantized_linear.register_fake
def _(input, weight, weight_scale, bias, input_scale, input_zero_point, output_scale=1.0, output_zero_point=0,
      out_dtype="float32", activation="none"):
    return input.new_empty((*input.shape[:-1], weight.shape[0]), dtype=_out_dtype(out_dtype))


@_op("quantized_conv2d", "(Tensor input, Tensor weight, Tensor weight_scale, Tensor? bias, int[2] stride, int[] padding, "
                         f"int[2] dilation, {_QUANT}) -> Tensor")
def _quantized_conv2d(input, weight, weight_scale, bias, stride, padding, dilation, input_scale, input_zero_point,
                      output_scale=1.0, output_zero_point=0, out_dtype="float32", activation="none"):
    """brgemm.nn.QuantizedConv2d: uint8 (or float32, quantized first) NCHW input × int8 weight
    (K, C, R, S) with per-channel weight_scale → out_dtype NCHW."""
    x = _quantized_input(input, 4)
    w, ws, b = _quantized_weights(weight, weight_scale, bias, 4)
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"input has {x.shape[1]} channels, weight {tuple(w.shape)} expects {w.shape[1]}")
    geo = (_pair(stride, "stride"), _pads(padding), _pair(dilation, "dilation"))
    oh, ow = _conv_out(x.shape[2], x.shape[3], w.shape[2], w.shape[3], *geo)
    if oh < 1 or ow < 1:
        raise ValueError(f"the kernel {tuple(w.shape[2:])} is larger than the padded input {tuple(x.shape[2:])}")
    odt = _out_dtype(out_dtype)
    act = _activation(activation)
    out = torch.empty((x.shape[0], w.shape[0], oh, ow), dtype=odt)
    if out.numel():
        k, c, r, s = w.shape
        key = ("qconv", c, k, r, s, geo, b is not None, act, out_dtype, w.data_ptr())
        e = _layer(key, lambda: _NpQuantizedConv2d(c, k, (r, s), geo[0], geo[1], geo[2], b is not None,
                                                   None if act == "none" else act, output_scale=1.0,
                                                   out_dtype=out_dtype))
        with e.lock:
            q = _quantized_layer(e, w, ws, b, input_scale, input_zero_point, output_scale, output_zero_point)
            q.forward(_np(x), out=_np(out))
    return out


@_quantized_conv2d.register_fake
def _(input, weight, weight_scale, bias, stride, padding, dilation, input_scale, input_zero_point, output_scale=1.0,
      output_zero_point=0, out_dtype="float32", activation="none"):
    oh, ow = _conv_out(input.shape[2], input.shape[3], weight.shape[2], weight.shape[3], _pair(stride, "stride"),
                       _pads(padding), _pair(dilation, "dilation"))
    return input.new_empty((input.shape[0], weight.shape[0], oh, ow), dtype=_out_dtype(out_dtype))


# --- modules -------------------------------------------------------------------------------------

def _compute_dtype_arg(dtype):
    if dtype is None:
        return None
    names = {"float32": _F32, "bfloat16": _BF16, _F32: _F32, _BF16: _BF16}
    if dtype not in names:
        raise ValueError(f"dtype must be None, 'float32' or 'bfloat16', got {dtype!r}")
    return names[dtype]


def _dtypes(module, x):
    """(dtype of the products, dtype of the result) for input x: under CPU autocast to bfloat16
    both are bfloat16, as for PyTorch's own layers; else the module's compute_dtype (None: x's),
    and the result comes back in x's dtype."""
    if torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == _BF16:
        return _BF16, _BF16
    return (module.compute_dtype or x.dtype), x.dtype


def _fused_arg(activation):
    if activation not in (None, "none", "relu"):
        raise ValueError(f"activation must be None or 'relu', got {activation!r}")
    return "relu" if activation == "relu" else "none"


class _Swap:
    """What the drop-in modules share: from_torch, which builds one on the PyTorch module's own
    parameters (the same Parameter objects, so optimizers and state_dict keys are unchanged)."""

    _torch_class = None

    @staticmethod
    def _unsupported(module):
        return None

    @classmethod
    def from_torch(cls, module, dtype=None):
        """This class's version of ``module`` (a ``torch.nn`` instance of the matching class),
        sharing its parameters. ``dtype``: compute in "bfloat16" whatever the input (None:
        the input's dtype, or bfloat16 under CPU autocast)."""
        if not isinstance(module, cls._torch_class):
            raise TypeError(f"module must be a {cls._torch_class.__module__}.{cls._torch_class.__name__}, "
                            f"got {type(module).__name__}")
        reason = cls._unsupported(module)
        if reason:
            raise ValueError(f"cannot convert {type(module).__name__}: {reason}")
        new = cls.__new__(cls)
        new.__dict__.update(module.__dict__)
        for name in ("_parameters", "_buffers", "_modules"):
            new.__dict__[name] = type(module.__dict__[name])(module.__dict__[name])
        new._init_brgemm(dtype)
        return new

    def _init_brgemm(self, dtype, activation=None):
        self.compute_dtype = _compute_dtype_arg(dtype)
        self.activation = _fused_arg(activation)


def _conv_unsupported(m):
    if m.groups != 1:
        return f"groups={m.groups} (only groups=1)"
    if m.padding_mode != "zeros":
        return f"padding_mode={m.padding_mode!r} (only 'zeros')"
    return None


class Conv2d(_Swap, nn.Conv2d):
    """``torch.nn.Conv2d`` (same arguments, parameters and state_dict) computed by
    ``torch.ops.brgemm.conv2d``, groups = 1 and zero padding only. Extra keywords:
    ``activation="relu"`` fuses a ReLU into the epilogue (convert does it for Conv2d → ReLU
    in a Sequential); ``compute_dtype="bfloat16"`` computes in bf16 whatever the input."""

    _torch_class = nn.Conv2d
    _unsupported = staticmethod(_conv_unsupported)

    def __init__(self, *args, activation=None, compute_dtype=None, **kwargs):
        super().__init__(*args, **kwargs)
        reason = _conv_unsupported(self)
        if reason:
            raise ValueError(reason)
        self._init_brgemm(compute_dtype, activation)

    def _padding4(self):
        if isinstance(self.padding, str):  # 'same' puts an odd extra row/column at the bottom/right
            if self.padding == "valid":
                return [0, 0, 0, 0]
            th, tw = (d * (k - 1) for d, k in zip(self.dilation, self.kernel_size))
            return [th // 2, th - th // 2, tw // 2, tw - tw // 2]
        return list(self.padding)

    #: Return the blocked layout (N, K/bk, OH, OW, bk), which the next brgemm Conv2d takes without
    #: converting; convert(model, blocked=True) sets it inside chains of convolutions.
    blocked_output = False

    def forward(self, input):
        """input: (N, C, H, W), unbatched (C, H, W), or blocked (N, C/bc, H, W, bc)."""
        dt, out_dt = _dtypes(self, input)
        unbatched = input.dim() == 3
        x = (input.unsqueeze(0) if unbatched else input).to(dt)
        y = torch.ops.brgemm.conv2d(x, self.weight, self.bias, list(self.stride), self._padding4(),
                                    list(self.dilation), 1, self.activation, self.blocked_output and not unbatched)
        return (y.squeeze(0) if unbatched else y).to(out_dt)

    def extra_repr(self):
        return (super().extra_repr() + f", activation={self.activation!r}, compute_dtype={self.compute_dtype}"
                + (", blocked_output=True" if self.blocked_output else ""))


class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """``torch.nn.AdaptiveAvgPool2d`` that also takes the blocked layout (N, C/bc, H, W, bc) when
    its output is 1 × 1 (global average pooling): the channels' means, (N, C, 1, 1), straight
    from the blocks, so the Conv2d before it can return blocked output (``convert(model,
    blocked=True)`` pairs them) and neither pass converts the layout. Any other input goes to
    PyTorch's pooling. ``channels``: C (the blocks may pad it), set when paired."""

    channels = None

    def forward(self, input):
        if input.dim() != 5:
            return super().forward(input)
        if self.channels is None or not _global(self.output_size):
            raise ValueError("a blocked (5-D) input needs output_size 1 and the channel count (channels): "
                             "convert(model, blocked=True) sets both")
        n = input.shape[0]
        means = input.mean(dim=(2, 3)).reshape(n, -1)
        if means.shape[1] < self.channels:
            raise ValueError(f"the blocked input holds {means.shape[1]} channels, fewer than channels={self.channels}")
        return means[:, :self.channels].reshape(n, self.channels, 1, 1)

    def extra_repr(self):
        return super().extra_repr() + ("" if self.channels is None else f", channels={self.channels}")


class Linear(_Swap, nn.Linear):
    """``torch.nn.Linear`` computed by ``torch.ops.brgemm.linear``; extra keywords as :class:`Conv2d`."""

    _torch_class = nn.Linear

    def __init__(self, *args, activation=None, compute_dtype=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_brgemm(compute_dtype, activation)

    def forward(self, input):
        dt, out_dt = _dtypes(self, input)
        return torch.ops.brgemm.linear(input.to(dt), self.weight, self.bias, self.activation).to(out_dt)

    def extra_repr(self):
        return super().extra_repr() + f", activation={self.activation!r}, compute_dtype={self.compute_dtype}"


def _rnn_unsupported(m):
    if getattr(m, "proj_size", 0):
        return f"proj_size={m.proj_size} (projections are not supported)"
    return None


class _Recurrent(nn.Module):
    """The recurrent modules hold PyTorch's module's parameters, names and attributes but are not
    instances of torch.nn.LSTM / GRU: torch.compile refuses to trace those (it would graph-break
    around our operators)."""

    _torch_class = _cell = None
    _unsupported = staticmethod(_rnn_unsupported)
    _ATTRIBUTES = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional",
                   "proj_size")

    def __init__(self, *args, activation="exact", compute_dtype=None, **kwargs):
        super().__init__()
        self._adopt(self._torch_class(*args, **kwargs))  # PyTorch's checks and initialisation
        self.compute_dtype = _compute_dtype_arg(compute_dtype)
        self.activation = self._gate_arg(activation)

    def _adopt(self, module):
        reason = _rnn_unsupported(module)
        if reason:
            raise ValueError(f"cannot convert {type(module).__name__}: {reason}")
        for name in self._ATTRIBUTES:
            setattr(self, name, getattr(module, name, 0))
        for name, p in module.named_parameters(recurse=False):
            self.register_parameter(name, p)
        self.train(module.training)

    @classmethod
    def from_torch(cls, module, dtype=None):
        """This class's version of ``module`` (a torch.nn.LSTM or GRU without projections) on its
        own Parameter objects; ``dtype`` as :meth:`Conv2d.from_torch`."""
        if not isinstance(module, cls._torch_class):
            raise TypeError(f"module must be a torch.nn.{cls._torch_class.__name__}, got {type(module).__name__}")
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new._adopt(module)
        new.compute_dtype = _compute_dtype_arg(dtype)
        new.activation = "exact"
        return new

    @staticmethod
    def _gate_arg(activation):
        if activation not in ("exact", "ktanh"):
            raise ValueError(f"activation must be 'exact' or 'ktanh' (the gates' tanh and sigmoid), got {activation!r}")
        return activation

    def forward(self, input, hx=None):
        packed = isinstance(input, PackedSequence)
        lengths = sorted_idx = unsorted_idx = None
        if packed:  # the packed data is sorted by decreasing length already: pad it in that order
            sorted_idx, unsorted_idx = input.sorted_indices, input.unsorted_indices
            x, lengths = pad_packed_sequence(PackedSequence(input.data, input.batch_sizes))
            batched = True
        else:
            batched = input.dim() == 3
            x = input if batched else input.unsqueeze(1)
            if self.batch_first and batched:
                x = x.transpose(0, 1)
        lstm = self._cell == "lstm"
        dirs = 2 if self.bidirectional else 1
        h0 = c0 = None
        if hx is not None:
            h0, c0 = hx if lstm else (hx, None)
            if not batched:
                h0, c0 = h0.unsqueeze(1), None if c0 is None else c0.unsqueeze(1)
            if sorted_idx is not None:
                h0, c0 = h0.index_select(1, sorted_idx), None if c0 is None else c0.index_select(1, sorted_idx)
        dt, out_dt = _dtypes(self, x)
        x = x.to(dt).contiguous()
        train = self.training and torch.is_grad_enabled()
        hs, cs = [], []
        for k in range(self.num_layers):
            outs = []
            for d in range(dirs):
                idx = k * dirs + d
                sfx = f"_l{k}" + ("_reverse" if d else "")
                w = [getattr(self, f"weight_ih{sfx}"), getattr(self, f"weight_hh{sfx}")]
                w += [getattr(self, f"bias_ih{sfx}"), getattr(self, f"bias_hh{sfx}")] if self.bias else [None, None]
                hi = None if h0 is None else h0[idx]
                if lstm:
                    y, h, c, _ = torch.ops.brgemm.lstm(x, hi, None if c0 is None else c0[idx], *w, lengths, bool(d),
                                                       self.activation, train)
                    cs.append(c)
                else:
                    y, h, _ = torch.ops.brgemm.gru(x, hi, *w, lengths, bool(d), self.activation, train)
                outs.append(y)
                hs.append(h)
            x = outs[0] if dirs == 1 else torch.cat(outs, 2)
            if self.dropout and self.training and k + 1 < self.num_layers:
                x = nn.functional.dropout(x, self.dropout, True)
        h_n = torch.stack(hs).to(out_dt)
        c_n = torch.stack(cs).to(out_dt) if lstm else None
        y = x.to(out_dt)
        if packed:
            y = pack_padded_sequence(y, lengths)
            y = PackedSequence(y.data, y.batch_sizes, sorted_idx, unsorted_idx)
            if unsorted_idx is not None:
                h_n = h_n.index_select(1, unsorted_idx)
                c_n = None if c_n is None else c_n.index_select(1, unsorted_idx)
        elif not batched:
            y, h_n, c_n = y.squeeze(1), h_n.squeeze(1), None if c_n is None else c_n.squeeze(1)
        elif self.batch_first:
            y = y.transpose(0, 1)
        return y, ((h_n, c_n) if lstm else h_n)

    def extra_repr(self):
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, bias={self.bias}, "
                f"batch_first={self.batch_first}, dropout={self.dropout}, bidirectional={self.bidirectional}, "
                f"activation={self.activation!r}, compute_dtype={self.compute_dtype}")


class LSTM(_Recurrent):
    """``torch.nn.LSTM``'s arguments, parameters and state_dict (no proj_size), computed by
    ``torch.ops.brgemm.lstm``, one operator per layer and direction. Accepts batch_first,
    unbatched input and PackedSequence. Extra keywords: ``activation="ktanh"`` computes the
    gates' tanh and sigmoid by K-TanH; ``compute_dtype`` as :class:`Conv2d`."""

    _torch_class, _cell = nn.LSTM, "lstm"


class GRU(_Recurrent):
    """``torch.nn.GRU`` computed by ``torch.ops.brgemm.gru``; as :class:`LSTM`."""

    _torch_class, _cell = nn.GRU, "gru"


class KTanh(nn.Module):
    """tanh by K-TanH (``torch.ops.brgemm.ktanh``), in place of ``torch.nn.Tanh``: absolute error
    ≤ 0.0118 for float32 input (brgemm.nn.functional)."""

    _torch_class = nn.Tanh

    def forward(self, input):
        return torch.ops.brgemm.ktanh(input)

    @classmethod
    def from_torch(cls, module, dtype=None):
        if not isinstance(module, nn.Tanh):
            raise TypeError(f"module must be a torch.nn.Tanh, got {type(module).__name__}")
        return cls()


class TaylorSoftmax(nn.Module):
    """Taylor softmax of even ``order`` along ``dim`` (``torch.ops.brgemm.taylor_softmax``), in
    place of ``torch.nn.Softmax(dim)``; not shift-invariant (brgemm.nn.functional)."""

    _torch_class = nn.Softmax

    def __init__(self, dim=None, order=2):
        super().__init__()
        self.dim, self.order = dim, order
        _fn._order(order)

    def forward(self, input):
        dim = self.dim
        if dim is None:  # torch.nn.Softmax's implicit choice
            dim = 0 if input.dim() in (0, 1, 3) else 1
        return torch.ops.brgemm.taylor_softmax(input, dim, self.order)

    @classmethod
    def from_torch(cls, module, dtype=None, order=2):
        if not isinstance(module, nn.Softmax):
            raise TypeError(f"module must be a torch.nn.Softmax, got {type(module).__name__}")
        return cls(module.dim, order)

    def extra_repr(self):
        return f"dim={self.dim}, order={self.order}"


# --- convert -------------------------------------------------------------------------------------

_EXACT = (Conv2d, Linear, LSTM, GRU)
_APPROXIMATE = (KTanh, TaylorSoftmax)


class ConversionReport:
    """What :func:`convert` did: ``swapped`` (name, from, to), ``fused`` (name of the ReLU, the
    layer whose epilogue now applies it), ``blocked`` (pairs that pass the blocked layout: a
    convolution and the convolution or global average pooling after it) and ``kept`` (name,
    type, why it was left alone)."""

    def __init__(self):
        self.swapped, self.fused, self.kept, self.blocked = [], [], [], []

    def __str__(self):
        lines = [f"swapped {len(self.swapped)} module(s), fused {len(self.fused)} ReLU(s), kept {len(self.kept)}"]
        lines += [f"  swapped  {n or '(model)'}: {a} -> {b}" for n, a, b in self.swapped]
        lines += [f"  fused    {n} into {into}" for n, into in self.fused]
        lines += [f"  blocked  {a} -> {b}" for a, b in self.blocked]
        lines += [f"  kept     {n}: {t} ({why})" for n, t, why in self.kept]
        return "\n".join(lines)

    __repr__ = __str__


def _target(module, approximate):
    """(brgemm class, None) for a module convert swaps, else (None, why not)."""
    if isinstance(module, _EXACT + _APPROXIMATE):
        return None, "already a brgemm module"
    for cls in _EXACT + (_APPROXIMATE if approximate else ()):
        if type(module) is cls._torch_class:
            reason = cls._unsupported(module) if hasattr(cls, "_unsupported") else None
            return (None, reason) if reason else (cls, None)
    if type(module) in (nn.Tanh, nn.Softmax):
        return None, "exact function kept; approximate=True swaps in K-TanH / Taylor softmax"
    for cls in _EXACT:
        if isinstance(module, cls._torch_class):
            return None, f"a subclass of {cls._torch_class.__name__} (its forward may differ)"
    return None, "no brgemm counterpart"


def _global(output_size):
    """Whether an AdaptiveAvgPool2d output size is 1 × 1."""
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    return size == (1, 1)


def convert(model, dtype=None, *, approximate=False, fuse=True, blocked=False):
    """Swaps every supported submodule of ``model`` in place for its brgemm.torch version on
    the same parameters (Conv2d with groups = 1 and zero padding, Linear, LSTM without
    projections, GRU; with ``approximate=True`` also Tanh → KTanh and Softmax → TaylorSoftmax)
    and returns a :class:`ConversionReport`. ``dtype="bfloat16"`` makes the swapped layers
    compute in bf16 (f32 master weights; results in the input's dtype). ``fuse``: a ReLU that
    directly follows a swapped Conv2d or Linear in a Sequential moves into its epilogue (the
    ReLU becomes Identity). ``blocked=True``: a swapped Conv2d whose next module in a Sequential
    (Identity modules skipped) is another swapped Conv2d, or a global average pooling
    (``AdaptiveAvgPool2d(1)``, which becomes :class:`AdaptiveAvgPool2d`), returns the blocked
    layout (N, K/bk, OH, OW, bk), so the pair skips a conversion each way in forward and
    backward; the tensors between them are then 5-D, which matters only to code that looks at
    them (hooks).
    A model that is itself supported is converted by changing its class."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _compute_dtype_arg(dtype)
    report = ConversionReport()

    def visit(module, prefix):
        for name, child in list(module.named_children()):
            full = f"{prefix}.{name}" if prefix else name
            cls, why = _target(child, approximate)
            if cls is not None:
                setattr(module, name, cls.from_torch(child, dtype))
                report.swapped.append((full, type(child).__name__, f"brgemm.torch.{cls.__name__}"))
            elif len(child._modules) and why == "no brgemm counterpart":
                visit(child, full)
            else:
                report.kept.append((full, type(child).__name__, why))
        if fuse and isinstance(module, nn.Sequential):
            kids = list(module.named_children())
            for (a, first), (b, second) in zip(kids, kids[1:]):
                if isinstance(first, (Conv2d, Linear)) and first.activation == "none" and type(second) is nn.ReLU:
                    first.activation = "relu"
                    setattr(module, b, nn.Identity())
                    full = f"{prefix}.{b}" if prefix else b
                    report.fused.append((full, f"{prefix}.{a}" if prefix else a))
                    report.kept = [k for k in report.kept if k[0] != full]
        if blocked and isinstance(module, nn.Sequential):
            kids = [(n, c) for n, c in module.named_children() if not isinstance(c, nn.Identity)]
            for (a, first), (b, second) in zip(kids, kids[1:]):
                if not isinstance(first, Conv2d):
                    continue
                if (isinstance(second, Conv2d) and first.compute_dtype == second.compute_dtype
                        and first.out_channels == second.in_channels):
                    first.blocked_output = True
                elif type(second) in (nn.AdaptiveAvgPool2d, AdaptiveAvgPool2d) and _global(second.output_size):
                    pool = AdaptiveAvgPool2d(second.output_size)
                    pool.channels = first.out_channels
                    setattr(module, b, pool)
                    first.blocked_output = True
                else:
                    continue
                report.blocked.append(tuple(f"{prefix}.{n}" if prefix else n for n in (a, b)))

    cls, _ = _target(model, approximate)
    if cls is not None and cls in _EXACT:
        swapped = cls.from_torch(model, dtype)
        model.__class__ = cls
        model.__dict__.update(swapped.__dict__)
        report.swapped.append(("", cls._torch_class.__name__, f"brgemm.torch.{cls.__name__}"))
    else:
        visit(model, "")
    return report
