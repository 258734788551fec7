"""BatchNorm2d in training mode on blocked activations (N, C/bc, H, W, bc): the operator
``batch_norm_blocked`` (statistics, normalisation, residual add and ReLU in two passes over
memory, or one when the convolution before it gathered the statistics, layers/batch_norm.h), its
backward operator, and :func:`batch_norm_train`, which calls it
for a ``torch.nn.BatchNorm2d`` and updates the module's running statistics as PyTorch does.

    out, mean, var = torch.ops.brgemm.batch_norm_blocked(input, weight, bias, eps, residual, relu, channels, moments)

- ``input``: blocked float32 or bfloat16 (padded channels zero); ``out`` has its dtype and shape,
  ``relu?((input − mean)·weight/√(var + eps) + bias + residual)``, padded channels exactly 0.
- ``weight``, ``bias``: (C,) or None (1 and 0); float32 (bfloat16 ones are widened).
- ``residual``: None or like ``input`` (same dtype and shape).
- ``channels``: C when neither weight nor bias gives it (else it must agree); by default every
  channel of the blocked tensor.
- ``moments``: None, or float64 (N, C/bc, H, 2, bc), input's per-row statistics as
  ``conv2d_moments`` returns them with it: the statistics then come from there (merged row by
  row in a fixed order) and input is read once, to normalise.
- ``mean``, ``var``: (C,) float32, the batch mean and the *biased* variance (what normalised),
  accumulated in float64; not differentiable (as ``native_batch_norm``'s saved statistics).

Autograd reaches input, weight, bias and residual (the residual's gradient is the gradient before
the ReLU). As ``torch.nn.functional.batch_norm`` in training, one value per channel
(N·H·W = 1) is an error; an empty batch gives an empty output, NaN statistics and zero gradients.
"""

import torch

from .. import _core
from ._bridge import _FLOATS, _master, _np, _op, _tensor

_SCHEMA = ("(Tensor input, Tensor? weight=None, Tensor? bias=None, float eps=1e-05, Tensor? residual=None, "
           "bool relu=False, int? channels=None, Tensor? moments=None) -> (Tensor, Tensor, Tensor)")
_BACKWARD_SCHEMA = ("(Tensor grad_output, Tensor input, Tensor? output, Tensor? weight, Tensor mean, Tensor var, "
                    "float eps, bool relu, bool residual_grad, bool input_grad=True) "
                    "-> (Tensor, Tensor, Tensor, Tensor)")


