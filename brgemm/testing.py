"""Test oracles for brgemm: plain numpy references in float64 and the error bounds they are
compared with. This is the *oracle*, not the fallback: the scalar C++ ukernel is production
code and is tested against this module like every ISA (STYLE.md point 8).

The batch-reduce GEMM is

    C[m×n] = beta·C0 + Σ_{i<count} A_i[m×k] · B_i[k×n]

and beta = 0 means C0 is never read (it may hold NaN): the reference then ignores it.

Sections: the f32 reference and its bound; bf16 (why the same bound holds); int8 (exact
int64, VNNI-4 index arithmetic); and :func:`make_problem`, one generator for every kernel
dtype, which builds the operands of one kernel call the way the kernel addresses them (flat
buffers with leading dimensions, B packed, stride / offset / address batches, padding the
kernel must leave alone), with :meth:`Problem.check` comparing a result with the oracle and
checking that nothing outside the m×n window of C was written.
"""

import functools
from dataclasses import dataclass, field

import numpy as np

#: Unit roundoff of float32 (round to nearest): 2**-24.
U32 = 2.0 ** -24

#: The constant c of the bound |C - ref| <= c·(K_total + 2)·u·(Σ_i |A_i||B_i| + |beta·C0|).
#:
#: Why it is (and may be) this small: every element of C is an inner product of length
#: K_total = count·k plus the term beta·C0. For any summation order, with or without FMA,
#: floating-point evaluation satisfies |fl(x·y) - x·y| <= γ_d |x|·|y| with γ_d = d·u/(1 - d·u)
#: and d the largest number of roundings any one term goes through (Higham, Accuracy and
#: Stability of Numerical Algorithms, §3.1 and Lemma 3.4). Here d <= K_total + 2: at most
#: K_total multiply-adds, one product beta·C0 and one final addition (when a driver splits K
#: into chunks and adds each chunk's partial sum into C with beta = 1, a term still goes
#: through at most K_total + 2 roundings as long as chunks hold two or more elements).
#: So the exact bound is c = 1 / (1 - (K_total + 2)·u), which is <= 1.0099 while
#: (K_total + 2)·u <= 0.0098, i.e. K_total <= 164 000 (:func:`error_bound` refuses more).
#: The remaining slack up to 1.01 covers the float64 reference's own error (relative
#: 2**-53·K_total, some 2**-29 of the bound) and the rounding of the bound's own evaluation.
#: This is a worst-case bound: it must never be raised to make a test pass.
TOL_C = 1.01

_MAX_DEPTH_U = 0.0098  # (K_total + 2)·u must stay below this for TOL_C to be a bound


def _f64(x):
    return np.asarray(x, dtype=np.float64)


def kernel_beta(beta):
    """The beta the C++ kernel computes with: the float32 nearest to ``beta``."""
    return float(np.float32(beta))


def reference(a_blocks, b_blocks, c0=None, beta=0.0):
    """float64 ``beta·C0 + Σ_i A_i @ B_i`` for lists of 2-D blocks A_i (m×k), B_i (k×n).

    beta = 0 ignores C0 entirely (it may be None or hold NaN), as the kernel must.
    ``beta`` is taken as the float32 the kernel uses. Empty lists need ``shape`` from C0.
    """
    if len(a_blocks) != len(b_blocks):
        raise ValueError("a_blocks and b_blocks differ in length")
    beta = kernel_beta(beta)
    if a_blocks:
        m, n = a_blocks[0].shape[0], b_blocks[0].shape[1]
    elif c0 is not None:
        m, n = np.shape(c0)
    else:
        raise ValueError("an empty batch needs c0 for the shape")
    acc = np.zeros((m, n), dtype=np.float64)
    for a, b in zip(a_blocks, b_blocks):
        acc += _f64(a) @ _f64(b)
    if beta != 0.0:
        acc += beta * _f64(c0)
    return acc


def error_bound(a_blocks, b_blocks, c0=None, beta=0.0, k=None):
    """Elementwise bound on |C - reference|: TOL_C·(K_total + 2)·u·(Σ_i|A_i||B_i| + |beta·C0|)
    with u = 2**-24 and K_total = count·k (see TOL_C for the derivation).

    ``k`` is only needed for an empty batch (K_total is then 0 whatever k is).
    """
    beta = kernel_beta(beta)
    count = len(a_blocks)
    if count:
        k = a_blocks[0].shape[1]
        m, n = a_blocks[0].shape[0], b_blocks[0].shape[1]
    else:
        m, n = np.shape(c0)
        k = 0
    k_total = count * k
    depth = k_total + 2
    if depth * U32 > _MAX_DEPTH_U:
        raise ValueError(f"K_total = {k_total} is too deep for the f32 bound (see TOL_C)")
    mag = np.zeros((m, n), dtype=np.float64)
    for a, b in zip(a_blocks, b_blocks):
        mag += np.abs(_f64(a)) @ np.abs(_f64(b))
    if beta != 0.0:
        mag += np.abs(beta * _f64(c0))
    return TOL_C * depth * U32 * mag


