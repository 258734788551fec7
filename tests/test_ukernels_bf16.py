"""Every bf16 microkernel (A bf16 × B bf16 packed VNNI-2 → f32), called directly by name, over
the named sweep (tests/shapes.py) against the float64 oracle (brgemm.testing, bf16 section);
every ISA's kernels agreeing with the scalar reference twin; dispatch under every forced ISA;
pack_b's VNNI-2 layout (round trip through a numpy unpacker, odd K zero padding);
batch_reduce with bfloat16 operands (plain and packed B) under every ISA; and the errors
for operands of the wrong type or packing.

The B buffer a bf16 kernel reads is packed data: every block is packed with brgemm.pack_b,
and B's offsets and strides count packed elements (a block spans ceil(k/2)·ldb·2).
"""

import re

import ml_dtypes
import numpy as np
import pytest

import brgemm
from brgemm.testing import (BF16_MIN_INPUT, assert_agree_bf16, assert_close_bf16, error_bound_bf16,
                            make_problem_bf16, pack_vnni2, random_bf16, random_f32, raw,
                            unpack_vnni2)
from conftest import ALL_UKERNELS, ISA_LEVELS, require_ukernel, restore_isa
from shapes import representative, sweep

BF16 = np.dtype(ml_dtypes.bfloat16)
UKERNELS_BF16 = [u for u in ALL_UKERNELS if u["dtype"] == "bf16"]
FILE_SUFFIX = {"scalar": "scalar", "avx2": "avx2", "avx512": "avx512", "avx512_vnni": "avx512vnni",
               "avx512_bf16": "avx512bf16"}


@pytest.fixture
def isa_restored():
    """Restores the session's ISA cap after a test that lifted it (require_ukernel)."""
    yield
    restore_isa()


# --- every ukernel over the sweep ------------------------------------------------------------

def _sweep_params():
    return [pytest.param(u, case, id=f"{u['name']}-{case.id}")
            for u in UKERNELS_BF16 for case in sweep(u["mr"], u["nr"])]


@pytest.mark.parametrize("info, case", _sweep_params())
def test_ukernel_sweep(info, case, rng, isa_restored):
    require_ukernel(info)
    p = make_problem_bf16(case.m, case.n, case.k, rng=rng, **case.problem_kwargs())
    kernel = brgemm.Kernel(case.m, case.n, case.k, ukernel=info["name"], **p.kernel_kwargs())
    assert (kernel.name, kernel.dtype, kernel.kp) == (info["name"], "bf16", 2)
    assert (kernel.mr, kernel.nr, kernel.isa) == (info["mr"], info["nr"], info["isa"])
    assert p.run(kernel) is p.c  # returns C, written in place
    p.check(what=info["name"])
    if case.c_fill == "nan":
        assert np.isfinite(p.c_window()).all()


def test_sweep_covers_the_bf16_edge_cases():
    """The sweep holds what the bf16 contract makes special: odd K (the padded pair), K = 1..4,
    deep K, lda > K with an odd K (A's NaN padding right after its last real column)."""
    for u in UKERNELS_BF16:
        cases = sweep(u["mr"], u["nr"])
        ks = {c.k for c in cases}
        assert {1, 2, 3, 4, 5} <= ks and max(ks) > 1000
        assert any(c.k % 2 and c.lda and c.lda > c.k for c in cases)
        assert any(c.k % 2 and c.count > 1 for c in cases)


@pytest.mark.parametrize("info", [pytest.param(u, id=u["name"]) for u in UKERNELS_BF16])
def test_ukernel_never_reads_a_past_odd_k(info, rng, isa_restored):
    """Odd K, every row of A followed by NaN (lda = k + 1) and B's last row pair padded with
    zero: a kernel that reads A's pair past column k gets NaN·0 = NaN."""
    require_ukernel(info)
    m, n = info["mr"], info["nr"]
    for k in (1, 3, 5, 33):
        p = make_problem_bf16(m, n, k, rng=rng, lda=k + 1, count=2)
        assert np.isnan(p.a[k].astype(np.float32))  # the element right after row 0's last
        p.run(brgemm.Kernel(m, n, k, ukernel=info["name"], **p.kernel_kwargs()))
        p.check(what=f"{info['name']} k={k}")


