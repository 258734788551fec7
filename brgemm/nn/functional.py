"""Element-wise functions on numpy arrays (float32 or ml_dtypes.bfloat16), computed by the C++
core on the active ISA and spread over ``brgemm.set_num_threads`` threads for large arrays.

The K-TanH family (Kundu et al., "K-TanH: Efficient TanH for Deep Learning", arXiv 1909.07729):

- ``ktanh(x)``: tanh from the bfloat16 bit fields of x with integer operations and a 32-entry
  table (float32 x is truncated to bfloat16 first). |x| < 1/4 returns x, |x| ≥ 4 returns ±1,
  in between the two low exponent bits and three high mantissa bits pick an (exponent, shift,
  bias) entry and the mantissa becomes (M >> shift) + bias. The table is derived in
  ``brgemm/_ktanh_fit.py`` by exhaustive search per interval; the absolute error is at most
  0.00892 over every finite bfloat16 input; for float32 inputs, which add the truncation, at
  most 0.0118 (the supremum over each bfloat16 step, approached just below x = 0.5625).
  ±inf → ±1, NaN → NaN, the function is odd. Each table interval is fitted on its own, so
  it is not quite monotone: at 7 interval edges the next value steps back (by ≤ 0.0079).
- ``ksigmoid(x) = (1 + ktanh(x/2))/2``, ``kswish(x) = x·ksigmoid(x)``,
  ``kgelu(x) = x/2·(1 + ktanh(√(2/π)(x + 0.044715x³)))`` (the tanh form of GELU).
- exact counterparts ``tanh``, ``sigmoid``, ``swish`` and ``gelu`` (x·Φ(x), the erf form) use
  the C library's functions, element by element.

Every ISA returns the same bits. ``out=`` may be x itself (in place) or a separate array of
x's dtype and shape. Backward passes are float32: ``activation_backward(name, grad_y, x=, y=)``
takes the derivative from the output y where that suffices (tanh and ktanh: 1 − y²;
sigmoid and ksigmoid: y(1 − y); relu) and from the input x otherwise (gelu, swish, kgelu,
kswish).

Softmax: ``taylor_softmax(x, axis=-1, order=2)`` (Banerjee et al., "Exploring Alternatives to
Softmax Function", arXiv 2011.11538) is P_n(z_i) / Σ_j P_n(z_j) with P_n the order-n Taylor
polynomial of e^z, n even (P_n > 0 only for even n). Unlike softmax it is **not**
shift-invariant: f(z + c) ≠ f(z), so do not subtract the maximum first; and its outputs tend
to 1/len for large |z| instead of to a one-hot vector. ``softmax`` is the exact, max-subtracted
one, with a vectorised e^z within 0.89 ulp of the exact value (every float z in [−87, 0]
checked; below −87, e^z is 0). Both run per row on the active ISA's kernel, rows
spread over threads; a row's sum is taken in 16 float lanes widened into double every 1024
values (relative error ≤ (min(len, 1024)/16 + 2)·2^-24), and every ISA gives the same bits. A NaN
makes its row NaN; a row of only −inf, or holding +inf, is NaN (as torch.softmax); −inf entries
of a row with a finite maximum give 0. Forward and backward take float32 or bfloat16 (every
array of a call one dtype, the result too).

Dropout: ``dropout(x, p, seed)`` zeroes each value with probability p and scales the others by
1/(1 − p) (float32). Whether flat position i is dropped is a hash of (seed, i), so the same seed
gives the same mask whatever the thread count, and the backward pass is ``dropout(grad_y, p,
seed)``. The hash is two keyed rounds of a 32-bit integer mix (Wellons' "lowbias32"); the keep
probability is 1 − p to within 2^-32.
"""

import numpy as np

from .. import _core

_ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "swish", "ktanh", "ksigmoid", "kgelu", "kswish", "relu6")
_FROM_INPUT = ("gelu", "swish", "kgelu", "kswish")


def ktanh(x, out=None):
    """K-TanH of x (float32 or bfloat16), same dtype and shape."""
    return _core.activation(x, "ktanh", out)


def ksigmoid(x, out=None):
    """(1 + ktanh(x/2)) / 2."""
    return _core.activation(x, "ksigmoid", out)


def kswish(x, out=None):
    """x · ksigmoid(x)."""
    return _core.activation(x, "kswish", out)


def kgelu(x, out=None):
    """x/2 · (1 + ktanh(√(2/π)·(x + 0.044715·x³)))."""
    return _core.activation(x, "kgelu", out)


def tanh(x, out=None):
    """Exact tanh (the C library's), for comparison with ktanh."""
    return _core.activation(x, "tanh", out)


def sigmoid(x, out=None):
    """Exact 1 / (1 + e^-x)."""
    return _core.activation(x, "sigmoid", out)


def swish(x, out=None):
    """Exact x · sigmoid(x)."""
    return _core.activation(x, "swish", out)


def gelu(x, out=None):
    """Exact GELU, x · Φ(x) = x/2 · (1 + erf(x/√2))."""
    return _core.activation(x, "gelu", out)


def relu(x, out=None):
    """max(x, 0); NaN stays NaN."""
    return _core.activation(x, "relu", out)


def relu6(x, out=None):
    """min(max(x, 0), 6) (MobileNet's); NaN stays NaN."""
    return _core.activation(x, "relu6", out)


