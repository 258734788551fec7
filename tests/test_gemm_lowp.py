"""gemm with bf16 and int8 operands (B packed once with pack_b in rows or in column panels, or
plain and packed per call) against float64 / exact int64 oracles, under every ISA and with 1
and 2 threads: odd K (VNNI padding), K spanning several K chunks, shapes that take the
panel-copy path and shapes that do not, the few-row path; the panel layout itself; and the
errors that belong to packed B."""

import ml_dtypes
import numpy as np
import pytest

import brgemm
from brgemm.testing import TOL_C, U32

BF16 = ml_dtypes.bfloat16

# (M, K, N): tiny, odd K, K over two chunks of 512 with a remainder not a multiple of 4,
# M large enough that the driver copies B panels, N not a multiple of 64.
SHAPES = [(1, 1, 1), (3, 5, 7), (7, 33, 70), (64, 1031, 130), (40, 600, 1100)]


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    old = brgemm.get_num_threads()
    brgemm.set_num_threads(request.param)
    yield request.param
    brgemm.set_num_threads(old)


@pytest.mark.parametrize("m, k, n", SHAPES, ids=[f"{m}x{k}x{n}" for m, k, n in SHAPES])
def test_gemm_bf16(isa, threads, m, k, n):
    rng = np.random.default_rng(m * 1000 + k + n)
    A = rng.standard_normal((m, k)).astype(BF16)
    B = rng.standard_normal((k, n)).astype(BF16)
    a, b = A.astype(np.float64), B.astype(np.float64)
    ref = a @ b
    bound = TOL_C * (k + 2) * U32 * (np.abs(a) @ np.abs(b))
    for Bx in (brgemm.pack_b(B, "bf16"), brgemm.pack_b(B, "bf16", layout="panels"), B):
        C = brgemm.gemm(A, Bx)
        assert C.dtype == np.float32 and C.shape == (m, n)
        assert np.all(np.abs(C - ref) <= bound)
    # beta = 1 accumulates into a given C.
    C0 = rng.standard_normal((m, n)).astype(np.float32)
    C = brgemm.gemm(A, brgemm.pack_b(B, "bf16"), C0.copy(), beta=1.0)
    assert np.all(np.abs(C - (ref + C0)) <= bound + TOL_C * (k + 2) * U32 * np.abs(C0))


@pytest.mark.parametrize("m, k, n", SHAPES, ids=[f"{m}x{k}x{n}" for m, k, n in SHAPES])
def test_gemm_int8_exact(isa, threads, m, k, n):
    rng = np.random.default_rng(m * 1000 + k + n)
    A = rng.integers(0, 256, (m, k), dtype=np.uint8)
    B = rng.integers(-128, 128, (k, n), dtype=np.int8)
    ref = A.astype(np.int64) @ B.astype(np.int64)
    for Bx in (brgemm.pack_b(B, "u8s8"), brgemm.pack_b(B, "u8s8", layout="panels"), B):
        C = brgemm.gemm(A, Bx)
        assert C.dtype == np.int32
        np.testing.assert_array_equal(C, ref)
        # int8 A through the same packed B (the s8 shift and its compensation).
        As = (A ^ 0x80).view(np.int8)
        np.testing.assert_array_equal(brgemm.gemm(As, Bx), As.astype(np.int64) @ B.astype(np.int64))
    C0 = rng.integers(-1000, 1000, (m, n), dtype=np.int32)
    for layout in ("rows", "panels"):
        np.testing.assert_array_equal(brgemm.gemm(A, brgemm.pack_b(B, "u8s8", layout=layout), C0.copy(), beta=1),
                                      ref + C0)


FLOAT_SHAPES = SHAPES + [(2, 4096, 300)]  # + the few-row path over a long K


@pytest.mark.parametrize("dtype", ["f32", "f32f16"])
@pytest.mark.parametrize("m, k, n", FLOAT_SHAPES, ids=[f"{m}x{k}x{n}" for m, k, n in FLOAT_SHAPES])
def test_gemm_float_weights_in_panels(isa, threads, dtype, m, k, n):
    """float32 activations on f32 or f16 weights packed in panels, against float64 on the same
    (exactly representable) weights; beta = 1 too."""
    rng = np.random.default_rng(m * 1000 + k + n)
    A = rng.standard_normal((m, k)).astype(np.float32)
    B = rng.standard_normal((k, n)).astype(np.float16 if dtype == "f32f16" else np.float32)
    a, b = A.astype(np.float64), B.astype(np.float64)
    bound = TOL_C * (k + 2) * U32 * (np.abs(a) @ np.abs(b))
    P = brgemm.pack_b(B, dtype, layout="panels")
    C = brgemm.gemm(A, P)
    assert C.dtype == np.float32 and np.all(np.abs(C - a @ b) <= bound)
    C0 = rng.standard_normal((m, n)).astype(np.float32)
    C = brgemm.gemm(A, P, C0.copy(), beta=1.0)
    assert np.all(np.abs(C - (a @ b + C0)) <= bound + TOL_C * (k + 2) * U32 * np.abs(C0))


def unpack_panels(P):
    """B (K, N) from a PackedB in panels, read by the documented layout (panel p, packed row r,
    column c, lane i holds B[r·KP + i, p·64 + c]), with the K and N padding beside it."""
    d = P.data if P.kp > 1 else P.data[..., None]
    n_panels, rows, width, kp = d.shape
    full = d.transpose(1, 3, 0, 2).reshape(rows * kp, n_panels * width)
    return full[:P.k, :P.n], full[P.k:], full[:, P.n:]


@pytest.mark.parametrize("dtype, elem", [("f32", np.float32), ("f32f16", np.float16), ("bf16", BF16),
                                         ("u8s8", np.int8)])
