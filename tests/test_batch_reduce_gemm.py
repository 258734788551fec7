"""brgemm.batch_reduce and brgemm.gemm against the float64 oracle, under every ISA level
(the ``isa`` fixture): odd shapes, sliced (strided) inputs and outputs, negative and zero
batch strides, beta 0 over a NaN C, beta 1 and 0.5 into a given C; gemm on 1 and 2 threads
over shapes on both sides of its packing decision and with K split into several chunks.

Sizes stay modest: the whole module runs in a few seconds per ISA.
"""

import numpy as np
import pytest

import brgemm
from brgemm.testing import assert_close, bits, padded, random_f32

# --- operands ----------------------------------------------------------------------------------


def _view(rng, shape, layout):
    """A float32 array of ``shape`` laid out as ``layout``; returns (view, base) where base
    is the array that owns the memory (for checking what is outside the view)."""
    if layout == "contiguous":
        a = random_f32(shape, rng)
        return a, a
    if layout == "sliced":  # every axis padded: rows longer than the width, blocks apart
        return padded(rng, shape, 3)
    if layout == "reversed":  # negative batch stride
        base = random_f32(shape, rng)
        return base[::-1], base
    if layout == "step2":  # every other block of a larger batch
        base = random_f32((2 * shape[0],) + tuple(shape[1:]), rng)
        return base[::2], base
    if layout == "broadcast":  # one block repeated: batch stride 0 (read-only view)
        base = random_f32((1,) + tuple(shape[1:]), rng)
        return np.broadcast_to(base, shape), base
    raise ValueError(layout)


def _output(rng, shape, c_mode):
    """(C or None, base of C, C0 copy) for a beta mode."""
    if c_mode == "none":
        return None, None, None
    fill_nan = c_mode == "beta0_nan_c"
    if c_mode.endswith("_sliced"):
        C, base = padded(rng, shape, (3, 5), offset=(2, 1))
    else:
        base = random_f32(shape, rng)
        C = base
    if fill_nan:
        C[...] = np.nan
    return C, base, C.copy()


BETA = {"none": 0.0, "beta0_nan_c": 0.0, "beta1": 1.0, "beta0.5": 0.5, "beta1_sliced": 1.0,
        "beta0.5_sliced": 0.5, "beta0_nan_c_sliced": 0.0}


