"""The product operators: ``gemm``, ``batch_reduce`` and ``linear`` (with ``linear_backward``)."""

import torch

from .. import _api
from .._runners.linear import LinearRunner
from ._bridge import _F32, _FLOATS, _activation, _dtype_name, _identity, _layer, _master, _np, _op, _tensor, _weights_key


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
                  lambda: LinearRunner(dt, in_f, out_f, activation, scratch=8))


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
            blocked = e.forward(_np(x2), _np(out), _np(w), None if b is None else _np(b), x_key=_identity(x),
                                version=_weights_key(weight, bias))
            out = out.reshape(*x.shape[:-1], out_f)
            if blocked:
                e.scratch.holds["y"] = _identity(out)  # as the backward will see it
        return out
    return out.reshape(*x.shape[:-1], out_f)


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
            # as the forward packed them: no repacking
            e.refresh(_np(w), None if b is None else _np(b), _weights_key(weight, bias))
            e.backward(_np(x2), _np(y) if act != "none" else None, _np(g),
                       _np(gx).reshape(n, in_f) if input_grad else None, _np(gw), _np(gb) if has_bias else None,
                       x_key=_identity(x), y_key=_identity(output))
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


