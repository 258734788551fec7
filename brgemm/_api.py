"""The kernel-level Python API: thin signatures over brgemm._core, which validates every
argument (naming it in the error) and releases the GIL while C++ computes."""

import operator

import ml_dtypes
import numpy as np

from . import _core
from ._sharing import SharedWeights

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


#: Output types of an epilogue, by name: code of the core's out_type.
_OUT_TYPES = {None: 0, "float32": 1, "bfloat16": 2, "uint8": 3, "int8": 4}
_ACTIVATIONS = {None: 0, "relu": 1, "tanh": 2, "sigmoid": 3, "gelu": 4, "swish": 5, "ktanh": 6, "ksigmoid": 7,
                "kgelu": 8, "kswish": 9, "relu6": 10}


def _out_dtype_name(out_dtype):
    if out_dtype is None or isinstance(out_dtype, str):
        name = {"f32": "float32", "bf16": "bfloat16", "u8": "uint8", "s8": "int8"}.get(out_dtype, out_dtype)
    else:
        try:
            name = np.dtype(out_dtype).name
        except TypeError:
            raise TypeError(f"out_dtype must be a dtype or its name, got {type(out_dtype).__name__}") from None
    if name not in _OUT_TYPES:
        raise ValueError(f"out_dtype must be None (the accumulator's type), 'float32', 'bfloat16', 'uint8' or "
                         f"'int8', got {out_dtype!r}")
    return name


def _vector(value, name, dtype):
    """A 1-D array of dtype holding value (a number becomes one element). Arrays of the
    right dtype and layout are kept (not copied), so in-place writes reach the kernel."""
    if value is None:
        return None
    if isinstance(value, np.ndarray) and value.dtype == dtype and value.ndim == 1 and value.flags.c_contiguous:
        return value
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be numbers, got {type(value).__name__}")
    try:
        arr = np.asarray(value)
    except Exception:
        raise TypeError(f"{name} must be a number or a 1-D array, got {type(value).__name__}") from None
    if arr.dtype.kind not in "iuf" or arr.ndim > 1:
        raise TypeError(f"{name} must be a number or a 1-D array of numbers, got {arr.dtype} with ndim {arr.ndim}")
    return np.ascontiguousarray(arr.reshape(-1), dtype=dtype)


def _int_in(value, name, lo, hi):
    v = _index(value, name)
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be in {lo}..{hi}, got {v}")
    return v