def assert_close(C, a_blocks, b_blocks, c0=None, beta=0.0, *, what="C"):
    """Asserts that the m×n result ``C`` is within :func:`error_bound` of :func:`reference`
    in every element (NaN or inf anywhere fails)."""
    C = np.asarray(C)
    ref = reference(a_blocks, b_blocks, c0, beta)
    bound = error_bound(a_blocks, b_blocks, c0, beta)
    if C.shape != ref.shape:
        raise AssertionError(f"{what} has shape {C.shape}, the reference {ref.shape}")
    err = np.abs(_f64(C) - ref)
    ok = err <= bound  # False for NaN
    if not ok.all():
        bad = np.argwhere(~ok)
        i, j = bad[0]
        raise AssertionError(
            f"{what}: {len(bad)} of {C.size} elements outside the bound; first at [{i}, {j}]: "
            f"got {C[i, j]!r}, reference {ref[i, j]!r}, |error| {err[i, j]:.3g} > bound "
            f"{bound[i, j]:.3g}")


def assert_agree(C1, C2, a_blocks, b_blocks, c0=None, beta=0.0, *, what="results"):
    """Two computed results (e.g. two ISAs) agree: each is within the bound of the exact
    value, so they differ by at most twice the bound."""
    bound = 2.0 * error_bound(a_blocks, b_blocks, c0, beta)
    err = np.abs(_f64(C1) - _f64(C2))
    ok = err <= bound
    if not ok.all():
        i, j = np.argwhere(~ok)[0]
        raise AssertionError(f"{what} disagree at [{i}, {j}]: {C1[i, j]!r} vs {C2[i, j]!r}, "
                             f"|difference| {err[i, j]:.3g} > {bound[i, j]:.3g}")


def block(buf, offset, rows, cols, ld):
    """The rows × cols block of a flat buffer starting at element ``offset`` with row stride
    ``ld``, as a new array (fancy indexing: an address outside the buffer raises)."""
    idx = offset + np.arange(rows)[:, None] * ld + np.arange(cols)[None, :]
    if idx.size and (idx.min() < 0 or idx.max() >= buf.size):
        raise IndexError(f"block at {offset} (rows {rows}, cols {cols}, ld {ld}) is outside "
                         f"a buffer of {buf.size}")
    return np.asarray(buf).reshape(-1)[idx]


def window_mask(size, rows, cols, ld, offset=0):
    """Boolean mask over a flat buffer of ``size``: True on the rows × cols window."""
    mask = np.zeros(size, dtype=bool)
    idx = offset + np.arange(rows)[:, None] * ld + np.arange(cols)[None, :]
    mask[idx.reshape(-1)] = True
    return mask


def random_f32(shape, rng):
    """Standard normal float32 values (no exact zeros, no cancellation-free structure)."""
    return rng.standard_normal(shape, dtype=np.float32)


def raw(x):
    """The raw bits of an array (uint16 for bfloat16, uint32 for float32) as a flat copy, for
    bit-identical (NaN-aware) comparison of inputs and untouched outputs."""
    x = np.ascontiguousarray(x)
    return x.view({2: np.uint16, 4: np.uint32, 1: np.uint8}[x.itemsize]).reshape(-1).copy()


def bits(x):
    """The raw bits of a float32 array, for bit-identical (NaN-aware) comparison."""
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)


def padded(rng, shape, pad, offset=None):
    """A random float32 array of ``shape`` that is a slice of a larger array: every axis is
    ``pad`` longer and the slice starts at ``offset`` (default 1 on every axis), so its
    strides exceed its shape. Returns (view, base)."""
    pad = (pad,) * len(shape) if np.isscalar(pad) else tuple(pad)
    offset = (1,) * len(shape) if offset is None else tuple(offset)
    base = random_f32(tuple(s + p for s, p in zip(shape, pad)), rng)
    view = base[tuple(slice(o, o + s) for o, s in zip(offset, shape))]
    return view, base


