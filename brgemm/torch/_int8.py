"""int8 inference operators: ``quantized_linear`` and ``quantized_conv2d``."""

import torch

from .._runners.quantized import QuantizedConvRunner, QuantizedLinearRunner, quantization_arg
from ._bridge import _F32, _activation, _layer, _master, _np, _op, _tensor, _weights_key
from ._conv import _fake_out_size, _geometry


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
        q = quantization_arg(input_scale, input_zero_point, output_scale, output_zero_point)
        e = _layer(("qlinear", w.shape[1], w.shape[0], w.data_ptr()),
                   lambda: QuantizedLinearRunner(w.shape[1], w.shape[0]))
        with e.lock:
            e.refresh(_np(w), _np(ws), None if b is None else _np(b), q, None if act == "none" else act, out_dtype,
                      _weights_key(weight, weight_scale, bias))
            e.forward(_np(x2), _np(out), q)
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
    geo = _geometry(w, stride, padding, dilation)
    oh, ow = geo.out_size(x.shape[2], x.shape[3])
    odt = _out_dtype(out_dtype)
    act = _activation(activation)
    out = torch.empty((x.shape[0], w.shape[0], oh, ow), dtype=odt)
    if out.numel():
        q = quantization_arg(input_scale, input_zero_point, output_scale, output_zero_point)
        e = _layer(("qconv", geo, act, out_dtype, w.data_ptr()),
                   lambda: QuantizedConvRunner(geo, act, out_dtype, scratch=8))
        with e.lock:
            e.refresh(_np(w), _np(ws), None if b is None else _np(b), q, _weights_key(weight, weight_scale, bias))
            e.forward(_np(x), _np(out), q[0], q[1])
    return out


@_quantized_conv2d.register_fake
def _(input, weight, weight_scale, bias, stride, padding, dilation, input_scale, input_zero_point, output_scale=1.0,
      output_zero_point=0, out_dtype="float32", activation="none"):
    oh, ow = _fake_out_size(input, weight, stride, padding, dilation)
    return input.new_empty((input.shape[0], weight.shape[0], oh, ow), dtype=_out_dtype(out_dtype))