class Epilogue:
    """What happens to a tile of C after its sum, fused before it is stored. Stages, in order:

    1. ``v = acc + beta·C``; for int8 kernels the int32 sum is corrected for the zero points
       (``Σ (a − a_zero_point)(b − b_zero_point)``, exact) and dequantized:
       ``v = scale · Σ(...)`` with ``scale`` one value (per tensor) or n (per column);
    2. ``v += bias`` (n values);
    3. ``activation``: None, "relu" (NaN stays NaN), "relu6" (min(max(v, 0), 6)), the exact "tanh", "sigmoid", "gelu"
       (erf form), "swish", or the K-TanH family "ktanh", "ksigmoid", "kgelu", "kswish"
       (see :mod:`brgemm.nn.functional`);
    4. stored as ``out_dtype``: None (the accumulator's: float32, or int32 for int8 kernels),
       "float32", "bfloat16" (round to nearest even) or, requantized,
       "uint8"/"int8": ``clip(round(v / out_scale) + out_zero_point)`` (ties to even).

    x = scale·(x_q − zero_point) and x_q = clip(round(x/scale) + zero_point) are the usual
    quantization formulas. Every stage is exact IEEE arithmetic in this order (no fused
    multiply-add), so every ISA gives the same bits. With int8 A (signed activations) the
    kernels compute on a + 128 and remove 128·Σ_k b again: invisible to the caller, but it
    needs B's column sums, which :func:`pack_b` computes; a :class:`Kernel` call takes them as
    ``b_colsum`` (summed over the batch). Arrays are kept by reference: writing into ``bias``
    or ``scale`` in place changes later calls.
    """

    __slots__ = ("bias", "activation", "out_dtype", "scale", "a_zero_point", "b_zero_point",
                 "out_scale", "out_zero_point", "b_colsum", "_out", "_act")

    def __init__(self, *, bias=None, activation=None, out_dtype=None, scale=None, a_zero_point=0,
                 b_zero_point=0, out_scale=None, out_zero_point=None, b_colsum=None):
        if activation is not None and not isinstance(activation, str):
            raise TypeError(f"activation must be None or a name, got {type(activation).__name__}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be None or one of {', '.join(a for a in _ACTIVATIONS if a)}, "
                             f"got {activation!r}")
        out = _out_dtype_name(out_dtype)
        requant = out in ("uint8", "int8")
        if not requant and (out_scale is not None or out_zero_point is not None):
            raise ValueError("out_scale and out_zero_point requantize: they need out_dtype 'uint8' or 'int8'")
        if out_scale is None:
            out_scale = 1.0
        out_scale = _real(out_scale, "out_scale")
        if not (np.isfinite(out_scale) and out_scale > 0 and np.isfinite(np.float32(out_scale))
                and np.float32(out_scale) > 0):
            raise ValueError(f"out_scale must be a positive finite float32, got {out_scale!r}")
        zlo, zhi = (0, 255) if out == "uint8" else (-128, 127)
        out_zero_point = _int_in(0 if out_zero_point is None else out_zero_point, "out_zero_point", zlo, zhi)
        b_colsum = None if b_colsum is None else _vector(b_colsum, "b_colsum", np.int32)
        set_ = object.__setattr__
        set_(self, "bias", _vector(bias, "bias", np.float32))
        set_(self, "scale", _vector(scale, "scale", np.float32))
        if self.scale is not None and not np.all(np.isfinite(self.scale)):
            raise ValueError("scale must be finite")
        set_(self, "activation", activation)
        set_(self, "out_dtype", out)
        set_(self, "a_zero_point", _int_in(a_zero_point, "a_zero_point", -128, 255))
        set_(self, "b_zero_point", _int_in(b_zero_point, "b_zero_point", -128, 127))
        set_(self, "out_scale", float(np.float32(out_scale)))
        set_(self, "out_zero_point", out_zero_point)
        set_(self, "b_colsum", b_colsum)
        set_(self, "_out", _OUT_TYPES[out])
        set_(self, "_act", _ACTIVATIONS[activation])

    def __setattr__(self, name, value):
        raise AttributeError("an Epilogue is immutable (its arrays may be written in place); make a new one")

    def __repr__(self):
        parts = [f"{k}={getattr(self, k)!r}" for k in ("activation", "out_dtype", "a_zero_point", "b_zero_point",
                                                      "out_scale", "out_zero_point")
                 if getattr(self, k) not in (None, 0, 1.0)]
        parts += [f"{k}=<{getattr(self, k).size} values>" for k in ("bias", "scale", "b_colsum")
                  if getattr(self, k) is not None]
        return f"Epilogue({', '.join(parts)})"


