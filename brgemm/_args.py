"""Checks of the arguments the layer classes share (sizes, activation names, dtypes): each
returns the value in its canonical form or raises TypeError/ValueError naming the argument.
Below brgemm.nn and brgemm.torch, so that neither imports the other for them."""

import ml_dtypes
import numpy as np

ACTIVATIONS = (None, "relu", "tanh", "sigmoid", "gelu", "swish", "ktanh", "ksigmoid", "kgelu", "kswish", "relu6")
DTYPES = ("float32", "bfloat16")


def positive_int(v, name):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(v).__name__}")
    if v < 1:
        raise ValueError(f"{name} must be at least 1, got {v}")
    if v > MAX_SIZE:
        raise ValueError(f"{name} must be at most 2**31 - 1, got {v}")
    return int(v)


#: Largest layer size, kernel size or stride: larger ones could not be allocated, and their
#: sums and products in the drivers' int64 arithmetic must not overflow.
MAX_SIZE = (1 << 31) - 1


def activation_arg(activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(map(str, ACTIVATIONS))}; got {activation!r}")
    return activation


def dtype_arg(dtype):
    if not isinstance(dtype, str):
        try:
            dtype = {np.dtype(np.float32): "float32", np.dtype(ml_dtypes.bfloat16): "bfloat16"}.get(np.dtype(dtype))
        except TypeError:
            pass
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    return dtype
