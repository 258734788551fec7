"""The layout operators: ``to_blocked`` (N, C, H, W) → (N, C/bc, H, W, bc) and ``from_blocked``
back, each the other's gradient. A network optimized by :func:`brgemm.torch.optimize` converts
once on the way in and once on the way out (and in front of modules it does not know)."""

import torch

from .. import _core
from ._bridge import _FLOATS, _np, _op, _tensor


def _blocked_shape(n, c, h, w):
    bc = _core.conv_block(c)
    return (n, -(-c // bc), h, w, bc)


def _blocked_dtype(dtype, x):
    if dtype is None:
        return x.dtype
    if dtype not in _FLOATS:
        raise ValueError(f"dtype must be torch.float32, torch.bfloat16 or None (the input's), got {dtype}")
    return dtype


@_op("to_blocked", "(Tensor input, ScalarType? dtype=None) -> Tensor")
def _to_blocked(input, dtype=None):
    """(N, C, H, W) float32 or bfloat16 (any memory format; channels_last read as it is, without
    an NCHW copy) → blocked, padded channels zero; in ``dtype`` (float32 or bfloat16, rounded to
    nearest even in the same pass; default the input's)."""
    x = _tensor(input, "input", _FLOATS, ndim=4, channels_last=True)
    n, c, h, w = x.shape
    out = torch.empty(_blocked_shape(n, c, h, w), dtype=_blocked_dtype(dtype, x))
    if out.numel():
        _core.conv_to_blocked(_np(x), _np(out))
    return out


@_to_blocked.register_fake
def _(input, dtype=None):
    n, c, h, w = input.shape
    return input.new_empty(_blocked_shape(n, c, h, w), dtype=_blocked_dtype(dtype, input))


@_op("from_blocked", "(Tensor input, int channels) -> Tensor")
def _from_blocked(input, channels):
    """Blocked (N, C/bc, H, W, bc) → (N, channels, H, W), the padded channels dropped."""
    x = _tensor(input, "input", _FLOATS, ndim=5)
    if not isinstance(channels, int) or channels < 1 or _blocked_shape(1, channels, 1, 1)[1::3] != (x.shape[1],
                                                                                                  x.shape[4]):
        raise ValueError(f"channels={channels!r} does not fit the blocked input {tuple(x.shape)}")
    n, _, h, w, _ = x.shape
    out = torch.empty((n, channels, h, w), dtype=x.dtype)
    if out.numel():
        _core.conv_from_blocked(_np(x), _np(out))
    return out


@_from_blocked.register_fake
def _(input, channels):
    return input.new_empty((input.shape[0], channels, input.shape[2], input.shape[3]))


def _to_blocked_grad(ctx, grad):
    return _from_blocked(grad, ctx.channels).to(ctx.dtype), None


def _to_blocked_setup(ctx, inputs, output):
    ctx.channels, ctx.dtype = inputs[0].shape[1], inputs[0].dtype


def _from_blocked_grad(ctx, grad):
    return _to_blocked(grad), None


_to_blocked.register_autograd(_to_blocked_grad, setup_context=_to_blocked_setup)
_from_blocked.register_autograd(_from_blocked_grad, setup_context=lambda ctx, inputs, output: None)