def _epilogue(ep):
    if ep is None or isinstance(ep, Epilogue):
        return ep
    if isinstance(ep, dict):
        return Epilogue(**ep)
    raise TypeError(f"epilogue must be a brgemm.Epilogue, a dict of its arguments or None, got {type(ep).__name__}")


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
    """A batch-reduce GEMM dispatched once: ``C = epilogue(beta·C + Σ_i A_i·B_i)`` with A_i
    (m×k, row stride lda), B_i (k×n, row stride ldb) and C (m×n, row stride ldc).

    ``dtype`` names A × B → accumulator: "f32" (float32), "bf16" (bfloat16 × bfloat16 packed
    VNNI-2 → float32), "u8s8" and "s8s8" (uint8 or int8 × int8 packed VNNI-4 → int32, exact),
    "f32f16" (float32 × float16 → float32), "s16s16" (int16 × int16 packed VNNI-2 → int32,
    exact while the sum fits in int32, else wrapped modulo 2^32 alike on every ISA),
    "s16s16f32" (the same per batch element, each element's int32 sum then converted to float32
    and added in batch order: the batch names K-chunks, as DFP-16 sums them); B of the
    packed dtypes is laid out by
    :func:`pack_b` (ldb counts packed columns). ``epilogue`` (an :class:`Epilogue`) sets C's
    type and what is applied before each tile is stored; for "s8s8", or a nonzero
    a_zero_point, it must carry ``b_colsum`` (B's column sums over the batch).

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
                 beta=0.0, ukernel=None, epilogue=None):
        try:
            super().__init__(*_kernel_args(m, n, k, dtype, batch, lda, ldb, ldc, beta, ukernel),
                             _epilogue(epilogue))
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
_DTYPE_OF_A = {np.dtype(np.float32): "f32", np.dtype(ml_dtypes.bfloat16): "bf16", np.dtype(np.uint8): "u8s8",
               np.dtype(np.int8): "s8s8", np.dtype(np.int16): "s16s16"}
#: Packings shared by several kernel dtypes: int8 B is packed the same for uint8 and int8 A, int16 B
#: the same for int32 and float32 accumulation (s16s16f32: see Kernel).
_PACKING = {"s8s8": "u8s8", "s16s16f32": "s16s16"}


class PackedB:
    """B packed once into a kernel's layout (see :func:`pack_b`). Attributes: ``data`` (the
    packed numpy array), ``dtype`` ("f32", "bf16", "u8s8", "f32f16", "s16s16"), ``k`` and ``n`` (the unpacked
    sizes: K is zero-padded to whole pairs / quads in ``data``), ``batch`` (None for a single
    matrix), ``ldb`` (packed columns), ``kp`` (rows interleaved per packed row: 1, 2, 4) and,
    for int8, ``colsum`` (int32 column sums of B, per block). int8 B packs the same for uint8
    and int8 A: ``dtype`` is "u8s8" for both. ``layout`` is "rows" or "panels" (see
    :func:`pack_b`)."""

    __slots__ = ("data", "dtype", "k", "n", "batch", "ldb", "kp", "colsum", "layout")

    def __init__(self, data, dtype, k, n, batch, ldb, kp, colsum, layout="rows"):
        self.data, self.dtype, self.k, self.n = data, dtype, k, n
        self.batch, self.ldb, self.kp, self.colsum, self.layout = batch, ldb, kp, colsum, layout

    def __repr__(self):
        batch = "" if self.batch is None else f"batch={self.batch}, "
        return (f"PackedB({batch}k={self.k}, n={self.n}, dtype={self.dtype!r}, layout={self.layout!r}, "
                f"ldb={self.ldb}, kp={self.kp})")


def pack_b(B, dtype, *, ldb=None, layout="rows"):
    """Pack B (K, N) or (batch, K, N) for a kernel of ``dtype``: "bf16" (B bfloat16, VNNI-2:
    element (k, n) at ((k/2)·ldb + n)·2 + k%2), "u8s8" (B int8, VNNI-4, with column sums),
    "s16s16" (B int16, VNNI-2 as for bf16),
    "f32f16" (B float16, or float32 rounded to float16 here: half-precision weights for
    float32 activations) or "f32" (a copy with row length ldb). Odd K is zero-padded, never
    rejected. Pack weights once and reuse the result: every call with a plain B packs it again.

    ``layout="rows"`` (the default) is the layout above, for :class:`Kernel`,
    :func:`batch_reduce` and :func:`gemm`. ``layout="panels"`` (a 2-D B, for :func:`gemm`)
    cuts it into panels of 64 columns, each its own packed matrix with ldb = 64, one after
    the other (``data`` shaped (ceil(N/64), ceil(K/KP), 64, KP); columns past N are zero):
    gemm then reads each column tile of B as one contiguous block instead of copying it out
    of the rows first, which measured 8 % faster on large int8 products."""
    if not isinstance(dtype, str):
        raise TypeError(f"dtype must be 'f32', 'bf16', 'u8s8', 'f32f16' or 's16s16', got {type(dtype).__name__}")
    if layout not in ("rows", "panels"):
        raise ValueError(f"layout must be 'rows' or 'panels', got {layout!r}")
    if dtype == "f32f16" and isinstance(B, np.ndarray) and B.dtype == np.float32:
        B = B.astype(np.float16)  # f16 weights are made from f32 ones here, rounded to nearest
    dtype = _PACKING.get(dtype, dtype)
    panels = layout == "panels"
    data, colsum = _core.pack_b(B, dtype, -1 if ldb is None else _index(ldb, "ldb"), panels)
    k, n = B.shape[-2], B.shape[-1]
    kp = {"bf16": 2, "bfloat16": 2, "u8s8": 4, "s16s16": 2}.get(dtype, 1)
    return PackedB(data, {"float32": "f32", "bfloat16": "bf16"}.get(dtype, dtype), k, n,
                   B.shape[0] if B.ndim == 3 else None, data.shape[-2] if kp > 1 else data.shape[-1], kp, colsum,
                   layout)


def _kernel_dtype(A, B):
    """The kernel dtype of a call: A's element type, and f32f16 for float32 A on f16 weights."""
    dtype = _DTYPE_OF_A.get(getattr(A, "dtype", None)) if isinstance(A, np.ndarray) else None
    if dtype == "f32" and (B.dtype == "f32f16" if isinstance(B, PackedB) else
                           isinstance(B, np.ndarray) and B.dtype == np.float16):
        return "f32f16"  # half-precision weights, a plain array packed per call as bf16 and int8 B are
    if dtype is None:
        if not isinstance(A, np.ndarray):
            raise TypeError(f"A must be a numpy array, got {type(A).__name__}")
        raise TypeError(f"A must have dtype float32, bfloat16 (ml_dtypes), uint8, int8 or int16, got {A.dtype}")
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
    if B.dtype != _PACKING.get(dtype, dtype):
        raise ValueError(f"B was packed for {B.dtype!r}, but A ({A.dtype}) needs {dtype!r}")
    if batched and B.layout != "rows":
        raise ValueError("B was packed in panels, a layout for gemm; batch_reduce needs layout='rows'")
    if batched and B.batch is None:
        raise ValueError("B must be a batched PackedB (packed from a (batch, K, N) array)")
    if not batched and B.batch is not None:
        raise ValueError("B must be a single packed matrix (packed from a (K, N) array), not a batch")
    return B