def next_prime_above(x):
    """The smallest prime > x."""
    p = x + 1
    while p < 2 or any(p % d == 0 for d in range(2, int(p ** 0.5) + 1)):
        p += 1
    return p


# --- bf16 ------------------------------------------------------------------------------------
#
# The bf16 kernels (dtype "bf16") multiply A bfloat16 (m×k, row stride lda) by B bfloat16 packed
# VNNI-2 (element (k, n) at ((k/2)·ldb + n)·2 + k%2, K zero-padded to even) into float32 C. The
# oracle works on the *logical* blocks (A_i m×k, B_i k×n, both bfloat16): the float64
# :func:`reference` of the values the kernel was given, never the packed buffer, so that a
# packing mistake shows up as a wrong result.
#
# Tolerance: the f32 bound, TOL_C·(K_total + 2)·u·(Σ_i|A_i||B_i| + |beta·C0|), unchanged.
#   - The inputs are exact in f32 (a bf16 is the top half of an f32), and the product of two
#     bf16 values has at most 8 + 8 = 16 significant bits, so it is exact in f32: the kernel
#     sums K_total exact products in f32, which is the situation TOL_C was derived for.
#   - The FMA kernels (scalar, avx2, avx512: widened to f32) round once per multiply-add.
#     vdpbf16ps adds two products per 32-bit lane to the accumulator: as two f32 additions
#     with one rounding each (Intel's definition) or fused with fewer; either way no term goes
#     through more roundings than in a chain of single FMAs, so d <= K_total + 2 still holds.
#     The zero that pads odd K adds nothing and is exact.
#   - vdpbf16ps differs from an FMA in two ways that matter here: it always rounds to nearest
#     even (so does the FMA under the default MXCSR), and it treats subnormal inputs as zero
#     and flushes subnormal results to zero (DAZ/FTZ), which the relative bound does not
#     cover. It cannot happen when every nonzero input has |x| >= 2**-44: x (8 significant
#     bits) is then a multiple of 2**-51, so every product is a multiple of 2**-102, hence of
#     2**-125. A sum of two multiples of 2**-125 is one too, and rounding it to f32 keeps it
#     one (below 2**-102 in magnitude it has at most 23 significant bits and is exact; from
#     2**-102 up, the f32 spacing is a multiple of 2**-125). By induction every partial sum is
#     a multiple of 2**-125: zero or a normal f32 (>= 2**-126), never subnormal.
#     :func:`error_bound_bf16` checks this condition instead of assuming it;
#     :func:`random_bf16` produces no such tiny values.
#     (Overflow is excluded the same way as for f32: by inputs of modest size.)
# So bf16 needs no looser tolerance than f32; it must not be raised to make a test pass.

#: Smallest nonzero |input| for which vdpbf16ps's DAZ/FTZ cannot change a result (see above).
BF16_MIN_INPUT = 2.0 ** -44


def _bf16_dtype():
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


def random_bf16(shape, rng):
    """Standard normal values rounded to bfloat16; magnitudes below BF16_MIN_INPUT (about
    one in 10**13) are replaced by 1."""
    x = rng.standard_normal(shape, dtype=np.float32)
    x[np.abs(x) < BF16_MIN_INPUT] = 1.0
    return x.astype(_bf16_dtype())


def _bf16_blocks(blocks, name, domain=False):
    """Checks that blocks are bfloat16 (the values the kernel was given) and, with ``domain``,
    inside the bound's domain (no nonzero |x| < BF16_MIN_INPUT)."""
    for i, b in enumerate(blocks):
        if np.asarray(b).dtype != _bf16_dtype():
            raise TypeError(f"{name}[{i}] must be bfloat16 (the values the kernel was given), "
                            f"got {np.asarray(b).dtype}")
        mag = np.abs(_f64(b))
        tiny = (mag > 0) & (mag < BF16_MIN_INPUT)
        if domain and tiny.any():
            raise ValueError(f"{name}[{i}] holds |x| = {mag[tiny].min():.3g} < 2**-44: vdpbf16ps's "
                             "flush to zero is outside the bound there (see BF16_MIN_INPUT)")


def reference_bf16(a_blocks, b_blocks, c0=None, beta=0.0):
    """float64 ``beta·C0 + Σ_i A_i @ B_i`` for bfloat16 blocks A_i (m×k) and *unpacked* B_i
    (k×n); beta = 0 ignores C0 (it may hold NaN)."""
    _bf16_blocks(a_blocks, "a_blocks")
    _bf16_blocks(b_blocks, "b_blocks")
    return reference(a_blocks, b_blocks, c0, beta)


