"""Fully-connected layers on the BRGEMM: :class:`Linear` and :class:`MLP`, numpy in and out.

Parameters follow PyTorch's conventions (``weight`` shaped (out, in), ``bias`` (out,)) and are
plain float32 numpy arrays that the layer owns: write them in place (``layer.weight[...] = w``)
or assign new ones, and the next forward packs them again (an exact comparison with what was
packed last finds the change; a forward that follows no read of the attributes and while no
reference to the arrays is kept elsewhere knows they are unchanged without comparing:
_parameters.OwnedArrays). Gradients accumulate into ``weight_grad`` and ``bias_grad``, as
in PyTorch, until :meth:`zero_grad`.

Between the layers of an MLP the activations stay blocked, ``[N/bn][C/bc][bn][bc]``; plain
(N, features) arrays exist only at its input and output. Each product is one BRGEMM call per
block of its result (layers/linear.cpp).
"""

import math

import numpy as np

from .. import _core
from .._api import Epilogue
from .._args import activation_arg, dtype_arg, positive_int
from .._quantize import QParams, quantize, quantize_per_channel, split_outliers
from .._runners.dfp import DFPLinearRunner
from .._runners.linear import LinearRunner
from .._runners.quantized import QuantizedLinearRunner
from . import functional
from ._parameters import Parameters, QuantizedIO
from ._pruning import Prunable


def _rows_arg(x, name, features):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of float32 or bfloat16, got {type(x).__name__}")
    if x.ndim != 2 or x.shape[1] != features:
        raise ValueError(f"{name} must have shape (N, {features}), got {x.shape}")
    if x.shape[0] < 1:
        raise ValueError(f"{name} must have at least one row")
    return x


def _out_arg(out, shape, dtype, name="out"):
    if out is None:
        return np.empty(shape, dtype)
    if not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != dtype:
        raise ValueError(f"{name} must be a {np.dtype(dtype).name} array of shape {shape}")
    return out