def batch_reduce(A, B, C=None, *, beta=0.0, epilogue=None):
    """``C = epilogue(beta·C + Σ_i A[i] @ B[i])`` for A (batch, M, K) and B (batch, K, N).

    The kernel follows A's dtype: float32 (B float32, or float16: half-precision weights
    widened in the kernel, "f32f16"), ml_dtypes.bfloat16 (B bfloat16),
    uint8 or int8 (B int8, exact int32 sums; beta 0 or 1), int16 (B int16, int32 sums: exact
    while they fit, wrapped modulo 2^32 otherwise; beta 0 or 1). B may be a plain array or, for
    the low-precision dtypes, a batched :class:`PackedB` from :func:`pack_b` (a plain one is
    packed on every call). C is float32 (int32 for int8 and int16) unless the :class:`Epilogue` says
    otherwise (``out_dtype``); zero points and the int8-A compensation use the PackedB's
    column sums. Rows must be contiguous; their strides (leading dimensions) and the batch
    strides are taken from the arrays, so slices of larger arrays work without copies.
    Writes into C (M, N) when given (it must not overlap A or B), else returns a new array
    (beta must be 0).
    """
    beta = _real(beta, "beta")
    epilogue = _epilogue(epilogue)
    dtype = _kernel_dtype(A, B)
    if dtype == "f32" and not isinstance(B, PackedB):
        return _core.batch_reduce(A, B, C, beta, epilogue)
    B = _as_packed(B, dtype, A, batched=True)
    return _core.batch_reduce_packed(A, _packed_data(B), B.k, B.n, C, beta, dtype, epilogue, B.colsum)


def _shared_gemm(A, B, C, beta, epilogue):
    """gemm on shared weights (brgemm.quant.pack_shared): beta 0, an epilogue of a bias at most."""
    if beta != 0.0:
        raise ValueError("beta must be 0 with shared weights (B a brgemm.quant.SharedWeights)")
    bias = None
    if epilogue is not None:
        if not isinstance(epilogue, Epilogue) or epilogue.activation is not None or epilogue.out_dtype not in (
                None, "float32") or epilogue.scale is not None:
            raise ValueError("epilogue with shared weights may only add a bias (Epilogue(bias=...))")
        bias = epilogue.bias
    return B.gemm(A, C, bias)


def gemm(A, B, C=None, *, beta=0.0, epilogue=None):
    """``C = epilogue(beta·C + A @ B)`` on the BRGEMM with OpenMP over tiles of C
    (``set_num_threads``).

    The kernel follows A's dtype, as in :func:`batch_reduce`: float32 (× float32 or float16),
    bfloat16, uint8 or int8 (× int8, exact int32 sums; beta 0 or 1), int16 (× int16, int32 sums).
    For the low-precision dtypes pass B packed
    once with :func:`pack_b` (a 2-D PackedB, fastest in ``layout="panels"``): a plain B is
    packed again on every call. B may also be shared weights packed once as "codebook panels"
    (:func:`brgemm.quant.pack_shared`: b-bit indices widened in registers; float32 A, beta 0, an
    epilogue of a bias at most). The
    :class:`Epilogue` (bias, ReLU, dequantization, bf16 or requantized uint8/int8 output) is
    applied to each tile of C while it is in cache. Rows must be contiguous; row strides may
    exceed the width. Writes into C when given, else returns a new array (beta must be 0)."""
    beta = _real(beta, "beta")
    if isinstance(B, SharedWeights):
        return _shared_gemm(A, B, C, beta, epilogue)
    if epilogue is not None and not isinstance(epilogue, Epilogue):
        epilogue = _epilogue(epilogue)
    dtype = _kernel_dtype(A, B)
    if dtype == "f32" and not isinstance(B, PackedB):
        return _core.gemm(A, B, C, beta, epilogue)
    B = _as_packed(B, dtype, A, batched=False)
    if dtype == "f32" and B.layout == "rows":
        return _core.gemm(A, B.data[:, :B.n], C, beta, epilogue)
    return _core.gemm_packed(A, _packed_data(B), B.k, B.n, C, beta, dtype, epilogue, B.colsum,
                             B.layout == "panels")