@pytest.mark.parametrize("info", [pytest.param(u, id=u["name"]) for u in UKERNELS_BF16])
def test_ukernel_k_across_a_chunks(info, rng, isa_restored):
    """K on both sides of 128 and 256: the widening kernels (avx2, avx512) convert A in chunks
    of 128 columns, and the last chunk may be short and odd."""
    require_ukernel(info)
    m, n = info["mr"] + 1, info["nr"] - 1 if info["nr"] > 1 else 1
    for k in (127, 128, 129, 130, 255, 257):
        p = make_problem_bf16(m, n, k, rng=rng, lda=k + 3, count=2, beta=0.5)
        p.run(brgemm.Kernel(m, n, k, ukernel=info["name"], **p.kernel_kwargs()))
        p.check(what=f"{info['name']} k={k}")


def test_ukernel_names_are_their_specification():
    assert UKERNELS_BF16, "the build has no bf16 microkernels"
    assert UKERNELS_BF16[0]["isa"] == "scalar", "the reference ukernel comes first"
    levels = [ISA_LEVELS.index(u["isa"]) for u in UKERNELS_BF16]
    assert levels == sorted(levels), "ukernels are listed in ascending ISA order"
    names = [u["name"] for u in UKERNELS_BF16]
    assert len(names) == len(set(names))
    available = set(brgemm.available_isas())
    for u in UKERNELS_BF16:
        assert u["name"] == f"ukernel_bf16_f32_{u['mr']}x{u['nr']}c2__{FILE_SUFFIX[u['isa']]}"
        assert re.fullmatch(r"ukernel_bf16_f32_\d+x\d+c2__[a-z0-9]+", u["name"])
        assert u["kp"] == 2
        assert u["available"] == (u["isa"] in available)
    built = set(brgemm._core.built_isas())
    for level in ("avx2", "avx512", "avx512_bf16"):  # each ISA the family targets has a kernel
        if level in built:
            assert any(u["isa"] == level for u in UKERNELS_BF16), f"no bf16 ukernel for {level}"


# --- agreement across ISAs -------------------------------------------------------------------

def _agreement_params():
    return [pytest.param(u, case, id=f"{u['name']}-{case.id}")
            for u in UKERNELS_BF16[1:] for case in representative(u["mr"], u["nr"])]


@pytest.mark.parametrize("info, case", _agreement_params())
def test_ukernel_agrees_with_scalar_twin(info, case, rng, isa_restored):
    """The same inputs through the scalar reference ukernel and through this one."""
    require_ukernel(info)
    ref_info = UKERNELS_BF16[0]
    p = make_problem_bf16(case.m, case.n, case.k, rng=rng, **case.problem_kwargs())
    c_ref = p.fresh_c()
    ref_kernel = brgemm.Kernel(case.m, case.n, case.k, ukernel=ref_info["name"], **p.kernel_kwargs())
    kernel = brgemm.Kernel(case.m, case.n, case.k, ukernel=info["name"], **p.kernel_kwargs())
    assert kernel.handle != ref_kernel.handle
    p.run(ref_kernel, c_ref)
    p.run(kernel)
    p.check(c_ref, what=ref_info["name"])
    p.check(what=info["name"])
    assert_agree_bf16(p.c_window(), p.c_window(c_ref), p.a_blocks, p.b_blocks, p.c0_window(), p.beta,
                      what=f"{info['name']} and {ref_info['name']}")


def _expected_dispatch(level):
    """The first bf16 ukernel listed of the highest ISA at or below ``level``."""
    cap = ISA_LEVELS.index(level)
    usable = [u for u in UKERNELS_BF16 if ISA_LEVELS.index(u["isa"]) <= cap and u["available"]]
    best = max(ISA_LEVELS.index(u["isa"]) for u in usable)
    return next(u for u in usable if ISA_LEVELS.index(u["isa"]) == best)