def _channels(x, weight, bias, channels):
    """C, checked against the blocked shape (N, C/bc, H, W, bc) of x and against each other."""
    blocks, bc = x.shape[1], x.shape[4]
    found = {}
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            if not isinstance(t, torch.Tensor) or t.dim() != 1:
                raise ValueError(f"{name} must be a 1-D tensor of the C channels, got "
                                 f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
            found[name] = t.shape[0]
    if channels is not None:
        if isinstance(channels, bool) or not isinstance(channels, int):
            raise TypeError(f"channels must be an int or None, got {type(channels).__name__}")
        found["channels"] = channels
    if len(set(found.values())) > 1:
        raise ValueError("weight, bias and channels disagree on the channel count: "
                         + ", ".join(f"{k}={v}" for k, v in found.items()))
    c = next(iter(found.values())) if found else blocks * bc
    if not (c >= 1 and -(-c // bc) == blocks):
        raise ValueError(f"{c} channels do not fit the blocked input {tuple(x.shape)} "
                         f"({blocks} blocks of {bc}: C must be in [{(blocks - 1) * bc + 1}, {blocks * bc}])")
    return c


def _check_blocked(x, name):
    if x.shape[4] < 1 or x.shape[4] > 64:
        raise ValueError(f"{name} must be blocked (N, C/bc, H, W, bc) with 1 ≤ bc ≤ 64, got {tuple(x.shape)}")


def _like(t, name, x):
    """t checked to have x's dtype and shape (contiguous), or None."""
    if t is None:
        return None
    t = _tensor(t, name, (x.dtype,), ndim=5)
    if tuple(t.shape) != tuple(x.shape):
        raise ValueError(f"{name} must have input's shape {tuple(x.shape)}, got {tuple(t.shape)}")
    return t


def _eps(eps):
    eps = float(eps)
    if not (eps >= 0.0 and eps != float("inf")):
        raise ValueError(f"eps must be finite and non-negative, got {eps}")
    return eps


@_op("batch_norm_blocked", _SCHEMA)
def _batch_norm_blocked(input, weight=None, bias=None, eps=1e-5, residual=None, relu=False, channels=None,
                        moments=None):
    x = _tensor(input, "input", _FLOATS, ndim=5)
    _check_blocked(x, "input")
    c = _channels(x, weight, bias, channels)
    g, b = _master(weight, "weight", (c,)), _master(bias, "bias", (c,))
    r = _like(residual, "residual", x)
    eps = _eps(eps)
    n, _, h, w, _ = x.shape
    if moments is not None:
        moments = _tensor(moments, "moments", (torch.float64,), ndim=5)
        want = (n, x.shape[1], h, 2, x.shape[4])
        if tuple(moments.shape) != want:
            raise ValueError(f"moments must be conv2d_moments' per-row statistics of input, shape {want}, "
                             f"got {tuple(moments.shape)}")
    if n * h * w == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size "
                         f"{torch.Size((n, c, h, w))} (blocked {tuple(x.shape)})")
    out = torch.empty_like(x)
    mean, var = torch.empty(c), torch.empty(c)
    if n * h * w == 0:
        return out, mean.fill_(float("nan")), var.fill_(float("nan"))
    _core.batch_norm_forward(_np(x), None if g is None else _np(g), None if b is None else _np(b), eps,
                             None if r is None else _np(r), bool(relu), _np(out), _np(mean), _np(var),
                             moments=None if moments is None else moments.numpy(), rows=h)
    return out, mean, var


@_batch_norm_blocked.register_fake
def _(input, weight=None, bias=None, eps=1e-5, residual=None, relu=False, channels=None, moments=None):
    c = weight.shape[0] if weight is not None else bias.shape[0] if bias is not None else \
        channels if channels is not None else input.shape[1] * input.shape[4]
    return torch.empty_like(input), input.new_empty((c,), dtype=torch.float32), \
        input.new_empty((c,), dtype=torch.float32)


@_op("batch_norm_blocked_backward", _BACKWARD_SCHEMA)
def _batch_norm_blocked_backward(grad_output, input, output, weight, mean, var, eps, relu, residual_grad,
                                 input_grad=True):
    """(grad_input (input's dtype; empty unless input_grad), grad_weight (C,) float32, grad_bias (C,)
    float32, grad_residual (input's dtype: the gradient before the ReLU; empty unless residual_grad))."""
    x = _tensor(input, "input", _FLOATS, ndim=5)
    _check_blocked(x, "input")
    m = _tensor(mean, "mean", (torch.float32,), ndim=1)
    v = _tensor(var, "var", (torch.float32,), ndim=1)
    c = _channels(x, None, None, m.shape[0])
    if v.shape != m.shape:
        raise ValueError(f"var must have mean's shape {tuple(m.shape)}, got {tuple(v.shape)}")
    g = _master(weight, "weight", (c,))
    gy = _like(grad_output, "grad_output", x)
    y = _like(output, "output", x) if relu else None
    if relu and y is None:
        raise ValueError("output (the forward result) is needed for the ReLU mask when relu is true")
    eps = _eps(eps)
    gx = torch.empty_like(x) if input_grad else x.new_empty((0,))
    gr = torch.empty_like(x) if residual_grad else x.new_empty((0,))
    gw, gb = torch.zeros(c), torch.zeros(c)
    if x.numel() == 0:
        return gx, gw, gb, gr
    _core.batch_norm_backward(_np(gy), _np(x), None if y is None else _np(y), bool(relu),
                              None if g is None else _np(g), _np(m), _np(v), eps, _np(gx) if input_grad else None,
                              _np(gw), _np(gb), _np(gr) if residual_grad else None)
    return gx, gw, gb, gr


@_batch_norm_blocked_backward.register_fake
def _(grad_output, input, output, weight, mean, var, eps, relu, residual_grad, input_grad=True):
    c = mean.shape[0]
    return (torch.empty_like(input) if input_grad else input.new_empty((0,)), mean.new_empty((c,)),
            mean.new_empty((c,)), torch.empty_like(input) if residual_grad else input.new_empty((0,)))


def _setup(ctx, inputs, output):
    input, weight, bias, eps, residual, relu, channels, _moments = inputs
    out, mean, var = output
    ctx.mark_non_differentiable(mean, var)
    ctx.save_for_backward(input, out if relu else None, weight, mean, var)
    ctx.eps, ctx.relu = eps, relu
    ctx.dtypes = tuple(None if t is None else t.dtype for t in (weight, bias, residual))


def _backward(ctx, grad, _grad_mean, _grad_var):
    input, out, weight, mean, var = ctx.saved_tensors
    need = ctx.needs_input_grad
    wdt, bdt, rdt = ctx.dtypes
    want_residual = rdt is not None and need[4]
    gx, gw, gb, gr = _batch_norm_blocked_backward(grad.to(input.dtype), input, out, weight, mean, var, ctx.eps,
                                                  ctx.relu, want_residual and ctx.relu, need[0])
    if want_residual:
        gr = (gr if ctx.relu else grad).to(rdt)
    return (gx if need[0] else None, gw.to(wdt) if wdt is not None and need[1] else None,
            gb.to(bdt) if bdt is not None and need[2] else None, None, gr if want_residual else None, None, None, None)


_batch_norm_blocked.register_autograd(_backward, setup_context=_setup)


def uses_batch_statistics(bn):
    """Whether ``bn`` normalises with the batch's statistics now (training, or no running ones)."""
    return bn.training or (bn.running_mean is None and bn.running_var is None)


def batch_norm_train(x, bn, channels=None, residual=None, relu=False, moments=None):
    """``bn`` (a BatchNorm2d) applied to the blocked ``x``, then ``+ residual`` and the ReLU (when
    ``relu``), as the module would on the plain tensor, running statistics included:
    ``num_batches_tracked`` counts the call and running_mean/running_var move by ``momentum``
    (None: the cumulative average 1/num_batches_tracked) towards the batch mean and the unbiased
    variance (× M/(M−1), M = N·H·W), in float64 and rounded once. Batch statistics are used in
    training or when the module has no running statistics; otherwise (eval) the running ones, by
    torch operations. ``channels``: C (default ``bn.num_features``). ``moments``: x's per-row
    statistics from conv2d_moments (then x is not read for them)."""
    c = bn.num_features if channels is None else channels
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    if not uses_batch_statistics(bn):
        return _normalize_running(x, bn, c, residual, relu)
    out, mean, var = torch.ops.brgemm.batch_norm_blocked(x, bn.weight, bn.bias, bn.eps, residual, relu, c, moments)
    count = x.shape[0] * x.shape[2] * x.shape[3]
    if bn.training and bn.track_running_stats and bn.running_mean is not None and count > 0:
        with torch.no_grad():
            dt = torch.float64
            rm, rv = bn.running_mean, bn.running_var
            rm.copy_((rm.to(dt) * (1.0 - factor) + mean.to(dt) * factor).to(rm.dtype))
            rv.copy_((rv.to(dt) * (1.0 - factor) + var.to(dt) * (count / (count - 1)) * factor).to(rv.dtype))
    return out


def _vector(v, blocks, bc, dtype):
    """A (C,) vector as (1, C/bc, 1, 1, bc), zeros in the padded channels."""
    c = v.shape[0]
    if blocks * bc != c:
        v = torch.cat([v, v.new_zeros(blocks * bc - c)])
    return v.reshape(1, blocks, 1, 1, bc).to(dtype)


def _normalize_running(x, bn, c, residual, relu):
    """Eval-mode BatchNorm with the running statistics on a blocked tensor (torch operations)."""
    blocks, bc = x.shape[1], x.shape[4]
    scale = (bn.running_var.to(torch.float64) + bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.to(torch.float64)
    shift = -bn.running_mean.to(torch.float64) * scale
    if bn.bias is not None:
        shift = shift + bn.bias.to(torch.float64)
    y = x * _vector(scale, blocks, bc, x.dtype) + _vector(shift, blocks, bc, x.dtype)
    if residual is not None:
        y = y + residual
    return torch.relu(y) if relu else y
