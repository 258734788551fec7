"""DFP-16 inside PyTorch: the autograd functions behind ``brgemm.torch.Conv2d`` and ``Linear``
with ``compute_dtype="dfp16"`` (``convert(model, dtype="dfp16")``). Each module owns the runner
brgemm.nn's dfp16 layers use (brgemm/_runners/dfp.py: int16 mantissas with one exponent per
tensor, exact int32 sums per batch element, float32 results); the weights stay the module's
float32 Parameters, compared with what was packed at every call. A module's backward reads the
x mantissas its last forward kept: it must follow that forward (as in a training step)."""

import numpy as np
import torch

from .._runners.conv import ConvGeometry
from .._runners.dfp import DFPConvRunner, DFPLinearRunner


def _np(t):
    return t.detach().contiguous().to(torch.float32).numpy()


def _conv_runner(module):
    key = (tuple(module.weight.shape), module.stride, module._padding4_tuple(), module.dilation, module.activation)
    if getattr(module, "_dfp", None) is None or module._dfp[0] != key:
        k, c, r, s = module.weight.shape
        geo = ConvGeometry.of(c, k, (r, s), module.stride, module._padding4_tuple(), module.dilation)
        module._dfp = (key, DFPConvRunner(geo, module.activation), [0])
    return module._dfp[1], module._dfp[2]


class _Conv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, module):
        runner, calls = _conv_runner(module)
        xn = _np(x)
        n, _, h, w = xn.shape
        oh, ow = runner.geometry.out_size(h, w)
        y = np.empty((n, weight.shape[0], oh, ow), np.float32)
        with runner.lock:
            _, yb, _ = runner.forward(xn, y, _np(weight), None if bias is None else _np(bias))
            calls[0] += 1
            ctx.saved = (module, calls[0], (n, h, w), yb.copy() if module.activation == "relu" else yb)
        return torch.from_numpy(y)

    @staticmethod
    def backward(ctx, grad):
        module, call, (n, h, w), yb = ctx.saved
        runner, calls = _conv_runner(module)
        if calls[0] != call:
            raise RuntimeError("a dfp16 Conv2d's backward reads the x of its last forward: call backward "
                               "before the module's next forward")
        with runner.lock:
            gyb = runner.blocked("gy", _np(grad), runner.bk, np.float32)
            gx = np.empty((n, module.in_channels, h, w), np.float32) if ctx.needs_input_grad[0] else None
            wg = np.empty(tuple(module.weight.shape), np.float32)
            bg = np.empty(module.out_channels, np.float32) if module.bias is not None else None
            runner.backward(n, h, w, gyb, yb, None, None, gx, wg, bg, False)
        return (None if gx is None else torch.from_numpy(gx), torch.from_numpy(wg),
                None if bg is None else torch.from_numpy(bg), None)


def conv2d(module, x):
    """module(x) for a brgemm.torch.Conv2d with compute_dtype "dfp16" (x: (N, C, H, W))."""
    if x.dim() != 4:
        raise ValueError(f"input must be (N, C, H, W) for compute_dtype='dfp16', got {x.dim()}-D")
    return _Conv.apply(x, module.weight, module.bias, module).to(x.dtype)


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, module):
        if getattr(module, "_dfp", None) is None or module._dfp[0] != module.activation:
            module._dfp = (module.activation, DFPLinearRunner(module.in_features, module.out_features,
                                                              module.activation))
        runner = module._dfp[1]
        xn = _np(x)
        y = np.empty((xn.shape[0], module.out_features), np.float32)
        runner.forward(xn, _np(weight), None if bias is None else _np(bias), y, True)
        ctx.saved = (module, runner.saved)
        return torch.from_numpy(y)

    @staticmethod
    def backward(ctx, grad):
        module, saved = ctx.saved
        runner = module._dfp[1]
        runner.saved = saved  # this call's x and W mantissas (a Linear keeps them per call)
        wg = np.empty(tuple(module.weight.shape), np.float32)
        bg = np.empty(module.out_features, np.float32) if module.bias is not None else None
        gx = np.empty((saved[2].shape[0], module.in_features), np.float32) if ctx.needs_input_grad[0] else None
        runner.backward(_np(grad), wg, bg, False, gx)
        return (None if gx is None else torch.from_numpy(gx), torch.from_numpy(wg),
                None if bg is None else torch.from_numpy(bg), None)


def linear(module, x):
    """module(x) for a brgemm.torch.Linear with compute_dtype "dfp16" (x: (N, in) or (..., in))."""
    lead = x.shape[:-1]
    y = _Linear.apply(x.reshape(-1, x.shape[-1]), module.weight, module.bias, module)
    return y.reshape(*lead, module.out_features).to(x.dtype)
