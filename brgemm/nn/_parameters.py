"""What every layer with a weight and a bias shares: the parameters as float32 numpy arrays the
layer owns (in-place writes and assignment take effect at the next forward, whose exact
comparison with what was packed finds the change), their gradients, and lazy zeroing."""

import math

import ml_dtypes
import numpy as np

from .._runners.quantized import quantization_arg


class Parameters:
    def _init_parameters(self, rng, shape, fan_in, bias):
        """PyTorch's initialisation: weight and bias from U(−1/√fan_in, 1/√fan_in)."""
        bound = 1.0 / math.sqrt(fan_in)
        self._weight = rng.uniform(-bound, bound, shape).astype(np.float32)
        self._bias = rng.uniform(-bound, bound, shape[0]).astype(np.float32) if bias else None
        self._weight_grad = np.zeros_like(self._weight)
        self._bias_grad = np.zeros_like(self._bias) if bias else None
        self._grad_zero = False  # zero_grad() was called and no backward since

    @property
    def weight(self):
        """float32 in PyTorch's shape ((out, in), or (K, C, R, S) for a convolution); in-place
        writes take effect at the next forward."""
        return self._weight

    @weight.setter
    def weight(self, value):
        self._weight = self._param(value, self._weight.shape, "weight")

    @property
    def bias(self):
        """float32 (out,), or None for a layer without bias."""
        return self._bias

    @bias.setter
    def bias(self, value):
        if self._bias is None:
            raise ValueError("this layer was built with bias=False")
        self._bias = self._param(value, self._bias.shape, "bias")

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


class QuantizedIO:
    """The input and output quantization the int8 layers share: real x = input_scale·(x_q −
    input_zero_point) for their uint8 input, and a float32 output or a uint8 one requantized
    with output_scale and output_zero_point. Plain attributes, checked at every forward."""

    def _init_quantization(self, input_scale, input_zero_point, output_scale, output_zero_point, out_dtype):
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
