"""The kernel-level Python API: thin signatures over brgemm._core, which validates every
argument (naming it in the error) and releases the GIL while C++ computes."""

import operator

import ml_dtypes
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
      A_i = A + i·stride_a, B_i = B + i·stride_b (in elements; for packed B the default
      stride_b is one packed block, ceil(k/KP)·ldb·KP).
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

    def __repr__(self):
        return (f"Kernel(m={self.m}, n={self.n}, k={self.k}, batch={self.batch!r}, lda={self.lda}, "
                f"ldb={self.ldb}, ldc={self.ldc}, beta={self.beta}) -> {self.name}")


#: Kernel dtype by A's numpy dtype (keyed by the dtype itself: reading dtype.name costs some
#: 4 us, as much as a whole 64³ product).
_DTYPE_OF_A = {np.dtype(np.float32): "f32", np.dtype(ml_dtypes.bfloat16): "bf16", np.dtype(np.uint8): "u8s8"}


class PackedB:
    """B packed once into a kernel's layout (see :func:`pack_b`). Attributes: ``data`` (the
    packed numpy array), ``dtype`` ("f32", "bf16", "u8s8"), ``k`` and ``n`` (the unpacked
    sizes: K is zero-padded to whole pairs / quads in ``data``), ``batch`` (None for a single
    matrix), ``ldb`` (packed columns), ``kp`` (rows interleaved per packed row: 1, 2, 4) and,
    for int8, ``colsum`` (int32 column sums of B, per block)."""

    __slots__ = ("data", "dtype", "k", "n", "batch", "ldb", "kp", "colsum")

    def __init__(self, data, dtype, k, n, batch, ldb, kp, colsum):
        self.data, self.dtype, self.k, self.n = data, dtype, k, n
        self.batch, self.ldb, self.kp, self.colsum = batch, ldb, kp, colsum

    def __repr__(self):
        batch = "" if self.batch is None else f"batch={self.batch}, "
        return f"PackedB({batch}k={self.k}, n={self.n}, dtype={self.dtype!r}, ldb={self.ldb}, kp={self.kp})"


def pack_b(B, dtype, *, ldb=None):
    """Pack B (K, N) or (batch, K, N) for a kernel of ``dtype``: "bf16" (B bfloat16, VNNI-2:
    element (k, n) at ((k/2)·ldb + n)·2 + k%2), "u8s8" (B int8, VNNI-4, with column sums),
    "f32f16" (B float16, or float32 rounded to float16 here: half-precision weights for
    float32 activations) or "f32" (a copy with row length ldb). Odd K is zero-padded, never rejected. Pack weights
    once and reuse the result: every call of batch_reduce with a plain B packs it again."""
    if not isinstance(dtype, str):
        raise TypeError(f"dtype must be 'f32', 'bf16', 'u8s8' or 'f32f16', got {type(dtype).__name__}")
    if dtype == "f32f16" and isinstance(B, np.ndarray) and B.dtype == np.float32:
        B = B.astype(np.float16)  # f16 weights are made from f32 ones here, rounded to nearest
    data, colsum = _core.pack_b(B, dtype, -1 if ldb is None else _index(ldb, "ldb"))
    k, n = B.shape[-2], B.shape[-1]
    kp = {"bf16": 2, "bfloat16": 2, "u8s8": 4}.get(dtype, 1)
    return PackedB(data, {"float32": "f32", "bfloat16": "bf16"}.get(dtype, dtype), k, n,
                   B.shape[0] if B.ndim == 3 else None, data.shape[-2] if kp > 1 else data.shape[-1], kp, colsum)


def _kernel_dtype(A, B):
    """The kernel dtype of a call: A's element type, and f32f16 for float32 A on f16 weights."""
    dtype = _DTYPE_OF_A.get(getattr(A, "dtype", None)) if isinstance(A, np.ndarray) else None
    if dtype == "f32" and isinstance(B, PackedB) and B.dtype == "f32f16":
        return "f32f16"
    if dtype is None:
        if not isinstance(A, np.ndarray):
            raise TypeError(f"A must be a numpy array, got {type(A).__name__}")
        raise TypeError(f"A must have dtype float32, bfloat16 (ml_dtypes) or uint8, got {A.dtype}")
    return dtype


def _packed_data(B):
    """The packed array with its KP axis, as the core expects it (a view)."""
    return B.data if B.kp > 1 else B.data[..., None]


def _as_packed(B, dtype, A, batched):
    """B as a PackedB for ``dtype`` (a plain array is packed on the spot), checked against
    the call: the same dtype, batched or single as the entry point needs."""
    if not isinstance(B, PackedB):
        if not isinstance(B, np.ndarray):
            raise TypeError(f"B must be a numpy array or a PackedB, got {type(B).__name__}")
        if B.ndim != (3 if batched else 2):
            raise ValueError(f"B must be {'3-D (batch, K, N)' if batched else '2-D (K, N)'}, got ndim {B.ndim}")
        B = pack_b(B, dtype)
    if B.dtype != dtype:
        raise ValueError(f"B was packed for {B.dtype!r}, but A ({A.dtype}) needs {dtype!r}")
    if batched and B.batch is None:
        raise ValueError("B must be a batched PackedB (packed from a (batch, K, N) array)")
    if not batched and B.batch is not None:
        raise ValueError("B must be a single packed matrix (packed from a (K, N) array), not a batch")
    return B


def batch_reduce(A, B, C=None, *, beta=0.0):
    """``C = beta·C + Σ_i A[i] @ B[i]`` for A (batch, M, K) and B (batch, K, N).

    The kernel follows A's dtype: float32 (B float32, C float32), ml_dtypes.bfloat16 (B
    bfloat16, C float32) or uint8 (B int8, C int32, exact; beta 0 or 1). B may be a plain
    array or, for bf16 and int8, a batched :class:`PackedB` from :func:`pack_b` (a plain one
    is packed on every call). Rows must be contiguous; their strides (leading dimensions) and
    the batch strides are taken from the arrays, so slices of larger arrays work without
    copies. Writes into C (M, N) when given (it must not overlap A or B), else returns a new
    array (beta must be 0).
    """
    beta = _real(beta, "beta")
    dtype = _kernel_dtype(A, B)
    if dtype == "f32" and not isinstance(B, PackedB):
        return _core.batch_reduce(A, B, C, beta)
    B = _as_packed(B, dtype, A, batched=True)
    return _core.batch_reduce_packed(A, _packed_data(B), B.k, B.n, C, beta, dtype)


def gemm(A, B, C=None, *, beta=0.0):
    """``C = beta·C + A @ B`` on the BRGEMM with OpenMP over tiles of C (``set_num_threads``).

    The kernel follows A's dtype, as in :func:`batch_reduce`: float32, bfloat16 (C float32)
    or uint8 × int8 (C int32, exact; beta 0 or 1). For bf16 and int8, pass B packed once with
    :func:`pack_b` (a 2-D PackedB): a plain B is packed again on every call. Rows must be
    contiguous; row strides may exceed the width. Writes into C when given, else returns a
    new array (beta must be 0)."""
    beta = _real(beta, "beta")
    dtype = _kernel_dtype(A, B)
    if dtype == "f32" and not isinstance(B, PackedB):
        return _core.gemm(A, B, C, beta)
    B = _as_packed(B, dtype, A, batched=False)
    if dtype == "f32":
        return _core.gemm(A, B.data[:, :B.n], C, beta)
    return _core.gemm_packed(A, _packed_data(B), B.k, B.n, C, beta, dtype)
