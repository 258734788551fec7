"""int8 inference operators: ``quantized_linear`` and ``quantized_conv2d``."""

import torch

from ..nn.conv import QuantizedConv2d as _NpQuantizedConv2d
from ..nn.linear import QuantizedLinear as _NpQuantizedLinear
from ._bridge import _F32, _activation, _layer, _master, _np, _op, _tensor
from ._conv import _conv_out, _pads, _pair


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


