"""The kernel-level Python API: thin signatures over brgemm._core, which validates every
argument (naming it in the error) and releases the GIL while C++ computes."""

import operator

import numpy as np

from . import _core

_BATCH_KINDS = ("stride", "offset", "address")


def _index(value, name, allow_none=False):
    if value is None and allow_none:
        return -1
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if not -(1 << 63) <= v < (1 << 63):
        raise ValueError(f"{name} does not fit in 64 bits")
    if allow_none and v < 0:  # -1 is the core's "default"; an explicit negative is an error
        raise ValueError(f"{name} must be at least {'k' if name == 'lda' else 'n'}, got {v}")
    return v


def _real(value, name):
    if type(value) is float:  # the common case, checked first: this is on every call's path
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def ukernels():
    """Every microkernel of this build, reference first: a list of dicts with name, dtype,
    isa, mr, nr and available (whether this CPU and build can run it)."""
    return _core.ukernels()


def _kernel_args(m, n, k, dtype, batch, lda, ldb, ldc, beta, ukernel):
    """Kernel's arguments checked for type and converted for _core._Kernel."""
    if not isinstance(dtype, str):
        try:
            dtype = np.dtype(dtype).name
        except TypeError:
            raise TypeError(f"dtype must be 'f32' or numpy.float32, got {dtype!r}") from None
    if not isinstance(batch, str):
        raise TypeError(f"batch must be one of {_BATCH_KINDS}, got {type(batch).__name__}")
    if ukernel is not None and not isinstance(ukernel, str):
        raise TypeError(f"ukernel must be a name (str), got {type(ukernel).__name__}")
    return (_index(m, "m"), _index(n, "n"), _index(k, "k"), dtype, batch,
            _index(lda, "lda", True), _index(ldb, "ldb", True), _index(ldc, "ldc", True),
            _real(beta, "beta"), ukernel)


class Kernel(_core._Kernel):
    """A batch-reduce GEMM dispatched once: ``C = beta·C + Σ_i A_i·B_i`` with A_i (m×k, row
    stride lda), B_i (k×n, row stride ldb) and C (m×n, row stride ldc), all float32.

    Describing the same kernel twice returns the same cached C++ kernel (``handle``).
    ``ukernel`` forces one microkernel by name (see :func:`ukernels`); by default the best
    one for the active ISA is chosen. ``name`` tells which one runs.

    Calling it depends on ``batch``; A, B and C are C-contiguous float32 buffers (any shape)
    addressed with the leading dimensions:

    - ``"stride"``: ``kernel(A, B, C, count, stride_a=m*lda, stride_b=k*ldb)``:
      A_i = A + i·stride_a, B_i = B + i·stride_b (in elements).
    - ``"offset"``: ``kernel(A, B, C, offsets_a, offsets_b)``: A_i = A + offsets_a[i].
    - ``"address"``: ``kernel(A_blocks, B_blocks, C)``: lists of arrays, one block each.

    Every call returns C. beta = 0 never reads C (it may hold NaN). The call goes straight to
    C++ (validation, then the GIL is released while it computes).
    """

    def __init__(self, m, n, k, *, dtype="f32", batch="stride", lda=None, ldb=None, ldc=None,
                 beta=0.0, ukernel=None):
        try:
            super().__init__(*_kernel_args(m, n, k, dtype, batch, lda, ldb, ldc, beta, ukernel))
        except BaseException:
            # The C++ object is not constructed: touching it (repr in a traceback printer or
            # a debugger) would crash, so the traceback's frame must not keep it.
            del self
            raise

    dtype = property(lambda self: "f32")

    def __repr__(self):
        return (f"Kernel(m={self.m}, n={self.n}, k={self.k}, batch={self.batch!r}, lda={self.lda}, "
                f"ldb={self.ldb}, ldc={self.ldc}, beta={self.beta}) -> {self.name}")


def batch_reduce(A, B, C=None, *, beta=0.0):
    """``C = beta·C + Σ_i A[i] @ B[i]`` for float32 A (batch, M, K) and B (batch, K, N).

    Rows must be contiguous; their strides (leading dimensions) and the batch strides are
    taken from the arrays, so slices of larger arrays work without copies. Writes into C
    (M, N) when given (it must not overlap A or B), else returns a new array (beta must be 0).
    """
    return _core.batch_reduce(A, B, C, _real(beta, "beta"))


def gemm(A, B, C=None, *, beta=0.0):
    """``C = beta·C + A @ B`` for float32 A (M, K) and B (K, N), on the BRGEMM with OpenMP
    over tiles of C (``set_num_threads``). Rows must be contiguous; row strides may exceed
    the width. Writes into C when given, else returns a new array (beta must be 0)."""
    return _core.gemm(A, B, C, _real(beta, "beta"))
