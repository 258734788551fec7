"""Dynamic fixed point, 16 bits (DFP-16): a tensor is int16 mantissas with one shared exponent
(Das et al., "Mixed Precision Training of CNNs using Integer Operations", ICLR 2018).

A float32 tensor f becomes m·2^e with e = E(max|f|) − (P − 2), P = 16, E(x) = ⌊log2 x⌋, and
m = f·2^−e rounded to nearest even (|m| ≤ 32767). Products multiply mantissas on the s16s16
BRGEMM and add exponents; sums over K are int32 in chunks short enough never to overflow, each
chunk's sum converted to float32 and added. The conversions are per-ISA C++ kernels with a
scalar twin that gives the same bits; nothing here loops in Python.
"""

from collections import namedtuple

import numpy as np

from . import _core

#: A DFP-16 tensor: ``mantissa`` (int16 array) and ``exponent`` (int): value = mantissa·2^exponent.
DFP16 = namedtuple("DFP16", "mantissa exponent")


def _float32(x, name):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of float32, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise TypeError(f"{name} must have dtype float32, got {x.dtype}")
    return np.ascontiguousarray(x)


def to_dfp16(x, *, exponent=None, out=None):
    """``x`` (float32, finite) as a :class:`DFP16` of its shape. ``exponent`` forces the shared
    exponent (values beyond ±32767·2^exponent are then clamped); ``out`` gives the int16 array
    of the mantissas. NaN or infinity raise ValueError."""
    x = _float32(x, "x")
    m = np.empty(x.shape, np.int16) if out is None else out
    e = _core.to_dfp16(x, m, exponent)
    return DFP16(m, e)


def from_dfp16(t, *, out=None):
    """The float32 values m·2^e of a :class:`DFP16` ``t`` (exact unless they underflow)."""
    if not isinstance(t, DFP16):
        raise TypeError(f"t must be a DFP16 (mantissa, exponent), got {type(t).__name__}")
    y = np.empty(np.shape(t.mantissa), np.float32) if out is None else out
    return _core.from_dfp16(t.mantissa, t.exponent, y)


def transpose(t, *, out=None):
    """The :class:`DFP16` of a 2-D tensor's transpose (the mantissas copied in C++ by blocks)."""
    if not isinstance(t, DFP16):
        raise TypeError(f"t must be a DFP16 (mantissa, exponent), got {type(t).__name__}")
    m = t.mantissa
    if out is None:
        out = np.empty(m.shape[::-1], np.int16)
    return DFP16(_core.dfp16_transpose(m, out), t.exponent)


def _operand(x, name):
    if isinstance(x, DFP16):
        return x
    x = _float32(x, name)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got ndim {x.ndim}")
    return to_dfp16(x)


def matmul(a, b, *, out=None):
    """``a @ b`` in DFP-16: a (M, K) and b (K, N) float32 arrays (each converted with its own
    exponent) or :class:`DFP16` tensors; returns float32 (M, N), or writes ``out``. The int16
    products are summed in int32 over K-chunks chosen from the mantissas so that no sum can
    overflow; the chunk sums are scaled by 2^(e_a + e_b) and added in float32."""
    a, b = _operand(a, "a"), _operand(b, "b")
    if a.mantissa.shape[1] != b.mantissa.shape[0]:
        raise ValueError(f"a and b disagree on K: a is {a.mantissa.shape}, b is {b.mantissa.shape}")
    shape = (a.mantissa.shape[0], b.mantissa.shape[1])
    if out is None:
        out = np.empty(shape, np.float32)
    _core.dfp16_gemm(a.mantissa, b.mantissa, a.exponent + b.exponent, out)
    return out


def chunks(a, b):
    """The K boundaries :func:`matmul` sums ``a @ b`` in (a and b as for matmul): each chunk's int32
    sums are bounded by Σ|a|·max|b| ≤ 2^31 − 1."""
    a, b = _operand(a, "a"), _operand(b, "b")
    out = np.empty((a.mantissa.shape[0], b.mantissa.shape[1]), np.float32)
    return _core.dfp16_gemm(a.mantissa, b.mantissa, a.exponent + b.exponent, out)
