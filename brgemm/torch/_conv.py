"""The convolution operators: ``conv2d`` and ``conv2d_backward``, plain or blocked layout."""

import torch

from .. import _core
from .._runners.conv import F32, ConvGeometry, ConvRunner, blocked_shape, out_size
from ._bridge import (_FLOATS, _activation, _algorithm_arg, _dtype_name, _identity, _layer, _master, _np, _op,
                      _tensor, _weights_key)
from ._products import _product_grads_fake, _setup_product


def _groups_arg(groups):
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive integer, got {groups!r}")
    return groups


def _geometry(weight, stride, padding, dilation, groups=1):
    """The ConvGeometry of a (K, C/groups, R, S) weight with the operator's geometry arguments."""
    k, cg, r, s = weight.shape
    return ConvGeometry.of(cg * groups, k, (r, s), stride, padding, dilation, groups)


def _fake_out_size(input, weight, stride, padding, dilation):
    """(OH, OW) from sizes that may be symbolic (a fake implementation's)."""
    g = ConvGeometry.of(1, 1, 1, stride, padding, dilation)
    return out_size(input.shape[2], input.shape[3], weight.shape[2:], g.stride, g.padding, g.dilation)


def _conv_args(input, weight, bias, stride, padding, dilation, groups):
    """(x, weight f32, bias f32, geometry, (OH, OW), (N, H, W)) for a plain (N, C, H, W) or a
    blocked (N, C/bc, H, W, bc) input; weight (K, C/groups, R, S)."""
    x = _tensor(input, "input", _FLOATS, ndim=(4, 5))
    w = _tensor(weight, "weight", _FLOATS, ndim=4)
    groups = _groups_arg(groups)
    c = w.shape[1] * groups
    per = f" with groups={groups}" if groups != 1 else ""
    if x.dim() == 5:
        bc = _core.conv_block(c)
        if x.shape[1] != -(-c // bc) or x.shape[4] != bc:
            raise ValueError(f"input is blocked as {tuple(x.shape)}; weight {tuple(w.shape)}{per} needs blocks of {bc}: "
                             f"(N, {-(-c // bc)}, H, W, {bc})")
    elif x.shape[1] != c:
        raise ValueError(f"input has {x.shape[1]} channels, weight {tuple(w.shape)}{per} expects {c}")
    n, h, wd = x.shape[0], x.shape[2], x.shape[3]
    geo = _geometry(w, stride, padding, dilation, groups)
    return x, _master(w, "weight", w.shape), _master(bias, "bias", (w.shape[0],)), geo, geo.out_size(h, wd), (n, h, wd)


def _conv_layer(dt, weight, geo, activation, algorithm="direct"):  # weight: the caller's tensor, as _linear_layer
    return _layer(("conv", dt, geo, activation, weight.data_ptr(), algorithm),
                  lambda: ConvRunner(dt, geo, activation, scratch=8, algorithm=algorithm))


def _op_algorithm(algorithm, dt):
    """The operators' algorithm (_algorithm_arg, tiles allowed), float32 only: a bfloat16 call
    runs direct whatever it asks, as auto would pick."""
    return _algorithm_arg(algorithm, tiles=True) if dt == "float32" else "direct"


def _conv_output_shape(n, k, oh, ow, blocked):
    return blocked_shape(n, k, _core.conv_block(k), oh, ow) if blocked else (n, k, oh, ow)


_CONV_SCHEMA = ("(Tensor input, Tensor weight, Tensor? bias=None, int[2] stride=1, int[] padding=[0, 0], "
                'int[2] dilation=1, int groups=1, str activation="none", bool blocked_output=False, '
                'Tensor? residual=None, str algorithm="direct") -> Tensor')


def _residual_arg(residual, out):
    if residual is None:
        return None
    r = _tensor(residual, "residual", (out.dtype,), ndim=5)
    if tuple(r.shape) != tuple(out.shape):
        raise ValueError(f"residual must have the blocked output's shape {tuple(out.shape)}, got {tuple(r.shape)}")
    return r


@_op("conv2d", _CONV_SCHEMA)
def _conv2d(input, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, activation="none",
            blocked_output=False, residual=None, algorithm="direct"):
    """input: plain (N, C, H, W) or blocked (N, C/bc, H, W, bc); weight (K, C/groups, R, S) (groups
    = C = K: depthwise); the output is plain, or blocked with blocked_output (what a following
    brgemm conv2d takes without converting). residual
    (blocked_output only): a tensor of the output's shape and dtype added before the activation,
    act(conv + bias + residual), as a ResNet block ends. algorithm: "direct", or "auto" /
    "winograd" for stride-1 3×3 float32 layers (brgemm.nn.Conv2d's; forward and input gradient)."""
    x, w, b, geo, (oh, ow), (n, h, wd) = _conv_args(input, weight, bias, stride, padding, dilation, groups)
    act = _activation(activation)
    if residual is not None and not blocked_output:
        raise ValueError("residual needs blocked_output=True (it is added in the blocked layout)")
    out = torch.empty(_conv_output_shape(n, w.shape[0], oh, ow, blocked_output), dtype=x.dtype)
    r = _residual_arg(residual, out)
    if out.numel() == 0:
        return out
    dt = _dtype_name(x)
    e = _conv_layer(dt, weight, geo, act, _op_algorithm(algorithm, dt))
    with e.lock:
        e.forward(_np(x), _np(out), _np(w), None if b is None else _np(b), x_key=_identity(x),
                  add=None if r is None else _np(r), version=_weights_key(weight, bias))
        if not blocked_output:
            e.scratch.holds["y"] = _identity(out)
    return out


@_op("conv2d_moments", "(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[] padding, int[2] dilation, "
                        'int groups=1, str algorithm="direct") -> (Tensor, Tensor)')
def _conv2d_moments(input, weight, bias, stride, padding, dilation, groups=1, algorithm="direct"):
    """conv2d(..., blocked_output=True) and the statistics a BatchNorm after it needs, gathered
    while each output row is in cache: (out, moments), moments float64 (N, K/bk, OH, 2, bk), each
    row's per-channel mean and Σ (y − mean)² (batch_norm_blocked(..., moments=) merges them).
    Differentiable in out only (as conv2d); moments is not."""
    x, w, b, geo, (oh, ow), (n, h, wd) = _conv_args(input, weight, bias, stride, padding, dilation, groups)
    out = torch.empty(_conv_output_shape(n, w.shape[0], oh, ow, True), dtype=x.dtype)
    moments = torch.empty((n, out.shape[1], oh, 2, out.shape[4]), dtype=torch.float64)
    if out.numel() == 0:
        return out, moments
    dt = _dtype_name(x)
    e = _conv_layer(dt, weight, geo, "none", _op_algorithm(algorithm, dt))
    with e.lock:
        e.forward(_np(x), _np(out), _np(w), None if b is None else _np(b), x_key=_identity(x),
                  version=_weights_key(weight, bias), moments=moments.numpy())
    return out, moments


@_conv2d_moments.register_fake
def _(input, weight, bias, stride, padding, dilation, groups=1, algorithm="direct"):
    oh, ow = _fake_out_size(input, weight, stride, padding, dilation)
    out = input.new_empty(_conv_output_shape(input.shape[0], weight.shape[0], oh, ow, True))
    return out, input.new_empty((input.shape[0], out.shape[1], oh, 2, out.shape[4]), dtype=torch.float64)


def _setup_moments(ctx, inputs, output):
    input, weight, bias = inputs[:3]
    out, moments = output
    ctx.mark_non_differentiable(moments)
    ctx.save_for_backward(input, weight, bias, out)
    ctx.args = inputs[3:]


def _conv2d_moments_grad(ctx, grad, _grad_moments):
    input, weight, bias, output = ctx.saved_tensors
    stride, padding, dilation, groups, algorithm = ctx.args
    need = ctx.needs_input_grad
    gx, gw, gb = _conv2d_backward(grad, input, weight, bias, output, stride, padding, dilation, "none", need[0],
                                  groups, algorithm)
    return (gx.to(input.dtype) if need[0] else None, gw.to(weight.dtype) if need[1] else None,
            gb.to(bias.dtype) if bias is not None and need[2] else None, None, None, None, None, None)


def conv2d_inference(x, weight, bias, geo, activation, residual, out_buffer=None, algorithm="direct"):
    """conv2d(x, ..., blocked_output=True, residual) for a fused stage of an optimized model in
    inference (no autograd, not traced), without the operator's dispatch: weight and bias are
    the stage's float32 tensors and geo its ConvGeometry, checked when it was built; x (blocked)
    and the residual are checked here. ``out_buffer(shape, dtype)``: where the output goes (a
    buffer reused from call to call), instead of a new tensor. Returns (out, the algorithm it
    ran: brgemm.nn.Conv2d.algorithm_used's string)."""
    x = _tensor(x, "input", _FLOATS, ndim=5)
    c, k = geo.in_channels, geo.out_channels
    bc = _core.conv_block(c)
    if x.shape[1] != -(-c // bc) or x.shape[4] != bc:
        raise ValueError(f"input is blocked as {tuple(x.shape)}; {c} channels need blocks of {bc}")
    n, h, wd = x.shape[0], x.shape[2], x.shape[3]
    oh, ow = geo.out_size(h, wd)
    shape = _conv_output_shape(n, k, oh, ow, True)
    out = torch.empty(shape, dtype=x.dtype) if out_buffer is None else out_buffer(shape, x.dtype)
    r = _residual_arg(residual, out)
    if out.numel() == 0:
        return out, None
    dt = _dtype_name(x)
    e = _conv_layer(dt, weight, geo, activation, _op_algorithm(algorithm, dt))
    with e.lock:
        e.forward(_np(x), _np(out), _np(weight), None if bias is None else _np(bias), add=None if r is None else _np(r),
                  version=_weights_key(weight, bias))
        used = e.cv.algorithm_used
    return out, used


@_conv2d.register_fake
def _(input, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, activation="none",
      blocked_output=False, residual=None, algorithm="direct"):
    oh, ow = _fake_out_size(input, weight, stride, padding, dilation)
    return input.new_empty(_conv_output_shape(input.shape[0], weight.shape[0], oh, ow, blocked_output))


@_op("conv2d_backward", "(Tensor grad_output, Tensor input, Tensor weight, Tensor? bias, Tensor output, int[2] stride, "
                        'int[] padding, int[2] dilation, str activation, bool input_grad, int groups=1, '
                        'str algorithm="direct") -> (Tensor, Tensor, Tensor)')
def _conv2d_backward(grad_output, input, weight, bias, output, stride, padding, dilation, activation, input_grad,
                     groups=1, algorithm="direct"):
    """(∂input or an empty tensor, ∂weight, ∂bias or an empty tensor) of conv2d, in float32;
    grad_output has the output's layout, ∂input the input's (plain or blocked)."""
    x, w, b, geo, (oh, ow), (n, h, wd) = _conv_args(input, weight, bias, stride, padding, dilation, groups)
    act = _activation(activation)
    k = w.shape[0]
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
    e = _conv_layer(_dtype_name(x), weight, geo, act, _op_algorithm(algorithm, _dtype_name(x)))
    dt = e.act_dtype
    with e.lock:
        e.refresh(_np(w), None if b is None else _np(b), _weights_key(weight, bias))  # as the forward packed them
        xb = e.blocked("x", _np(x), e.bc, dt, _identity(x), reuse=True)
        if act != "none":  # the ReLU mask
            y = _tensor(output, "output", (x.dtype,), ndim=(4, 5))
            yb = e.blocked("y", _np(y), e.bk, dt, _identity(y), reuse=True)
        else:  # not read without an activation
            yb = e.scratch.get("y", blocked_shape(n, k, e.bk, oh, ow), dt)
        gyb = e.blocked("gy", _np(g), e.bk, dt if g.dtype == torch.bfloat16 else F32)  # bf16 ∂y as it is
        e.backward(n, h, wd, gyb, yb, None, xb, _np(gx) if input_grad else None, _np(gw),
                   None if b is None else _np(gb), False)
    return gx, gw, gb


@_conv2d_backward.register_fake
def _(grad_output, input, weight, bias, output, stride, padding, dilation, activation, input_grad, groups=1,
      algorithm="direct"):
    return _product_grads_fake(input, weight, bias, input_grad)


def _conv2d_grad(ctx, grad):
    input, weight, bias, output = ctx.saved_tensors
    stride, padding, dilation, groups, activation, _, residual_dtype, algorithm = ctx.args
    need = ctx.needs_input_grad
    gx, gw, gb = _conv2d_backward(grad, input, weight, bias, output, stride, padding, dilation, activation, need[0],
                                  groups, algorithm)
    gr = None
    if residual_dtype is not None and need[9]:  # the residual's gradient is the pre-activation's
        mask = {"relu": lambda y: y > 0, "relu6": lambda y: (y > 0) & (y < 6)}.get(activation)
        gr = (grad * mask(output) if mask else grad).to(residual_dtype)
    return (gx.to(input.dtype) if need[0] else None, gw.to(weight.dtype) if need[1] else None,
            gb.to(bias.dtype) if bias is not None and need[2] else None, None, None, None, None, None, None, gr, None)


def _setup_conv(ctx, inputs, output):
    _setup_product(ctx, inputs, output)
    *rest, residual, algorithm = ctx.args
    ctx.args = (*rest, None if residual is None else residual.dtype, algorithm)  # all its gradient needs


_conv2d.register_autograd(_conv2d_grad, setup_context=_setup_conv)
_conv2d_moments.register_autograd(_conv2d_moments_grad, setup_context=_setup_moments)