def _inside(C, base):
    """Boolean mask over ``base``: True on the elements of its view ``C`` (2-D, rows
    contiguous)."""
    start = (C.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // 4
    rows, cols = C.shape
    flat = start + np.arange(rows)[:, None] * (C.strides[0] // 4) + np.arange(cols)[None, :]
    mask = np.zeros(base.size, dtype=bool)
    mask[flat.reshape(-1)] = True
    return mask.reshape(base.shape)


def _check(result, C, base, base0, c0, a_blocks, b_blocks, beta):
    """Result within the oracle's bound; a given C is returned, and nothing of the array it
    is a view of outside C changed."""
    if C is not None:
        assert result is C, "the given C is returned"
        outside = ~_inside(C, base)
        assert np.array_equal(bits(base)[outside], bits(base0)[outside]), "wrote outside C"
    else:
        assert result.dtype == np.float32 and result.flags.c_contiguous
    assert_close(result, a_blocks, b_blocks, c0, beta)


def _base_copy(base):
    return None if base is None else base.copy()


# --- batch_reduce ------------------------------------------------------------------------------

# (batch, M, K, N)
BR_SHAPES = {
    "b1_1x1x1": (1, 1, 1, 1),
    "b3_7x5x9": (3, 7, 5, 9),
    "b2_13x17x70": (2, 13, 17, 70),
    "b7_25x33x19": (7, 25, 33, 19),
    "b2_5x600x3_deep_k": (2, 5, 600, 3),
    "b4_1x9x65_m1": (4, 1, 9, 65),
    "b3_11x1x17_k1": (3, 11, 1, 17),
    "b2_15x16x1_n1": (2, 15, 16, 1),
}
BR_LAYOUTS = ["sliced", "reversed", "step2", "broadcast"]


@pytest.mark.parametrize("c_mode", ["none", "beta0_nan_c", "beta1", "beta0.5"])
@pytest.mark.parametrize("shape", list(BR_SHAPES))
def test_batch_reduce_shapes(isa, rng, shape, c_mode):
    count, m, k, n = BR_SHAPES[shape]
    A, B = random_f32((count, m, k), rng), random_f32((count, k, n), rng)
    C, base, c0 = _output(rng, (m, n), c_mode)
    base0 = _base_copy(base)
    out = brgemm.batch_reduce(A, B, C, beta=BETA[c_mode])
    _check(out, C, base, base0, c0, list(A), list(B), BETA[c_mode])


@pytest.mark.parametrize("c_mode", ["beta0_nan_c_sliced", "beta0.5_sliced"])
@pytest.mark.parametrize("layout", BR_LAYOUTS)
@pytest.mark.parametrize("shape", ["b3_7x5x9", "b2_13x17x70", "b3_11x1x17_k1"])
def test_batch_reduce_strided(isa, rng, shape, layout, c_mode):
    count, m, k, n = BR_SHAPES[shape]
    A, _ = _view(rng, (count, m, k), layout)
    B, _ = _view(rng, (count, k, n), "sliced" if layout == "broadcast" else layout)
    A0, B0 = A.copy(), B.copy()
    C, base, c0 = _output(rng, (m, n), c_mode)
    base0 = _base_copy(base)
    out = brgemm.batch_reduce(A, B, C, beta=BETA[c_mode])
    _check(out, C, base, base0, c0, list(A), list(B), BETA[c_mode])
    np.testing.assert_array_equal(A, A0)
    np.testing.assert_array_equal(B, B0)


def test_batch_reduce_negative_stride_matches_forward(isa, rng):
    """A[::-1] with B[::-1] (negative batch strides) names the same pairs as A with B: the
    same sum in the opposite batch order; both within the bound."""
    A, B = random_f32((5, 9, 14), rng), random_f32((5, 14, 21), rng)
    fwd = brgemm.batch_reduce(A, B)
    rev = brgemm.batch_reduce(A[::-1], B[::-1])
    assert_close(fwd, list(A), list(B))
    assert_close(rev, list(A[::-1]), list(B[::-1]))


def test_batch_reduce_accumulates(isa, rng):
    """beta = 1 into the same C twice adds the product twice."""
    A, B = random_f32((3, 10, 12), rng), random_f32((3, 12, 18), rng)
    C = random_f32((10, 18), rng)
    c0 = C.copy()
    brgemm.batch_reduce(A, B, C, beta=1.0)
    brgemm.batch_reduce(A, B, C, beta=1.0)
    assert_close(C, list(A) * 2, list(B) * 2, c0, 1.0)


# --- gemm --------------------------------------------------------------------------------------

# (M, K, N, B's row stride or None). The packing path of gemm needs work items of at least
# 4·MR rows of C (rows are rounded up to whole MR tiles: M > 18 for MR = 6, M > 12 for the
# scalar MR = 4) and rows of B 1 KiB or more apart (ldb >= 256); the shapes below sit on
# both sides of each condition. K above 512 spans several K chunks.
GEMM_SHAPES = {
    "1x1x1": (1, 1, 1, None),
    "small_m_5x33x70": (5, 33, 70, None),            # M < 4·MR: no packing
    "small_m_wide_ldb_7x40x30": (7, 40, 30, 300),    # wide B, still too few rows to pack
    "m18_no_pack_18x40x65": (18, 40, 65, 300),       # 3 tiles of 6 rows: no packing at MR 6
    "m19_pack_19x40x65": (19, 40, 65, 300),          # rounds up to 4 tiles of 6: packs
    "m24_pack_24x40x65": (24, 40, 65, 300),          # packs (ldb >= 256)
    "m24_narrow_b_24x40x65": (24, 40, 65, None),     # ldb = 65: no packing
    "m50_pack_50x31x130": (50, 31, 130, 260),
    "deep_k_3x1100x17": (3, 1100, 17, None),         # 3 K chunks, no packing
    "deep_k_pack_30x1100x20": (30, 1100, 20, 290),   # 3 K chunks, packed panels
    "n_wide_9x8x261": (9, 8, 261, None),
}
# Big enough that gemm really uses 2 threads (it stays on 1 below 4 MFLOP).
GEMM_THREADED = {
    "t_128x129x130": (128, 129, 130, None),
    "t_pack_96x600x100": (96, 600, 100, 300),
}


def _gemm_operands(rng, m, k, n, ldb, sliced_a):
    if sliced_a:
        A, _ = padded(rng, (m, k), (2, 7), offset=(1, 3))
    else:
        A = random_f32((m, k), rng)
    if ldb is None:
        B = random_f32((k, n), rng)
    else:
        B = random_f32((k, ldb), rng)[:, ldb - n:]
        assert B.strides[0] == 4 * ldb
    return A, B


@pytest.mark.parametrize("c_mode", ["none", "beta0_nan_c", "beta1_sliced", "beta0.5"])
@pytest.mark.parametrize("shape", list(GEMM_SHAPES))
def test_gemm_shapes(isa, rng, threads_restored, shape, c_mode):
    brgemm.set_num_threads(1)
    m, k, n, ldb = GEMM_SHAPES[shape]
    A, B = _gemm_operands(rng, m, k, n, ldb, sliced_a=c_mode.endswith("sliced"))
    C, base, c0 = _output(rng, (m, n), c_mode)
    base0 = _base_copy(base)
    out = brgemm.gemm(A, B, C, beta=BETA[c_mode])
    _check(out, C, base, base0, c0, [A], [B], BETA[c_mode])


@pytest.mark.parametrize("c_mode", ["beta0_nan_c_sliced", "beta0.5"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", list(GEMM_THREADED) + ["m50_pack_50x31x130", "deep_k_pack_30x1100x20"])
def test_gemm_threads(isa, rng, threads_restored, shape, threads, c_mode):
    brgemm.set_num_threads(threads)
    assert brgemm.get_num_threads() == threads
    m, k, n, ldb = {**GEMM_SHAPES, **GEMM_THREADED}[shape]
    A, B = _gemm_operands(rng, m, k, n, ldb, sliced_a=True)
    C, base, c0 = _output(rng, (m, n), c_mode)
    base0 = _base_copy(base)
    out = brgemm.gemm(A, B, C, beta=BETA[c_mode])
    _check(out, C, base, base0, c0, [A], [B], BETA[c_mode])


def test_gemm_equals_batch_reduce_of_one(isa, rng):
    """gemm and a batch of one compute the same product: within twice the bound."""
    A, B = random_f32((19, 45), rng), random_f32((45, 33), rng)
    g = brgemm.gemm(A, B)
    br = brgemm.batch_reduce(A[None], B[None])
    assert_close(g, [A], [B])
    assert_close(br, [A], [B])