@pytest.mark.parametrize("batch", ["stride", "offset", "address"])
def test_dispatch_under_forced_isa(isa, batch, rng):
    assert brgemm.isa() == isa
    p = make_problem_bf16(13, 37, 9, rng=rng, batch=batch, count=3, lda=11, ldb=40, ldc=39, beta=0.5)
    kernel = brgemm.Kernel(13, 37, 9, **p.kernel_kwargs())
    want = _expected_dispatch(isa)
    assert (kernel.name, kernel.mr, kernel.nr, kernel.kp) == (want["name"], want["mr"], want["nr"], 2)
    p.run(kernel)
    p.check(what=f"{kernel.name} under {isa}")


def test_isas_agree():
    """Dispatch under every available ISA on the same inputs: each within the bound of the exact
    result, each within twice the bound of the scalar one."""
    rng = np.random.default_rng(20240612)
    p = make_problem_bf16(23, 77, 37, rng=rng, batch="offset", count=3, lda=41, ldb=80, ldc=79, beta=0.5)
    results = {}
    try:
        for level in brgemm.available_isas():
            brgemm.set_isa(level)
            c = p.fresh_c()
            kernel = brgemm.Kernel(p.m, p.n, p.k, **p.kernel_kwargs())
            assert p.run(kernel, c) is c
            p.check(c, what=f"{kernel.name} under {level}")
            results[level] = p.c_window(c)
    finally:
        restore_isa()
    assert "scalar" in results and len(results) == len(brgemm.available_isas())
    for level, res in results.items():
        assert_agree_bf16(res, results["scalar"], p.a_blocks, p.b_blocks, p.c0_window(), p.beta,
                          what=f"{level} and scalar")


# --- the oracle's own domain -----------------------------------------------------------------

def test_oracle_refuses_inputs_it_cannot_bound():
    a = np.ones((2, 3), dtype=BF16)
    b = np.ones((3, 2), dtype=BF16)
    assert (error_bound_bf16([a], [b]) > 0).all()
    tiny = a.copy()
    tiny[1, 2] = BF16.type(BF16_MIN_INPUT / 4)
    with pytest.raises(ValueError, match="2\\*\\*-44"):
        error_bound_bf16([tiny], [b])
    with pytest.raises(TypeError, match="bfloat16"):
        error_bound_bf16([a.astype(np.float32)], [b])
    assert (np.abs(random_bf16((1000,), np.random.default_rng(0)).astype(np.float32)) >= BF16_MIN_INPUT).all()