def error_bound_bf16(a_blocks, b_blocks, c0=None, beta=0.0):
    """Elementwise bound on |C - reference_bf16|: the f32 bound of :func:`error_bound` (see the
    derivation at the top of this section). Refuses inputs outside its domain (a nonzero
    |x| < BF16_MIN_INPUT) rather than returning a bound that might not hold."""
    _bf16_blocks(a_blocks, "a_blocks", domain=True)
    _bf16_blocks(b_blocks, "b_blocks", domain=True)
    return error_bound(a_blocks, b_blocks, c0, beta)


def assert_close_bf16(C, a_blocks, b_blocks, c0=None, beta=0.0, *, what="C"):
    """Asserts that the m×n float32 result ``C`` is within :func:`error_bound_bf16` of
    :func:`reference_bf16` in every element (NaN or inf anywhere fails)."""
    error_bound_bf16(a_blocks, b_blocks, c0, beta)  # the domain checks
    assert_close(C, a_blocks, b_blocks, c0, beta, what=what)


def assert_agree_bf16(C1, C2, a_blocks, b_blocks, c0=None, beta=0.0, *, what="results"):
    """Two computed bf16-kernel results agree: each within the bound, so within twice it."""
    error_bound_bf16(a_blocks, b_blocks, c0, beta)
    assert_agree(C1, C2, a_blocks, b_blocks, c0, beta, what=what)


