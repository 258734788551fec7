"""The recurrent operators: ``lstm`` and ``gru`` (one layer, one direction) and their backward
operators, with the pool of workspaces they hand to autograd."""

import sys
import threading

import numpy as np
import torch

from .._runners.rnn import RNNRunner
from ._bridge import _F32, _FLOATS, _dtype_name, _layer, _master, _np, _op, _tensor, _weights_key


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
    return _layer(("rnn",) + args + (w_ih.data_ptr(),), lambda: RNNRunner(*args))


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
            e.refresh(_np(w_ih), _np(w_hh), *((None, None) if b_ih is None else (_np(b_ih), _np(b_hh))),
                      version=_weights_key(weight_ih, weight_hh, bias_ih, bias_hh))
            e.rnn.forward(t, n, _np(x), None if ln is None else _np(ln), None if h0 is None else _np(h0),
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
        e.refresh(_np(w_ih), _np(w_hh), *((None, None) if b_ih is None else (_np(b_ih), _np(b_hh))),
                  version=_weights_key(weight_ih, weight_hh, bias_ih, bias_hh))
        e.rnn.backward_from(t, n, _np(x), None if ln is None else _np(ln), _np(ws), None if dy is None else _np(dy),
                            0, None if dhT is None else _np(dhT), None if dcT is None else _np(dcT), _np(dx), False,
                            _np(dh0), _np(dc0) if cell == "lstm" else None, _np(grads[0]), _np(grads[1]),
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


