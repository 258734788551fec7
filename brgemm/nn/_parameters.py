"""What every layer with a weight and a bias shares: the parameters as float32 numpy arrays the
layer owns (in-place writes and assignment take effect at the next forward), their gradients,
and lazy zeroing; and :class:`OwnedArrays`, how every layer knows that its arrays are as it
packed them without reading them."""

import math
import sys

import ml_dtypes
import numpy as np

from .._runners.quantized import quantization_arg


class OwnedArrays:
    """A layer's own arrays by name (its parameters) and :meth:`token`, which says without
    reading them whether any can have been written since the last token.

    A numpy write needs a reference to the array, or to a view of it (which holds the array as
    its base). The layer hands out references only through its attributes, and each such read
    counts as a possible write; a reference that outlives the statement that took it shows in
    the array's reference count. So when nothing was read since the last token and no reference
    beyond the layer's own is alive, nothing can have changed: the token is the last one and the
    runner skips its comparison with what it packed (weights.PackedWeights). After a read the
    token is new, so the next call compares, exactly; while outside references live the token is
    None and every call compares. (A write through a raw pointer that keeps no reference, e.g.
    from ctypes, is not seen: assign the array again after one.)"""

    def __init__(self):
        self._arrays = {}
        self._reads = 0

    def get(self, name):
        """The array for a caller outside the layer (who may write it)."""
        self._reads += 1
        return self._arrays[name]

    def own(self, name):
        """The array for the layer itself, which writes only through set()."""
        return self._arrays[name]

    def set(self, name, array):
        """A new array, or one the layer has written in place."""
        self._arrays[name] = array
        self._reads += 1

    def _refcounts(self):
        return [sys.getrefcount(a) for a in self._arrays.values() if a is not None]

    def token(self):
        if any(c > _SOLE for c in self._refcounts()):
            return None
        return self._reads


def _sole_count():
    """What _refcounts gives for an array nothing but its OwnedArrays holds."""
    probe = OwnedArrays()
    probe.set("probe", np.empty(1))
    return probe._refcounts()[0]


_SOLE = _sole_count()


class Parameters:
    def _init_parameters(self, rng, shape, fan_in, bias):
        """PyTorch's initialisation: weight and bias from U(−1/√fan_in, 1/√fan_in)."""
        bound = 1.0 / math.sqrt(fan_in)
        self._owned = OwnedArrays()
        self._weight = rng.uniform(-bound, bound, shape).astype(np.float32)
        self._bias = rng.uniform(-bound, bound, shape[0]).astype(np.float32) if bias else None
        self._weight_grad = np.zeros_like(self._weight)
        self._bias_grad = np.zeros_like(self._bias) if bias else None
        self._grad_zero = False  # zero_grad() was called and no backward since

    @property
    def weight(self):
        """float32 in PyTorch's shape ((out, in), or (K, C, R, S) for a convolution); in-place
        writes take effect at the next forward."""
        return self._owned.get("weight")

    @weight.setter
    def weight(self, value):
        self._weight = self._param(value, self._weight.shape, "weight")

    @property
    def bias(self):
        """float32 (out,), or None for a layer without bias."""
        return self._owned.get("bias")

    @bias.setter
    def bias(self, value):
        if self._bias is None:
            raise ValueError("this layer was built with bias=False")
        self._bias = self._param(value, self._bias.shape, "bias")

    # The layer's own access (OwnedArrays.own and set: `self._weight -= d` reads, then sets).
    _weight = property(lambda self: self._owned.own("weight"), lambda self, v: self._owned.set("weight", v))
    _bias = property(lambda self: self._owned.own("bias"), lambda self, v: self._owned.set("bias", v))

    @property
    def weight_grad(self):
        """∂loss/∂weight summed over every backward since the last zero_grad() (float32, weight's shape)."""
        self._materialize_zero_grad()
        return self._weight_grad

    @property
    def bias_grad(self):
        """float32 (out,), or None without bias."""
        self._materialize_zero_grad()
        return self._bias_grad

    def apply_sgd(self, lr):
        """One SGD step, p −= lr·p_grad for weight and bias (the next forward repacks)."""
        lr = float(lr)
        if not math.isfinite(lr):
            raise ValueError(f"lr must be finite, got {lr}")
        self._materialize_zero_grad()
        self._weight -= np.float32(lr) * self._weight_grad
        mask = getattr(self, "_mask", None)
        if mask is not None:   # pruned weights stay zero (brgemm.nn._pruning)
            w = self._weight
            np.multiply(w, mask, out=w)
            self._weight = w
        if self._bias is not None:
            self._bias -= np.float32(lr) * self._bias_grad

    def _materialize_zero_grad(self):
        if self._grad_zero:
            self._weight_grad.fill(0)
            if self._bias_grad is not None:
                self._bias_grad.fill(0)
            self._grad_zero = False

    @staticmethod
    def _param(value, shape, name):
        value = np.asarray(value)
        if value.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {value.shape}")
        if not np.issubdtype(value.dtype, np.floating) and value.dtype != ml_dtypes.bfloat16:
            raise TypeError(f"{name} must be a floating-point array, got {value.dtype}")
        return np.array(value, dtype=np.float32, order="C")


def _owned(name, doc):
    """A layer attribute held in its OwnedArrays: assignment stores a copy of a numpy array (so
    no other array shares its memory); anything else is stored as given for the forward's check
    to reject by name."""

    def get(self):
        return self._owned.get(name)

    def set(self, value):
        self._owned.set(name, np.array(value, order="C") if isinstance(value, np.ndarray) else value)

    return property(get, set, doc=doc)


class QuantizedIO:
    """What the int8 layers share: ``weight``, ``weight_scale`` and ``bias``, arrays the layer owns
    (assignment copies; in-place writes take effect at the next forward), and the input and
    output quantization: real x = input_scale·(x_q − input_zero_point) for their uint8 input,
    and a float32 output or a uint8 one requantized with output_scale and output_zero_point
    (plain attributes). All are checked at every forward."""

    weight = _owned("weight", "int8 weights in PyTorch's shape.")
    weight_scale = _owned("weight_scale", "float32, one scale per output channel.")
    bias = _owned("bias", "float32 (out,), or None.")

    def _arrays(self):
        """(weight, weight_scale, bias, token) for the forward (OwnedArrays)."""
        o = self._owned
        token = o.token()   # first: the arrays below are references too
        return o.own("weight"), o.own("weight_scale"), o.own("bias"), token

    def _init_quantization(self, input_scale, input_zero_point, output_scale, output_zero_point, out_dtype):
        self._owned = OwnedArrays()
        if out_dtype is None:
            out_dtype = "uint8" if output_scale is not None else "float32"
        if out_dtype not in ("uint8", "float32"):
            raise ValueError(f"out_dtype must be 'uint8' or 'float32', got {out_dtype!r}")
        if out_dtype == "uint8" and output_scale is None:
            raise ValueError("out_dtype='uint8' needs output_scale")
        self.out_dtype = out_dtype
        self.input_scale, self.input_zero_point = input_scale, input_zero_point
        self.output_scale = 1.0 if output_scale is None else output_scale
        self.output_zero_point = output_zero_point

    def _quantization(self):
        """(input_scale, input_zero_point, output_scale, output_zero_point) as float, int, float,
        int; TypeError or ValueError naming the attribute that is wrong."""
        return quantization_arg(self.input_scale, self.input_zero_point, self.output_scale, self.output_zero_point)