def activation(x, name, out=None):
    """One of the functions above by name (``brgemm.Epilogue`` takes the same names)."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"name must be one of {', '.join(_ACTIVATIONS)}; got {name!r}")
    return _core.activation(x, name, out)


def activation_backward(name, grad_y, *, x=None, y=None, out=None):
    """grad_x = grad_y · f'(·) for the activation ``name`` (float32 arrays of one shape): from
    the output ``y`` for relu, relu6, tanh, sigmoid, ktanh, ksigmoid; from the input ``x`` for gelu,
    swish, kgelu, kswish. ktanh's derivative is the exact tanh's applied to its output,
    1 − y², as in the K-TanH paper."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"name must be one of {', '.join(_ACTIVATIONS)}; got {name!r}")
    return _core.activation_backward(name, grad_y, x, y, out)


def _order(order):
    if isinstance(order, (bool, np.bool_)) or not isinstance(order, (int, np.integer)):
        raise TypeError(f"order must be an integer, got {type(order).__name__}")
    if order < 2 or order % 2:
        raise ValueError(f"order must be an even integer >= 2 (an odd-order Taylor polynomial of e^z "
                         f"is negative for some z, so the 'probabilities' could be negative), got {order}")
    if order > 16:
        raise ValueError(f"order must be at most 16 (beyond it, use softmax itself), got {order}")
    return int(order)


def _rows(x, axis, name="x"):
    """x with ``axis`` moved last, C-contiguous (a copy only when it has to be)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension")
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis must be an integer, got {type(axis).__name__}")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis {axis} is out of range for {name} with {x.ndim} dimensions")
    axis %= x.ndim
    return np.ascontiguousarray(np.moveaxis(x, axis, -1)), axis


def _last_axis(axis, *arrays):
    """True when ``axis`` is the last one of C-contiguous arrays: they go to the core as they
    are (moving the axis and back costs some 15 µs a call, a tenth of a 1000 x 1000 backward)."""
    if type(axis) is not int:
        return False
    for a in arrays:
        if type(a) is not np.ndarray or a.ndim == 0 or axis not in (-1, a.ndim - 1) or not a.flags.c_contiguous:
            return False
    return True


def taylor_softmax(x, axis=-1, order=2):
    """P_n(x_i) / Σ_j P_n(x_j) along ``axis``, with P_n(z) = Σ_{k≤n} z^k / k!, n = ``order``
    even (odd orders raise ValueError). float32 or bfloat16 in, the same out (computed in
    float32; the row sum as in the module's notes). Not shift-invariant (see the module's notes)."""
    order = _order(order)
    if _last_axis(axis, x):
        return _core.softmax(x, order)
    z, axis = _rows(x, axis)
    return np.moveaxis(_core.softmax(z, order), -1, axis)


def taylor_softmax_backward(grad_y, x, axis=-1, order=2):
    """grad_x of taylor_softmax at x, given grad_y (float32 or bfloat16, both the same; the
    result too): since P_n' = P_{n−1}, grad_x_j = P_{n−1}(x_j) / Σ P_n · (grad_y_j − Σ_i grad_y_i y_i),
    from x alone (y's sums are recomputed, not read)."""
    order = _order(order)
    if _last_axis(axis, x, grad_y):
        return _core.softmax_backward(order, x, None, grad_y)
    z, axis = _rows(x, axis)
    g, _ = _rows(grad_y, axis, "grad_y")
    return np.moveaxis(_core.softmax_backward(order, z, None, g), -1, axis)


def softmax(x, axis=-1):
    """The exact softmax, e^(x − max x) / Σ, along ``axis`` (float32 or bfloat16; see the
    module's notes for the accuracy and special values)."""
    if _last_axis(axis, x):
        return _core.softmax(x, 0)
    z, axis = _rows(x, axis)
    return np.moveaxis(_core.softmax(z, 0), -1, axis)


def softmax_backward(grad_y, y, axis=-1):
    """grad_x of softmax from its output y: y·(grad_y − Σ grad_y·y) (float32 or bfloat16, both
    the same; the result too)."""
    if _last_axis(axis, y, grad_y):
        return _core.softmax_backward(0, None, y, grad_y)
    yr, axis = _rows(y, axis, "y")
    g, _ = _rows(grad_y, axis, "grad_y")
    return np.moveaxis(_core.softmax_backward(0, None, yr, g), -1, axis)


def dropout(x, p, seed, out=None):
    """x · (kept ? 1/(1 − p) : 0) per value of a C-contiguous float32 array, each kept with
    probability 1 − p (p in [0, 1]) by a hash of (``seed``, its flat position); ∂x is
    ``dropout(grad_y, p, seed)``. ``out`` may be x itself."""
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise TypeError(f"p must be a number in [0, 1], got {type(p).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return _core.dropout(x, float(p), int(seed) & (2**64 - 1), out)


def cross_entropy(logits, labels):
    """The mean cross-entropy of (N, classes) logits against integer labels, and its gradient:
    (loss, grad_logits) with grad = (softmax(logits) − onehot(labels)) / N, float32. Computed
    in float64 from log-softmax (shifted by each row's max), so large logits do not overflow."""
    z = np.asarray(logits, np.float64)
    y = np.asarray(labels)
    if z.ndim != 2 or 0 in z.shape:  # a mean over no rows, a softmax over no classes: no value
        raise ValueError(f"logits must be (N, classes) with N and classes at least 1, got shape {z.shape}")
    if y.shape != (z.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be {z.shape[0]} integers, got {y!r}")
    if y.size and (y.min() < 0 or y.max() >= z.shape[1]):
        raise ValueError(f"labels must be in [0, {z.shape[1]})")
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    n = z.shape[0]
    loss = -logp[np.arange(n), y].mean()
    grad = np.exp(logp)
    grad[np.arange(n), y] -= 1.0
    return float(loss), (grad / n).astype(np.float32)