# --- pack_b: the VNNI-2 layout ---------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 7, 16, 33])
@pytest.mark.parametrize("n, ldb", [(1, None), (5, 9), (17, None), (64, 67)])
def test_pack_b_round_trip(k, n, ldb, rng):
    B = random_bf16((k, n), rng)
    P = brgemm.pack_b(B, "bf16", ldb=ldb)
    rows, width = (k + 1) // 2, n if ldb is None else ldb
    assert isinstance(P, brgemm.PackedB)
    assert (P.dtype, P.k, P.n, P.kp, P.ldb, P.batch) == ("bf16", k, n, 2, width, None)
    assert P.data.dtype == BF16 and P.data.shape == (rows, width, 2) and P.data.flags.c_contiguous
    # The layout, element by element: (k, n) at ((k/2)·ldb + n)·2 + k%2 of the flat data.
    flat = raw(P.data)
    kk, nn = np.meshgrid(np.arange(k), np.arange(n), indexing="ij")
    np.testing.assert_array_equal(flat[((kk // 2) * width + nn) * 2 + kk % 2], raw(B).reshape(k, n))
    # Round trip through the numpy unpacker, and bit-identical to the numpy packer.
    np.testing.assert_array_equal(raw(unpack_vnni2(P.data, k, n)), raw(B))
    np.testing.assert_array_equal(raw(P.data), raw(pack_vnni2(B, width)))
    # Zeros (+0.0) in the K padding of odd K and in the columns n..ldb.
    if k % 2:
        assert (raw(P.data[-1, :, 1]) == 0).all()
    assert (raw(P.data[:, n:, :]) == 0).all()


def test_pack_b_batched_and_strided(rng):
    base = random_bf16((4, 9, 23), rng)
    B = base[::2, 1:8, 2:13]  # (2, 7, 11): sliced rows, every other block
    P = brgemm.pack_b(B, "bf16", ldb=16)
    assert (P.batch, P.k, P.n, P.ldb) == (2, 7, 11, 16)
    assert P.data.shape == (2, 4, 16, 2)
    for i in range(2):
        np.testing.assert_array_equal(raw(unpack_vnni2(P.data[i], 7, 11)), raw(B[i]))
        assert (raw(P.data[i, 3, :, 1]) == 0).all()


def test_pack_b_keeps_special_values(rng):
    """Packing moves bits: NaN, ±inf, -0 and subnormals come out as they went in."""
    special = np.array([np.nan, np.inf, -np.inf, -0.0, 1e-40, -3.0], dtype=np.float32).astype(BF16)
    B = special.reshape(3, 2)
    np.testing.assert_array_equal(raw(unpack_vnni2(brgemm.pack_b(B, "bf16").data, 3, 2)), raw(B))


# --- batch_reduce with bf16 under every ISA --------------------------------------------------

# (batch, M, K, N)
BR_SHAPES = {
    "b1_1x1x1": (1, 1, 1, 1),
    "b3_7x5x9_odd_k": (3, 7, 5, 9),
    "b2_13x16x70": (2, 13, 16, 70),
    "b7_25x33x19": (7, 25, 33, 19),
    "b2_5x301x3_deep_odd_k": (2, 5, 301, 3),
    "b3_11x1x17_k1": (3, 11, 1, 17),
}


@pytest.mark.parametrize("packed", [False, True], ids=["plain_b", "packed_b"])
@pytest.mark.parametrize("c_mode", ["none", "beta0_nan_c", "beta0.5_sliced"])
@pytest.mark.parametrize("shape", list(BR_SHAPES))
def test_batch_reduce_bf16(isa, rng, shape, c_mode, packed):
    count, m, k, n = BR_SHAPES[shape]
    A = random_bf16((count, m, k + 3), rng)[:, :, 1:k + 1]  # lda = k + 3: a sliced view
    B = random_bf16((count, k, n), rng)
    A0, B0 = raw(A), raw(B)
    beta = 0.5 if c_mode.startswith("beta0.5") else 0.0
    C = base = c0 = None
    if c_mode != "none":
        base = random_f32((m + 3, n + 5), rng)
        C = base[2:m + 2, 1:n + 1]
        if c_mode == "beta0_nan_c":
            C[...] = np.nan
        c0 = C.copy()
    base0 = None if base is None else base.copy()
    out = brgemm.batch_reduce(A, brgemm.pack_b(B, "bf16") if packed else B, C, beta=beta)
    if C is not None:
        assert out is C
        outside = np.ones(base.shape, dtype=bool)
        outside[2:m + 2, 1:n + 1] = False
        np.testing.assert_array_equal(raw(base)[outside.reshape(-1)], raw(base0)[outside.reshape(-1)])
    else:
        assert out.dtype == np.float32 and out.shape == (m, n)
    assert_close_bf16(out, list(A), list(B), c0, beta)
    np.testing.assert_array_equal(raw(A), A0)
    np.testing.assert_array_equal(raw(B), B0)


def test_batch_reduce_bf16_packed_once_reused(isa, rng):
    """One PackedB with padded rows (ldb > N), reused by several calls, accumulating."""
    A = random_bf16((3, 9, 7), rng)
    B = random_bf16((3, 7, 12), rng)
    P = brgemm.pack_b(B, "bf16", ldb=20)
    C = random_f32((9, 12), rng)
    c0 = C.copy()
    brgemm.batch_reduce(A, P, C, beta=1.0)
    brgemm.batch_reduce(A, P, C, beta=1.0)
    assert_close_bf16(C, list(A) * 2, list(B) * 2, c0, 1.0)


# --- the Kernel's default B stride is one packed block ---------------------------------------

@pytest.mark.parametrize("k", [5, 6])
def test_kernel_default_stride_b_is_a_packed_block(k, rng):
    """With stride_b left out, block i of B starts i·ceil(k/2)·ldb·2 packed elements in, as
    pack_b lays out a batch (odd K included)."""
    m, n, count = 4, 10, 3
    A = random_bf16((count, m, k), rng)
    B = random_bf16((count, k, n), rng)
    P = brgemm.pack_b(B, "bf16", ldb=13)
    C = np.empty((m, n), dtype=np.float32)
    kernel = brgemm.Kernel(m, n, k, dtype="bf16", ldb=13)
    assert kernel(A, P.data, C, count) is C
    assert_close_bf16(C, list(A), list(B))


# --- errors ----------------------------------------------------------------------------------

@pytest.fixture
def bf16_ops(rng):
    m, n, k = 3, 5, 4
    return dict(kernel=brgemm.Kernel(m, n, k, dtype="bf16"), A=random_bf16((m, k), rng),
                B=brgemm.pack_b(random_bf16((k, n), rng), "bf16").data, C=np.zeros((m, n), np.float32))


@pytest.mark.parametrize("arg, bad", [("A", np.float32), ("A", np.float16), ("A", np.uint16),
                                      ("B", np.float32), ("B", np.int16), ("C", BF16), ("C", np.float64)])
def test_kernel_refuses_wrong_dtypes(bf16_ops, arg, bad):
    ops = dict(bf16_ops)
    ops[arg] = ops[arg].astype(bad) if bad not in (np.uint16, np.int16) else ops[arg].view(bad)
    with pytest.raises(TypeError, match=rf"^{arg} must have dtype"):
        ops["kernel"](ops["A"], ops["B"], ops["C"], 1)


def test_kernel_refuses_unpacked_b_too_small(rng):
    """B for a bf16 kernel is packed: an unpadded odd-K B is one packed row short."""
    m, n, k = 2, 8, 5
    kernel = brgemm.Kernel(m, n, k, dtype="bf16")
    with pytest.raises(ValueError, match=r"^B is too small"):
        kernel(random_bf16((m, k), rng), random_bf16((k, n), rng), np.zeros((m, n), np.float32), 1)


def test_batch_reduce_float32_a_with_bf16_b(rng):
    A = random_f32((2, 3, 4), rng)
    with pytest.raises(TypeError, match=r"\bB\b"):
        brgemm.batch_reduce(A, random_bf16((2, 4, 5), rng))
    with pytest.raises(ValueError, match=r"packed for 'bf16'"):
        brgemm.batch_reduce(A, brgemm.pack_b(random_bf16((2, 4, 5), rng), "bf16"))


def test_batch_reduce_packed_b_of_the_wrong_dtype(rng):
    A = random_bf16((2, 3, 4), rng)
    with pytest.raises(ValueError, match=r"packed for 'f32'.*needs 'bf16'"):
        brgemm.batch_reduce(A, brgemm.pack_b(random_f32((2, 4, 5), rng), "f32"))


def test_batch_reduce_b_packed_with_another_k(rng):
    A = random_bf16((2, 3, 6), rng)
    for k in (5, 7, 8):  # 5: the same number of packed rows (3) as K = 6, still refused
        with pytest.raises(ValueError, match=r"disagree on K"):
            brgemm.batch_reduce(A, brgemm.pack_b(random_bf16((2, k, 5), rng), "bf16"))


def test_batch_reduce_unbatched_packed_b(rng):
    with pytest.raises(ValueError, match=r"batched PackedB"):
        brgemm.batch_reduce(random_bf16((1, 3, 4), rng), brgemm.pack_b(random_bf16((4, 5), rng), "bf16"))


def test_pack_b_refuses_float32_for_bf16(rng):
    with pytest.raises(TypeError, match=r"^B must have dtype bfloat16"):
        brgemm.pack_b(random_f32((4, 5), rng), "bf16")
