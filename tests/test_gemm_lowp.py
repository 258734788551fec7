"""gemm with bf16 and int8 operands (B packed once with pack_b, or plain and packed per call)
against float64 / exact int64 oracles, under every ISA and with 1 and 2 threads: odd K
(VNNI padding), K spanning several K chunks, shapes that take the panel-copy path and shapes
that do not; and the errors that belong to packed B."""

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
    for Bx in (brgemm.pack_b(B, "bf16"), B):
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
    for Bx in (brgemm.pack_b(B, "u8s8"), B):
        C = brgemm.gemm(A, Bx)
        assert C.dtype == np.int32
        np.testing.assert_array_equal(C, ref)
    C0 = rng.integers(-1000, 1000, (m, n), dtype=np.int32)
    np.testing.assert_array_equal(brgemm.gemm(A, brgemm.pack_b(B, "u8s8"), C0.copy(), beta=1), ref + C0)


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