def pack_vnni2(B, ldb=None):
    """numpy VNNI-2 packing of one bfloat16 B (k×n): shape (ceil(k/2), ldb, 2), element
    (k, n) at [k//2, n, k%2], zeros in the K padding and in the columns n..ldb."""
    k, n = B.shape
    ldb = n if ldb is None else ldb
    out = np.zeros(((k + 1) // 2, ldb, 2), dtype=B.dtype)
    for kk in range(k):
        out[kk // 2, :n, kk % 2] = B[kk]
    return out


def unpack_vnni2(packed, k, n):
    """The k×n B that a VNNI-2 array (ceil(k/2), ldb, 2) holds (its inverse of pack_vnni2)."""
    rows = (k + 1) // 2
    if packed.ndim != 3 or packed.shape[0] != rows or packed.shape[2] != 2 or packed.shape[1] < n:
        raise ValueError(f"not a VNNI-2 array for k = {k}, n = {n}: shape {packed.shape}")
    return packed[:, :n, :].transpose(0, 2, 1).reshape(2 * rows, n)[:k]


# --- int8 ---
# The u8s8 kernels: A uint8 (m×k, row stride lda) × B int8 packed VNNI-4 by brgemm.pack_b
# (element (k, n) at ((k/4)·ldb + n)·4 + k%4, K zero-padded to whole quads) → C int32, with
# beta 0 (C written, never read: it may hold any garbage) or 1 (C accumulated). Integer sums do
# not depend on the order, so the oracle is exact (int64) and every kernel must equal it, bit
# for bit, on every ISA; there is no tolerance.

S32_MIN, S32_MAX = -(2 ** 31), 2 ** 31 - 1

#: Largest K_total for which A = 255 and B = -128 (resp. 127) everywhere still fits in s32:
#: K·255·128 <= 2^31 and K·255·127 <= 2^31 - 1. One more quad of k overflows.
K_MAX_255_M128 = 2 ** 31 // (255 * 128)         # 65793: sum -2 147 450 880
K_MAX_255_127 = (2 ** 31 - 1) // (255 * 127)    # 66311: sum  2 147 474 235


def reference_u8s8(a_blocks, b_blocks, c0=None, beta=0.0):
    """Exact int64 ``beta·C0 + Σ_i A_i @ B_i`` for lists of 2-D uint8 A_i (m×k) and int8
    B_i (k×n), unpacked. beta must be 0 (C0 ignored, it may be None) or 1."""
    if len(a_blocks) != len(b_blocks):
        raise ValueError("a_blocks and b_blocks differ in length")
    if beta not in (0, 1):
        raise ValueError(f"u8s8 beta must be 0 or 1, got {beta!r}")
    if a_blocks:
        m, n = a_blocks[0].shape[0], b_blocks[0].shape[1]
    elif c0 is not None:
        m, n = np.shape(c0)
    else:
        raise ValueError("an empty batch needs c0 for the shape")
    acc = np.zeros((m, n), dtype=np.int64)
    for a, b in zip(a_blocks, b_blocks):
        if np.asarray(a).dtype != np.uint8 or np.asarray(b).dtype != np.int8:
            raise TypeError("the u8s8 oracle takes uint8 A and int8 B blocks")
        acc += np.asarray(a, dtype=np.int64) @ np.asarray(b, dtype=np.int64)
    if beta == 1:
        acc += np.asarray(c0, dtype=np.int64)
    return acc


def assert_exact_s32(C, ref, *, what="C"):
    """``C`` (int32) equals the int64 reference exactly, and the reference fits in int32 (a
    test must never depend on wrap-around)."""
    C = np.asarray(C)
    if C.dtype != np.int32:
        raise AssertionError(f"{what} has dtype {C.dtype}, expected int32")
    if ref.size and (ref.min() < S32_MIN or ref.max() > S32_MAX):
        raise AssertionError(f"the reference for {what} overflows int32: the test is wrong")
    if C.shape != ref.shape:
        raise AssertionError(f"{what} has shape {C.shape}, the reference {ref.shape}")
    bad = C.astype(np.int64) != ref
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise AssertionError(f"{what}: {int(bad.sum())} of {C.size} elements differ from the exact "
                             f"result; first at [{i}, {j}]: got {C[i, j]}, expected {ref[i, j]}")


def packed_rows(k, kp=4):
    """Packed rows of a block: K padded to whole quads (pairs for kp = 2)."""
    return (k + kp - 1) // kp


def packed_b_extent(k, n, ldb, kp=4):
    """Elements a kernel reads of one packed block: ceil(k/kp) - 1 full rows of ldb·kp, then n·kp."""
    return (packed_rows(k, kp) - 1) * ldb * kp + n * kp


def unpack_vnni4(buf, offset, k, n, ldb, kp=4):
    """The k×n B that the packed block at element ``offset`` of the flat buffer ``buf``
    stands for (VNNI-4; ``kp`` = 2 is VNNI-2 and 1 plain rows), read with the layout's own
    index formula (fancy indexing: an index outside the buffer raises)."""
    kk, j = np.arange(k)[:, None], np.arange(n)[None, :]
    idx = offset + ((kk // kp) * ldb + j) * kp + kk % kp  # element (k, n) of the packed layout
    flat = np.asarray(buf).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= flat.size):
        raise IndexError(f"packed block at {offset} (k {k}, n {n}, ldb {ldb}) is outside a buffer of {flat.size}")
    return flat[idx]


def random_u8(shape, rng):
    """Uniform uint8 over the whole range 0..255."""
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def random_s8(shape, rng):
    """Uniform int8 over the whole range -128..127."""
    return rng.integers(-128, 128, size=shape, dtype=np.int8)


def random_s32(shape, rng, bound=2 ** 31):
    """Uniform int32 in [-bound, bound) (the default: every int32, garbage for beta = 0)."""
    return rng.integers(-bound, bound, size=shape, dtype=np.int64).astype(np.int32)



# --- int16 ---
# The s16s16 kernels: A int16 (m×k) × B int16 packed VNNI-2 (as bf16) → C int32, beta 0 or 1.
# Products and sums wrap modulo 2^32 on every ISA; the tests keep the exact sum inside int32
# (random values of at most 2^12 in magnitude: |Σ| stays far below 2^31 for K_total ≤ 10^4),
# except where they test the wrap itself (reference_s16s16(..., wrap=True)).

def random_s16(shape, rng, bound=2 ** 12):
    """Uniform int16 in [-bound, bound) (bound ≤ 2^15; the default keeps sums inside int32)."""
    return rng.integers(-bound, bound, size=shape, dtype=np.int16)


def reference_s16s16(a_blocks, b_blocks, c0=None, beta=0.0, *, wrap=False):
    """Exact int64 ``beta·C0 + Σ_i A_i @ B_i`` for lists of 2-D int16 A_i and B_i (unpacked);
    ``wrap``: reduced modulo 2^32 into the int32 range, as the kernels store it."""
    if len(a_blocks) != len(b_blocks):
        raise ValueError("a_blocks and b_blocks differ in length")
    if beta not in (0, 1):
        raise ValueError(f"s16s16 beta must be 0 or 1, got {beta!r}")
    m, n = (a_blocks[0].shape[0], b_blocks[0].shape[1]) if a_blocks else np.shape(c0)
    acc = np.zeros((m, n), dtype=np.int64)
    for a, b in zip(a_blocks, b_blocks):
        if np.asarray(a).dtype != np.int16 or np.asarray(b).dtype != np.int16:
            raise TypeError("the s16s16 oracle takes int16 A and B blocks")
        acc += np.asarray(a, dtype=np.int64) @ np.asarray(b, dtype=np.int64)
    if beta == 1:
        acc += np.asarray(c0, dtype=np.int64)
    return (acc + 2 ** 31) % 2 ** 32 - 2 ** 31 if wrap else acc



# --- one kernel call's operands, for every dtype -------------------------------------------------

@dataclass(frozen=True)
class _Operands:
    """How make_problem lays out one kernel dtype: A's and B's element types and random values,
    B's packing (kp rows interleaved; 1 = plain rows, ldb counting elements), what fills every
    element the kernel must not read ("nan": a read shows in C; "random": any value), C's type
    and its fills ("nan"/"garbage" for beta = 0, "random" that beta = 1 cannot overflow)."""
    random_a: object
    random_b: object
    kp: int
    unread: str
    c_dtype: object


_OPERANDS = {
    "f32": _Operands(random_f32, random_f32, 1, "random", np.float32),
    "f32f16": _Operands(random_f32, lambda shape, rng: random_f32(shape, rng).astype(np.float16), 1, "random",
                        np.float32),
    "bf16": _Operands(random_bf16, random_bf16, 2, "nan", np.float32),
    "u8s8": _Operands(random_u8, random_s8, 4, "random", np.int32),
    "s16s16": _Operands(random_s16, random_s16, 2, "random", np.int32),
}


@dataclass
class Problem:
    """The operands of one Kernel call and how the oracle reads them.

    ``a``, ``b`` (stride/offset) are flat buffers, or lists of flat blocks (address), B packed
    for the dtype; ``c`` is the flat output buffer (row stride ldc, padding filled with random
    values that the kernel must not touch) and ``c0`` its copy before the call. ``args`` /
    ``kwargs`` are the call's arguments after (A, B, C). ``a_blocks``/``b_blocks`` are the 2-D
    blocks the call names, read back out of the buffers by the oracle's own index arithmetic
    (B unpacked); ``b_plain`` are the matrices that were packed (:meth:`check` asserts both agree).
    """

    m: int
    n: int
    k: int
    lda: int
    ldb: int
    ldc: int
    beta: float
    batch: str
    count: int
    a: object
    b: object
    c: np.ndarray
    c0: np.ndarray
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    a_blocks: list = field(default_factory=list)
    b_blocks: list = field(default_factory=list)
    a0: object = None
    b0: object = None
    dtype: str = "f32"
    b_plain: list = field(default_factory=list)

    def kernel_kwargs(self):
        """Keyword arguments for brgemm.Kernel describing this problem (no ukernel)."""
        kw = dict(batch=self.batch, lda=self.lda, ldb=self.ldb, ldc=self.ldc, beta=self.beta)
        return kw if self.dtype == "f32" else dict(kw, dtype=self.dtype)

    def run(self, kernel, c=None):
        """Calls ``kernel`` on this problem's operands, writing into ``c`` (default: the
        problem's own C buffer); returns what the kernel returns."""
        c = self.c if c is None else c
        if self.batch == "address":
            return kernel(self.a, self.b, c)
        return kernel(self.a, self.b, c, *self.args, **self.kwargs)

    def c_window(self, c=None):
        """The m×n result inside the flat C buffer."""
        c = self.c if c is None else c
        return block(c, 0, self.m, self.n, self.ldc)

    def c0_window(self):
        return block(self.c0, 0, self.m, self.n, self.ldc)

    def reference(self):
        """The oracle's result: exact int64 for u8s8 and s16s16, float64 otherwise."""
        ref = {"u8s8": reference_u8s8, "s16s16": reference_s16s16}.get(self.dtype, reference)
        return ref(self.a_blocks, self.b_blocks, self.c0_window(), self.beta)

    def check(self, c=None, what="C"):
        """Result as the oracle says (:meth:`check_result`), every element of C outside the
        m×n window bit-identical to before the call, A and B unchanged, and B's blocks as
        unpacked by the oracle equal to the matrices that were packed."""
        c = self.c if c is None else c
        for name, now, before in (("A", self.a, self.a0), ("B", self.b, self.b0)):
            now = now if isinstance(now, list) else [now]
            before = before if isinstance(before, list) else [before]
            if not all(np.array_equal(raw(x), raw(y)) for x, y in zip(now, before)):
                raise AssertionError(f"{what}: the kernel modified its input {name}")
        if not all(np.array_equal(raw(x), raw(y)) for x, y in zip(self.b_plain, self.b_blocks)):
            raise AssertionError(f"{what}: B as packed and as the oracle unpacks it differ (the harness is wrong)")
        outside = ~window_mask(c.size, self.m, self.n, self.ldc)
        if not np.array_equal(raw(c)[outside], raw(self.c0)[outside]):
            raise AssertionError(f"{what}: the kernel wrote outside the m×n window (ldc = {self.ldc})")
        self.check_result(self.c_window(c), what)

    def check_result(self, window, what):
        """u8s8: exactly the oracle's result; bf16: within the f32 bound on the bf16 inputs
        (which checks their domain); f32 and f32f16: within the f32 bound."""
        if self.dtype in ("u8s8", "s16s16"):
            return assert_exact_s32(window, self.reference(), what=what)
        close = assert_close_bf16 if self.dtype == "bf16" else assert_close
        close(window, self.a_blocks, self.b_blocks, self.c0_window(), self.beta, what=what)

    def fresh_c(self):
        """A new copy of the C buffer as it was before any call."""
        return self.c0.copy()


def make_problem(m, n, k, *, rng, dtype="f32", batch="stride", count=1, lda=None, ldb=None, ldc=None,
                 beta=0.0, c_fill="random", stride_gap=0):
    """Operands for one call of a Kernel(m, n, k, dtype=..., batch=..., lda, ldb, ldc, beta):
    dtype "f32", "f32f16" (B float16), "bf16" (B packed VNNI-2), "u8s8" (B packed VNNI-4) or
    "s16s16" (B packed VNNI-2);
    B is packed by brgemm.pack_b, and offsets and strides of B count packed elements (one
    block spans ceil(k/KP) rows of ldb·KP).

    - stride: A and B are exactly as large as the call needs; strides are the defaults
      (m·lda and one packed block, passed as None) unless ``stride_gap`` > 0, which passes
      explicit strides that leave gaps (m·lda + gap, one block + 2·gap + 1: B's blocks then
      start at odd elements, a bf16 pair straddles 4-byte words).
    - offset: blocks sit in slots with gaps, in a shuffled order, and when count >= 3 one
      block of A and one of B are used twice (repeated offsets are legal).
    - address: every block is its own array, exactly as long as the kernel's extent.

    Every element of A and B the kernel must not read (A's columns k..lda, B's packed columns
    n..ldb, the gaps between blocks) is NaN for bf16, so that reading it shows in C, and random
    otherwise; B's K padding is the packer's zero. ``c_fill``: "random", "nan" (the m×n window
    NaN; floats with beta = 0) or "garbage" (u8s8 and s16s16 with beta = 0: any int32, the extremes
    too).
    C's padding (ldc > n and a tail) is random and must survive the call bit for bit.
    """
    from . import pack_b  # the packer under test is brgemm's own; the oracle unpacks on its own

    op = _OPERANDS[dtype]
    lda = k if lda is None else lda
    ldb = n if ldb is None else ldb
    ldc = n if ldc is None else ldc
    kp = op.kp
    a_ext = (m - 1) * lda + k
    b_ext = packed_b_extent(k, n, ldb, kp)  # what the kernel reads of one packed block
    b_size = packed_rows(k, kp) * ldb * kp  # one whole packed block
    args, kwargs = (), {}

    if batch == "stride":
        sa = m * lda + stride_gap
        sb = b_size + (2 * stride_gap + 1 if stride_gap else 0)
        offs_a, offs_b = [i * sa for i in range(count)], [i * sb for i in range(count)]
        size_a, size_b = max(count - 1, 0) * sa + a_ext, max(count - 1, 0) * sb + b_ext
        args = (count,)
        if stride_gap:
            kwargs = dict(stride_a=sa, stride_b=sb)
    elif batch == "offset":
        slot_a, slot_b = a_ext + 3, b_ext + 5
        offs_a = rng.permutation(count).astype(np.int64) * slot_a
        offs_b = rng.permutation(count).astype(np.int64) * slot_b
        if count >= 3:
            offs_a[2] = offs_a[0]
            offs_b[1] = offs_b[count - 1]
        size_a, size_b = max(count - 1, 0) * slot_a + a_ext, max(count - 1, 0) * slot_b + b_ext
        args = (offs_a, offs_b)
    elif batch == "address":  # one buffer per block, each at offset 0
        offs_a = offs_b = [0] * count
        size_a, size_b = a_ext, b_ext
    else:
        raise ValueError(f"unknown batch kind {batch!r}")

    def unread(random, size):  # a buffer of what the kernel must not read
        return np.full(size, np.nan, dtype=_bf16_dtype()) if op.unread == "nan" else random(size, rng)

    address = batch == "address"
    a = [unread(op.random_a, size_a) for _ in range(count if address else 1)]
    b = [unread(op.random_b, size_b) for _ in range(count if address else 1)]
    col = (np.arange(b_ext) // kp) % ldb
    plain = {}
    for i, (oa, ob) in enumerate(zip(offs_a, offs_b)):
        ai, bi = (a[i], b[i]) if address else (a[0], b[0])
        oa, ob = int(oa), int(ob)
        if (id(ai), oa) not in plain:  # a block named twice is written once
            plain[id(ai), oa] = op.random_a((m, k), rng)
            ai[oa + np.arange(m)[:, None] * lda + np.arange(k)[None, :]] = plain[id(ai), oa]
        if (id(bi), ob) not in plain:
            plain[id(bi), ob] = op.random_b((k, n), rng)
            packed = pack_b(plain[id(bi), ob], dtype, ldb=ldb).data.reshape(-1)[:b_ext]
            bi[ob:ob + b_ext][col < n] = packed[col < n]  # columns n..ldb stay unread
    a_blocks = [block(a[i] if address else a[0], int(o), m, k, lda) for i, o in enumerate(offs_a)]
    b_blocks = [unpack_vnni4(b[i] if address else b[0], int(o), k, n, ldb, kp) for i, o in enumerate(offs_b)]
    b_plain = [plain[id(b[i] if address else b[0]), int(o)] for i, o in enumerate(offs_b)]
    if not address:
        a, b = a[0], b[0]

    c_size = (m - 1) * ldc + n + 3  # a short tail after the last row: it must stay untouched
    inside = window_mask(c_size, m, n, ldc)
    fills = ("random", "garbage") if op.c_dtype == np.int32 else ("random", "nan")
    if c_fill not in fills or c_fill == "garbage" and beta != 0:
        raise ValueError(f"c_fill must be one of {fills} for {dtype} ('garbage' only with beta = 0), got {c_fill!r}")
    if op.c_dtype == np.int32:  # "random" within ±2**30: beta = 1 cannot overflow
        c = random_s32(c_size, rng, bound=2 ** 31 if c_fill == "garbage" else 2 ** 30)
        if c_fill == "garbage":
            c[inside.nonzero()[0][[0, -1]]] = S32_MIN, S32_MAX  # the extremes too
    else:
        c = random_f32(c_size, rng)
        if c_fill == "nan":
            c[inside] = np.nan
    copy = lambda x: [y.copy() for y in x] if isinstance(x, list) else x.copy()  # noqa: E731
    return Problem(m=m, n=n, k=k, lda=lda, ldb=ldb, ldc=ldc, beta=beta, batch=batch, count=count,
                   a=a, b=b, c=c, c0=c.copy(), args=args, kwargs=kwargs, a_blocks=a_blocks, b_blocks=b_blocks,
                   a0=copy(a), b0=copy(b), dtype=dtype, b_plain=b_plain)


#: The generator for one dtype, by the names the kernel tests import.
make_problem_bf16 = functools.partial(make_problem, dtype="bf16")
make_problem_u8s8 = functools.partial(make_problem, dtype="u8s8")
make_problem_s16s16 = functools.partial(make_problem, dtype="s16s16")


def guarded(count, dtype, _keep=[]):
    """A writable array of ``count`` elements of ``dtype`` that ends exactly where a PROT_NONE
    page begins, so that a kernel reading or writing one element past it faults (Linux: mmap
    and mprotect through ctypes). The mappings are kept alive for the process's lifetime."""
    import ctypes
    import mmap
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    page = mmap.PAGESIZE
    nbytes = count * np.dtype(dtype).itemsize
    pages = -(-nbytes // page) + 1
    mm = mmap.mmap(-1, pages * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(mm))
    if libc.mprotect(ctypes.c_void_p(base + (pages - 1) * page), page, 0) != 0:
        raise OSError(ctypes.get_errno(), "mprotect")
    _keep.append(mm)
    raw = np.frombuffer(mm, dtype=np.uint8, count=(pages - 1) * page)
    return raw[raw.size - nbytes:].view(dtype)
