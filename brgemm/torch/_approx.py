"""The approximations as operators: ``ktanh`` and ``taylor_softmax`` with their backward operators."""

import numpy as np
import torch

from ..nn import functional as _fn
from ._bridge import _BF16, _F32, _FLOATS, _np, _op, _tensor


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