class _Chain:
    """The blocked buffers of a chain of layers for one batch size: activations acts[i] (input of
    layer i, output of layer i−1), pre-activations zs[i] where a derivative needs them, and the
    f32 gradients of every activation."""

    def __init__(self, layers, n):
        self.n = n
        self.bn = _core.fc_row_block(n)
        self.sizes = [layers[0].in_features] + [l.out_features for l in layers]
        self.blocks = [layers[0]._runner.bc] + [l._runner.bk for l in layers]
        act_dtype = layers[0]._act_dtype
        self.acts = [np.empty(self._elems(i), act_dtype) for i in range(len(self.sizes))]
        self.zs = [np.empty(self._elems(i + 1), np.float32) if l._runner.needs_z else None
                   for i, l in enumerate(layers)]
        self.grads = [np.empty(self._elems(i), np.float32) for i in range(len(self.sizes))]
        self.ready = False  # a training forward has filled acts and zs

    def _elems(self, i):
        bn, b = self.bn, self.blocks[i]
        return -(-self.n // bn) * bn * (-(-self.sizes[i] // b) * b)

    def forward(self, layers, x, out, training):
        if len(layers) == 1:  # one call into C++ (Linear): block, compute, unblock
            layer = layers[0]
            token = layer._owned.token()   # before the arrays are referenced below
            layer._runner.forward(x, out, layer._weight, layer._bias, version=token,
                                  buffers=(self.acts[0], self.acts[1], self.zs[0] if training else None))
            self.ready = training
            return out
        _core.fc_to_blocked(x, self.acts[0], self.bn, self.blocks[0])
        for i, layer in enumerate(layers):
            token = layer._owned.token()
            layer._runner.refresh(layer._weight, layer._bias, token)
            layer._runner.fc.forward(self.n, self.bn, self.acts[i], self.acts[i + 1], self.zs[i] if training else None)
        _core.fc_from_blocked(self.acts[-1], self.bn, self.blocks[-1], out)
        self.ready = training
        return out

    def backward(self, layers, grad_out, out):
        if not self.ready:
            raise RuntimeError("backward needs a forward of the same batch size in training mode first")
        _core.fc_to_blocked(grad_out, self.grads[-1], self.bn, self.blocks[-1])
        for i in reversed(range(len(layers))):
            layer = layers[i]
            layer._runner.fc.backward(self.n, self.bn, self.grads[i + 1], self.acts[i + 1], self.zs[i], self.acts[i],
                                      self.grads[i] if i > 0 or out is not None else None, layer._weight_grad,
                                      layer._bias_grad, not layer._grad_zero)
            layer._grad_zero = False
        if out is not None:
            _core.fc_from_blocked(self.grads[0], self.bn, self.blocks[0], out)
        return out


class _Trainable:
    """What Linear and MLP share: the chain of layers, modes, gradients and the SGD step."""

    training = True

    def _chain_for(self, n):
        if self._chain is None or self._chain.n != n:
            self._chain = _Chain(self._layers, n)
        return self._chain

    def forward(self, x, out=None):
        """y = the layers applied to x, an (N, in_features) float32 or bfloat16 array. The result
        has the layers' dtype (float32 or ml_dtypes.bfloat16); ``out`` may give its array."""
        first, last = self._layers[0], self._layers[-1]
        x = _rows_arg(x, "x", first.in_features)
        out = _out_arg(out, (x.shape[0], last.out_features), first._act_dtype)
        return self._chain_for(x.shape[0]).forward(self._layers, x, out, self.training)

    __call__ = forward

    def backward(self, grad_out, input_grad=True, out=None):
        """From grad_out = ∂loss/∂y (N, out_features), float32 or bfloat16, of the last forward:
        accumulates every ``weight_grad`` and ``bias_grad`` and returns ∂loss/∂x (float32), or None
        when ``input_grad`` is False (the input needs no gradient: one product fewer)."""
        last = self._layers[-1]
        grad_out = _rows_arg(grad_out, "grad_out", last.out_features)
        chain = self._chain
        if chain is None or chain.n != grad_out.shape[0]:
            raise RuntimeError("backward needs a forward of the same batch size in training mode first")
        if input_grad:
            out = _out_arg(out, (chain.n, self._layers[0].in_features), np.float32)
        return chain.backward(self._layers, grad_out, out if input_grad else None)

    def train(self, mode=True):
        """Training mode (the default) keeps what backward needs; eval mode fuses every activation
        into the product's epilogue."""
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        """Sets the gradients to zero. Lazily: the next backward writes them instead of adding to
        them, and reading them before that fills them with zeros."""
        for layer in self._layers:
            layer._grad_zero = True

    def apply_sgd(self, lr, stochastic_rounding=False):
        """One SGD step on the f32 master parameters, ``p −= lr · p_grad``, then the packed copies
        are rebuilt. For bfloat16 layers ``stochastic_rounding=True`` rounds the bf16 copies of
        the weights up or down at random with the probabilities that make the rounding unbiased,
        so that updates smaller than a bf16 step still move the weights on average (the default
        rounds to nearest even)."""
        lr = float(lr)
        if not math.isfinite(lr):
            raise ValueError(f"lr must be finite, got {lr}")
        if stochastic_rounding and self._layers[0].dtype != "bfloat16":
            raise ValueError("stochastic_rounding applies to bfloat16 layers; this one is float32")
        for layer in self._layers:
            layer._steps += 1
            # in place, and the packed copy with them: the arrays stay as packed
            # (under a pruning mask, set by prune(), pruned weights are not updated)
            layer._runner.fc.sgd(layer._weight, layer._bias, layer.weight_grad, layer.bias_grad, lr,
                                 bool(stochastic_rounding), (layer._seed + layer._steps) % (1 << 64))


class Linear(_Trainable, Prunable, Parameters):
    """y = activation(x · weightᵀ + bias) on the BRGEMM, bias and activation fused into its epilogue.

    :meth:`prune` zeroes weights by magnitude and keeps them zero through training; weights whose
    zeros fill whole 64 × 64 blocks (``prune(amount)``'s default) are packed as their nonzero
    blocks and the products skip the others (``packing``).

    ``activation``: None, "relu", exact "tanh", "sigmoid", "gelu", "swish", or the K-TanH based
    "ktanh", "ksigmoid", "kgelu", "kswish" (:mod:`brgemm.nn.functional`). ``dtype``: "float32",
    "bfloat16" (bf16 activations and weights in the products, f32 accumulation, f32 master
    weights and gradients), or "dfp16" (dynamic fixed point: the three products of training in
    int16 mantissas with a shared exponent per tensor, int32 sums over K-chunks that cannot
    overflow, f32 master weights and gradients; activation None or "relu"; see
    :mod:`brgemm.dfp`). Initialised as PyTorch does: U(−1/√in, 1/√in), from ``seed``.
    """

    def __init__(self, in_features, out_features, bias=True, activation=None, dtype="float32", seed=None):
        self.in_features = positive_int(in_features, "in_features")
        self.out_features = positive_int(out_features, "out_features")
        self.activation = activation_arg(activation)
        if dtype == "dfp16":
            self.dtype = dtype
            self._runner = DFPLinearRunner(self.in_features, self.out_features, activation or "none")
            self._act_dtype = np.float32
        else:
            self.dtype = dtype_arg(dtype)
            self._runner = LinearRunner(self.dtype, self.in_features, self.out_features, activation or "none")
            self._act_dtype = self._runner.act_dtype
        rng = np.random.default_rng(seed)
        self._init_parameters(rng, (self.out_features, self.in_features), self.in_features, bias)
        self._seed, self._steps = int(rng.integers(1 << 62)), 0
        self._layers, self._chain = [self], None

    def _prune_block(self):
        return (self._runner.bk, self._runner.bc)

    def _set_mask(self, keep):
        if self.dtype != "dfp16":  # dfp16 products are dense: the SGD step alone holds the mask
            self._runner.fc.set_mask(keep.view(np.uint8))

    @property
    def packing(self):
        """How the weights are packed: "auto" (the default: only their nonzero blocks when at most
        ``brgemm.nn.Linear.sparse_crossover`` of the blocks hold a nonzero, else all of them),
        "dense" or "sparse" (forced). Set it to one of those; the next forward packs again."""
        return self._runner.fc.packing

    @packing.setter
    def packing(self, value):
        self._runner.fc.packing = value
        self._runner.weights.forget()

    @property
    def block_sparse(self):
        """Whether the last packing kept only the nonzero blocks (known after a forward)."""
        return self._runner.fc.block_sparse

    sparse_crossover = _core._Linear.sparse_crossover

    def forward(self, x, out=None):
        if self.dtype != "dfp16":
            return super().forward(x, out)
        x = _rows_arg(x, "x", self.in_features)
        if x.dtype != np.float32:
            raise TypeError(f"x must have dtype float32 for dtype='dfp16', got {x.dtype}")
        out = _out_arg(out, (x.shape[0], self.out_features), np.float32)
        return self._runner.forward(x, self._weight, self._bias, out, self.training)

    __call__ = forward

    def backward(self, grad_out, input_grad=True, out=None):
        if self.dtype != "dfp16":
            return super().backward(grad_out, input_grad, out)
        grad_out = _rows_arg(grad_out, "grad_out", self.out_features)
        if input_grad:
            out = _out_arg(out, (grad_out.shape[0], self.in_features), np.float32)
        self._runner.backward(grad_out, self._weight_grad, self._bias_grad, not self._grad_zero,
                              out if input_grad else None)
        self._grad_zero = False
        return out if input_grad else None

    def apply_sgd(self, lr, stochastic_rounding=False):
        if self.dtype != "dfp16":
            return super().apply_sgd(lr, stochastic_rounding)
        if stochastic_rounding:
            raise ValueError("stochastic_rounding applies to bfloat16 layers; this one is dfp16")
        Parameters.apply_sgd(self, lr)  # on the float32 master weights: the next forward converts them

    def __repr__(self):
        return (f"Linear(in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self._bias is not None}, activation={self.activation!r}, dtype={self.dtype!r})")


class MLP(_Trainable):
    """Linear layers of widths ``sizes`` (in, hidden…, out), ``activation`` after every layer
    but the last, activations blocked from the first layer to the last.

    >>> mlp = MLP([1024, 1024, 1024, 1024], activation="relu")
    >>> y = mlp(x); mlp.backward(dy, input_grad=False); mlp.apply_sgd(0.01); mlp.zero_grad()
    """

    def __init__(self, sizes, activation="relu", dtype="float32", bias=True, seed=None):
        sizes = [positive_int(s, "sizes[]") for s in sizes]
        if len(sizes) < 2:
            raise ValueError(f"sizes must name at least an input and an output width, got {sizes}")
        activation_arg(activation)
        if dtype == "dfp16":
            raise ValueError("MLP keeps float32 or bfloat16 activations blocked between its layers; for dfp16 "
                             "chain Linear(..., dtype='dfp16') layers")
        rng = np.random.default_rng(seed)
        self.layers = [Linear(sizes[i], sizes[i + 1], bias, activation if i + 2 < len(sizes) else None, dtype,
                              seed=int(rng.integers(1 << 62))) for i in range(len(sizes) - 1)]
        self.sizes, self.activation, self.dtype = sizes, activation, self.layers[0].dtype
        self._layers, self._chain = self.layers, None

    def __repr__(self):
        return f"MLP(sizes={self.sizes}, activation={self.activation!r}, dtype={self.dtype!r})"


_TERNARY_ARGS = ("block", "max_residuals", "error_target", "residuals")


def _check_ternary_args(weights, ternary, **int8_only):
    """from_float's keyword arguments that belong to the other weight format name themselves."""
    unknown = sorted(set(ternary) - set(_TERNARY_ARGS))
    if unknown:
        raise TypeError(f"from_float() got unexpected keyword argument(s) {', '.join(unknown)}")
    if weights == "int8" and ternary:
        raise ValueError(f"{', '.join(sorted(ternary))} apply to weights='ternary' only")
    given = [k for k, v in int8_only.items() if v is not None]
    if weights == "ternary" and given:
        raise ValueError(f"{', '.join(given)} apply to weights='int8' only")


class QuantizedLinear(QuantizedIO):
    """int8 inference: y = activation(input_scale·weight_scale[k]·Σ (x_q − input_zero_point)·w_q
    + bias[k]) for uint8 activations x_q (N, in) and int8 ``weight`` (out, in) with one
    float32 ``weight_scale`` per output feature (zero point 0), exact int32 sums, the rest in
    the BRGEMM's epilogue, which stores float32 or, with ``out_dtype="uint8"``, requantizes:
    clip(round(y / output_scale) + output_zero_point) (no activation or ReLU: 1/output_scale
    folded into the scale and bias, one multiply-add per value, as fbgemm does). So consecutive
    quantized layers pass uint8 arrays without a float round-trip.

    ``out_dtype`` defaults to "uint8" when ``output_scale`` is given, else "float32".
    Weights, scales, bias and the quantization attributes may change at any time (in place
    too): the next forward packs again when they differ from what it packed.
    :meth:`from_float` quantizes a trained :class:`Linear` per output channel."""

    def __init__(self, in_features, out_features, bias=True, activation=None, *, input_scale=1.0,
                 input_zero_point=0, output_scale=None, output_zero_point=0, out_dtype=None, seed=None):
        self.in_features = positive_int(in_features, "in_features")
        self.out_features = positive_int(out_features, "out_features")
        self.activation = activation_arg(activation)
        self._init_quantization(input_scale, input_zero_point, output_scale, output_zero_point, out_dtype)
        bound = 1.0 / math.sqrt(self.in_features)
        rng = np.random.default_rng(seed)
        self.weight, self.weight_scale = quantize_per_channel(
            rng.uniform(-bound, bound, (self.out_features, self.in_features)))
        self.bias = rng.uniform(-bound, bound, self.out_features).astype(np.float32) if bias else None
        self._runner = QuantizedLinearRunner(self.in_features, self.out_features)

    outliers = None  # (rows, cols, values): float32 weights added to the int8 product

    @classmethod
    def from_float(cls, linear, input_scale, input_zero_point=0, output_scale=None, output_zero_point=0,
                   out_dtype=None, *, outlier_fraction=None, outlier_threshold=None, weights="int8", **ternary):
        """The int8 version of a float :class:`Linear` (its weights quantized per output
        feature, its bias and activation kept) with the given input and output quantization.
        With ``outlier_fraction`` or ``outlier_threshold`` the largest weights stay in float32
        as a sparse correction (:func:`brgemm.quant.split_outliers`): the int8 product, then
        the correction, then bias-free activation and requantization in numpy.

        ``weights="ternary"``: 8-bit activations × ternary weights with residual levels instead
        (a :class:`~brgemm.nn.TernaryLinear`, same quantization arguments); ``ternary`` takes
        its ``block``, ``max_residuals``, ``error_target`` and ``residuals`` (levels used, can
        be lowered later through the layer's ``residuals``)."""
        if weights not in ("int8", "ternary"):
            raise ValueError(f"weights must be 'int8' or 'ternary', got {weights!r}")
        _check_ternary_args(weights, ternary, outlier_fraction=outlier_fraction, outlier_threshold=outlier_threshold)
        if weights == "ternary":
            from .ternary import TernaryLinear
            return TernaryLinear.from_float(linear, input_scale, input_zero_point, output_scale, output_zero_point,
                                            out_dtype, **ternary)
        if not isinstance(linear, Linear):
            raise TypeError(f"linear must be a brgemm.nn.Linear, got {type(linear).__name__}")
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, linear.activation,
                input_scale=input_scale, input_zero_point=input_zero_point, output_scale=output_scale,
                output_zero_point=output_zero_point, out_dtype=out_dtype)
        if outlier_fraction is None and outlier_threshold is None:
            q.weight, q.weight_scale = quantize_per_channel(linear.weight)
        else:
            q.weight, q.weight_scale, *sparse = split_outliers(linear.weight, outlier_fraction=outlier_fraction,
                                                               threshold=outlier_threshold)
            q.outliers = tuple(sparse)
        if linear.bias is not None:
            q.bias = linear.bias
        return q

    def forward(self, x, out=None):
        """y for x (N, in_features) uint8, or float32 (quantized with input_scale and
        input_zero_point first); y is (N, out_features) of out_dtype. ``out`` may give it."""
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"x must be a (N, {self.in_features}) numpy array, got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        quantization = self._quantization()
        w, ws, b, token = self._arrays()
        self._runner.refresh(w, ws, b, quantization, self.activation, self.out_dtype, token)
        if x.dtype not in (np.float32, np.uint8):
            raise TypeError(f"x must have dtype uint8 or float32, got {x.dtype}")
        shape = (x.shape[0], self.out_features)
        if out is not None and (not isinstance(out, np.ndarray) or out.shape != shape
                                or out.dtype != np.dtype(self.out_dtype)):
            raise ValueError(f"out must be a {self.out_dtype} array of shape {shape}")
        y = out if out is not None else np.empty(shape, self.out_dtype)
        if self.outliers is None:
            return self._runner.forward(x, y, quantization)
        # int8 product dequantized (+ bias), the float32 outliers' share, then the rest.
        x = np.ascontiguousarray(x) if x.dtype == np.uint8 else quantize(x, QParams(quantization[0], quantization[1]))
        z = self._runner.forward(x, np.empty(shape, np.float32), quantization, epilogue=Epilogue(
            scale=(np.float32(self.input_scale) * ws).astype(np.float32), bias=b,
            a_zero_point=int(self.input_zero_point), out_dtype="float32"))
        rows, cols, values = self.outliers
        xf = (x.astype(np.float32) - np.float32(self.input_zero_point)) * np.float32(self.input_scale)
        np.add.at(z.T, rows, (xf[:, cols] * values).T)
        if self.activation is not None:
            z = functional.activation(z, self.activation)
        if self.out_dtype == "float32":
            y[...] = z
        else:
            y[...] = quantize(z, QParams(self.output_scale, int(self.output_zero_point)))
        return y

    __call__ = forward

    def __repr__(self):
        return (f"QuantizedLinear({self.in_features}, {self.out_features}, bias={self._owned.own('bias') is not None}, "
                f"activation={self.activation!r}, out_dtype={self.out_dtype!r})")