@pytest.mark.parametrize("k, n", [(1, 1), (5, 64), (7, 65), (130, 200)])
def test_pack_b_panels_layout(dtype, elem, k, n):
    rng = np.random.default_rng(k * 100 + n)
    B = (rng.integers(-128, 128, (k, n)) if elem == np.int8 else rng.standard_normal((k, n))).astype(elem)
    P = brgemm.pack_b(B, dtype, layout="panels")
    kp = {"bf16": 2, "u8s8": 4}.get(dtype, 1)
    assert P.layout == "panels" and P.ldb == 64 and P.kp == kp and P.k == k and P.n == n
    assert P.data.shape[:3] == (-(-n // 64), -(-k // kp), 64) and P.data.ctypes.data % 64 == 0
    got, k_pad, n_pad = unpack_panels(P)
    np.testing.assert_array_equal(got.view(np.uint8), B.view(np.uint8))
    assert not np.ascontiguousarray(k_pad).view(np.uint8).any() and not np.ascontiguousarray(n_pad).view(np.uint8).any()
    if dtype == "u8s8":
        np.testing.assert_array_equal(P.colsum, B.astype(np.int64).sum(axis=0))


def test_gemm_int8_extremes_bit_identical_across_isas():
    # 255 × -128 everywhere: K = 1031 gives -33 653 760, far inside s32 (|sum| < 2^31 for K < 65 793).
    k = 1031
    A = np.full((20, k), 255, np.uint8)
    B = np.full((k, 70), -128, np.int8)
    Bp = brgemm.pack_b(B, "u8s8")
    results = []
    for level in brgemm.available_isas():
        brgemm.set_isa(level)
        try:
            results.append(brgemm.gemm(A, Bp))
        finally:
            brgemm.set_isa(None)
    for r in results:
        np.testing.assert_array_equal(r, np.full((20, 70), 255 * -128 * k, np.int64))


def test_gemm_packed_errors():
    A = np.ones((4, 6), BF16)
    Bp = brgemm.pack_b(np.ones((6, 5), BF16), "bf16")
    with pytest.raises(ValueError, match="B was packed for 'bf16'"):
        brgemm.gemm(np.ones((4, 6), np.uint8), Bp)
    with pytest.raises(ValueError, match="disagree on K"):
        brgemm.gemm(np.ones((4, 7), BF16), Bp)
    with pytest.raises(ValueError, match="single packed matrix"):
        brgemm.gemm(A, brgemm.pack_b(np.ones((2, 6, 5), BF16), "bf16"))
    with pytest.raises(TypeError, match="C must have dtype float32"):
        brgemm.gemm(A, Bp, np.zeros((4, 5), np.float64))
    with pytest.raises(ValueError, match="beta must be 0 or 1"):
        brgemm.gemm(np.ones((4, 8), np.uint8), brgemm.pack_b(np.ones((8, 5), np.int8), "u8s8"),
                    np.zeros((4, 5), np.int32), beta=0.5)
    with pytest.raises(TypeError, match="A must have dtype"):
        brgemm.gemm(np.ones((4, 6), np.float64), Bp)
    with pytest.raises(TypeError, match="B must have dtype int8"):
        brgemm.pack_b(np.ones((6, 5), np.uint8), "u8s8")


def test_pack_b_panels_errors():
    B = np.ones((6, 5), BF16)
    with pytest.raises(ValueError, match="layout must be 'rows' or 'panels'"):
        brgemm.pack_b(B, "bf16", layout="columns")
    with pytest.raises(ValueError, match="ldb does not apply to layout='panels'"):
        brgemm.pack_b(B, "bf16", ldb=8, layout="panels")
    with pytest.raises(ValueError, match="layout='panels' packs one"):
        brgemm.pack_b(np.ones((2, 6, 5), BF16), "bf16", layout="panels")
    P = brgemm.pack_b(B, "bf16", layout="panels")
    with pytest.raises(ValueError, match="batch_reduce needs layout='rows'"):
        brgemm.batch_reduce(np.ones((1, 4, 6), BF16), P)
    with pytest.raises(ValueError, match="disagree on K"):
        brgemm.gemm(np.ones((4, 7), BF16), P)
    # A PackedB whose data no longer has the panel shape is refused, not misread.
    P.data = P.data[:, :2]
    with pytest.raises(ValueError, match="B must be packed for bf16 in panels"):
        brgemm.gemm(np.ones((4, 6), BF16), P)


def test_plain_float16_b_is_packed_per_call_like_bf16_and_int8():
    """Issue 18: float32 A on a plain float16 B runs the f32f16 kernel (packed on the call, as
    a plain bf16 or int8 B is), giving the bits of the same B packed once; batch_reduce too."""
    rng = np.random.default_rng(18)
    A = rng.standard_normal((7, 33)).astype(np.float32)
    B = rng.standard_normal((33, 10)).astype(np.float16)
    C = brgemm.gemm(A, B)
    np.testing.assert_array_equal(C, brgemm.gemm(A, brgemm.pack_b(B, "f32f16")))
    a, b = A.astype(np.float64), B.astype(np.float64)  # widening a half to f32 is exact
    assert np.all(np.abs(C - a @ b) <= TOL_C * (33 + 2) * U32 * (np.abs(a) @ np.abs(b)))
    A3 = rng.standard_normal((3, 7, 9)).astype(np.float32)
    B3 = rng.standard_normal((3, 9, 10)).astype(np.float16)
    np.testing.assert_array_equal(brgemm.batch_reduce(A3, B3), brgemm.batch_reduce(A3, brgemm.pack_b(B3, "f32f16")))
    # half weights need float32 activations: bf16 A on them is still a dtype error
    with pytest.raises(TypeError, match="B must have dtype bfloat16"):
        brgemm.gemm(A.astype(BF16), B)
