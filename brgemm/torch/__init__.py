"""brgemm inside PyTorch: the kernels as operators in the ``torch.ops.brgemm`` namespace (with
autograd and fake implementations, so ``torch.compile`` and ``opcheck`` see through them),
drop-in modules, and :func:`convert`, which swaps a model's layers for them.

This is the only module of the package that imports torch (``import brgemm`` does not).

Operators (each calls the pybind11 core on the tensors' memory: CPU, made contiguous when they
are not; bfloat16 tensors are viewed as ml_dtypes.bfloat16, not converted):

- ``gemm(A, B)``, ``batch_reduce(A, B)`` (Σ_i A[i] @ B[i]): float32 or bfloat16.
- ``linear(input, weight, bias=None, activation="none")`` and ``conv2d(input, weight,
  bias=None, stride=1, padding=[0, 0], dilation=1, groups=1, activation="none")`` in
  ``torch.nn.functional``'s argument order, with ``linear_backward`` and ``conv2d_backward``
  (conv2d: any ``groups``; groups = C = K, depthwise, is a per-channel stencil, not a BRGEMM);
  ``activation="relu"`` fuses a ReLU into the product's epilogue. The input's dtype picks the
  path (float32, or bfloat16 products with float32 accumulation); weights are float32 masters
  (bfloat16 ones are widened).
- ``lstm``, ``gru``: one layer and one direction each, returning a workspace tensor that
  their backward operators (``lstm_backward``, ``gru_backward``) read.
- ``ktanh(x)``, ``taylor_softmax(x, dim=-1, order=2)`` and their backward operators.
- ``dropout(x, p, seed)`` (float32): the mask a hash of (seed, position), so its backward is the
  same operator on ∂y and nothing is kept (``_dropout``; the Dropout module draws the seeds).
- ``quantized_linear``, ``quantized_conv2d``: uint8 activations × int8 weights with one
  scale per output channel (inference only).
- ``max_pool2d_blocked(input, kernel_size, stride, padding)`` (float32, bfloat16 or uint8) and
  ``global_avg_pool_blocked(input, channels)`` (→ plain (N, C)) on the blocked layout, with
  their backward operators, and ``global_avg_pool_blocked_u8`` (uint8 in, dequantized float32
  out) (``_pool``).

The operators check their tensors and hand numpy views of them to the runners brgemm.nn uses
too (brgemm/_runners: one per layer kind), kept per (geometry, weight tensor): a call repacks
only when the weights' bytes differ from what was packed last (one parallel comparison), so
training steps and in-place edits are always seen.

Files: ``_bridge`` (tensor checks, numpy views, the runners per weight tensor), the operators
by family (``_products``: gemm, batch_reduce, linear; ``_conv``; ``_rnn``; ``_approx``: K-TanH
and Taylor softmax; ``_dropout``; ``_int8``), ``_modules`` (the nn.Modules) and ``_convert``; whole networks:
``_network`` (optimize), ``_fused`` (its fused convolution), ``_norm``, ``_pool``, ``_layout`` and
``_quantize`` (quantize: int8 inference of an optimized network); ``_prune`` (prune: magnitude
pruning of a model's layers in place, the masks held through training).
"""

# Importing the operator files registers torch.ops.brgemm.*; the modules call them by that name.
from . import _approx, _conv, _dropout, _int8, _layout, _norm, _pool, _products, _rnn  # noqa: F401
from ._convert import ConversionReport, convert
from ._network import OptimizationReport, optimize
from ._quantize import QuantizedConv2d, quantize
from ._modules import GRU, LSTM, AdaptiveAvgPool2d, Conv2d, Dropout, KTanh, Linear, TaylorSoftmax
from ._prune import prune, sparsity

__all__ = ["Conv2d", "Linear", "LSTM", "GRU", "Dropout", "KTanh", "TaylorSoftmax", "AdaptiveAvgPool2d", "convert",
           "ConversionReport", "optimize", "OptimizationReport", "quantize", "QuantizedConv2d", "prune", "sparsity"]

# The public classes say they are brgemm.torch's, as before the package was split: models pickled
# with torch.save then load again, and reprs and type checks by module name stay the same.
for _cls in (Conv2d, Linear, LSTM, GRU, KTanh, TaylorSoftmax, AdaptiveAvgPool2d, ConversionReport,
             OptimizationReport, QuantizedConv2d):
    _cls.__module__ = __name__
del _cls
