"""Every int16 microkernel (A int16 × B int16 packed VNNI-2 → C int32), called directly by name,
over the int8 kernels' sweep (beta 0 or 1, C full of garbage instead of NaN) against the exact
int64 oracle (brgemm.testing, "# --- int16 ---"); the results bit-identical across every kernel
and every ISA, with sums next to the s32 bound and past it (each product pair and sum wraps
modulo 2^32 on every path: vpdpwssd, vpmaddwd + vpaddd and the scalar twin agree); A, B and C
flush against an unmapped page; pack_b's VNNI-2 layout; batch_reduce and gemm with int16 A
under every ISA; the dequantizing epilogue; and the errors that name their argument.

Integer sums do not depend on the order of the additions: every comparison is ==.
"""

import subprocess
import sys

import numpy as np
import pytest

import brgemm
from brgemm import _core
from brgemm.testing import (S32_MAX, S32_MIN, assert_exact_s32, block, make_problem_s16s16, packed_rows,
                            random_s16, random_s32, reference_s16s16, unpack_vnni4)
from conftest import ALL_UKERNELS, ISA_LEVELS, require_ukernel, restore_isa, subprocess_env
from test_ukernels_u8s8 import int8_cases  # the integer sweep: beta 0/1, garbage C, more K
from shapes import BATCH_KINDS

S16S16 = [u for u in ALL_UKERNELS if u["dtype"] == "s16s16"]
S16_MIN, S16_MAX = -(2 ** 15), 2 ** 15 - 1


@pytest.fixture
def isa_restored():
    yield
    restore_isa()


def _sweep_params():
    return [pytest.param(u, case, id=f"{u['name']}-{case.id}")
            for u in S16S16 for case in int8_cases(u["mr"], u["nr"])]


def _ukernel_params():
    return [pytest.param(u, id=u["name"]) for u in S16S16]


# --- every variant over the sweep, exact ---------------------------------------------------------


@pytest.mark.parametrize("info, case", _sweep_params())
def test_ukernel_sweep(info, case, rng, isa_restored):
    require_ukernel(info)
    p = make_problem_s16s16(case.m, case.n, case.k, rng=rng, **case.problem_kwargs())
    kernel = brgemm.Kernel(case.m, case.n, case.k, ukernel=info["name"], **p.kernel_kwargs())
    assert (kernel.name, kernel.dtype, kernel.mr, kernel.nr) == (info["name"], "s16s16", info["mr"], info["nr"])
    assert p.run(kernel) is p.c
    p.check(what=info["name"])


# --- names, dispatch ----------------------------------------------------------------------------


def test_ukernel_names_are_their_specification():
    assert S16S16, "the build has no int16 microkernels"
    assert S16S16[0]["isa"] == "scalar", "the reference ukernel comes first"
    levels = [ISA_LEVELS.index(u["isa"]) for u in S16S16]
    assert levels == sorted(levels), "ukernels are listed in ascending ISA order"
    available = set(brgemm.available_isas())
    for u in S16S16:
        assert u["name"] == f"ukernel_s16s16_s32_{u['mr']}x{u['nr']}c2__{u['isa'].replace('_', '')}"
        assert u["kp"] == 2 and u["available"] == (u["isa"] in available)
    for level in ("avx2", "avx512", "avx512_vnni"):  # no integer level silently runs scalar code
        if level in _core.built_isas():
            assert any(u["isa"] == level for u in S16S16), f"no s16s16 ukernel for {level}"


@pytest.mark.parametrize("batch", BATCH_KINDS)
def test_dispatch_under_forced_isa(isa, batch, rng):
    cap = ISA_LEVELS.index(isa)
    usable = [u for u in S16S16 if ISA_LEVELS.index(u["isa"]) <= cap and u["available"]]
    best = max(ISA_LEVELS.index(u["isa"]) for u in usable)
    want = next(u for u in usable if ISA_LEVELS.index(u["isa"]) == best)
    p = make_problem_s16s16(9, 21, 5, rng=rng, batch=batch, count=2, beta=1.0)
    kernel = brgemm.Kernel(9, 21, 5, **p.kernel_kwargs())
    assert kernel.name == want["name"]
    p.run(kernel)
    p.check(what=f"dispatch under {isa}")


# --- bit-identical across every kernel and ISA, past the s32 range too ------------------------------


@pytest.mark.parametrize("batch", BATCH_KINDS)
def test_every_ukernel_gives_identical_bits_full_range(batch, isa_restored):
    """Full-range int16 (sums far outside s32): every kernel stores the int64 sum modulo 2^32."""
    available = [u for u in S16S16 if u["available"]]
    brgemm.set_isa(None)
    rng = np.random.default_rng(20261207)
    p = make_problem_s16s16(23, 77, 37, rng=rng, batch=batch, count=3, lda=41, ldb=80, ldc=79, beta=1.0)
    bufs = p.a if batch == "address" else [p.a] * 3
    for buf in bufs:  # A over the whole int16 range, then its blocks read back
        buf[:] = random_s16(buf.shape, rng, bound=2 ** 15)
    offs = {"stride": [i * p.m * p.lda for i in range(3)], "offset": p.args[0] if batch == "offset" else None,
            "address": [0, 0, 0]}[batch]
    a_blocks = [block(buf, int(o), p.m, p.k, p.lda) for buf, o in zip(bufs, offs)]
    ref = reference_s16s16(a_blocks, p.b_blocks, p.c0_window(), 1.0, wrap=True)
    exact = reference_s16s16(a_blocks, p.b_blocks, p.c0_window(), 1.0)
    assert ((exact < S32_MIN) | (exact > S32_MAX)).any()  # some sums are past the bound
    results = {}
    for u in available:
        c = p.fresh_c()
        p.run(brgemm.Kernel(p.m, p.n, p.k, ukernel=u["name"], **p.kernel_kwargs()), c)
        assert np.array_equal(p.c_window(c).astype(np.int64), ref), u["name"]
        results[u["name"]] = c.tobytes()
    assert len(set(results.values())) == 1


@pytest.mark.parametrize("batch", BATCH_KINDS)
def test_isa_bit_identical_to_scalar(isa, batch):
    rng = np.random.default_rng(20261208)
    p = make_problem_s16s16(31, 67, 259, rng=rng, batch=batch, count=2, lda=263, ldb=70, ldc=71, beta=1.0)
    results = {}
    for level in (isa, "scalar"):
        brgemm.set_isa(level)
        c = p.fresh_c()
        p.run(brgemm.Kernel(p.m, p.n, p.k, **p.kernel_kwargs()), c)
        p.check(c, what=f"under {level}")
        results[level] = c.tobytes()
    assert results[isa] == results["scalar"]


# --- the extremes: at the s32 bound, and past it --------------------------------------------------
#
# Every product has the same sign, so every partial sum lies between 0 and the total: inside the
# bound, no kernel may wrap before the end. (-2^15)·(-2^15)·2 = 2^31 is the one pair that
# vpmaddwd itself wraps; it must still give the scalar twin's bits.

_EXTREMES = [
    pytest.param(S16_MIN, S16_MAX, 2, 1, id="min_x_max_k2"),         # -2 147 418 112
    pytest.param(S16_MAX, S16_MAX, 2, 1, id="max_x_max_k2"),         #  2 147 352 578
    pytest.param(S16_MIN, S16_MIN, 1, 1, id="min_x_min_k1"),         #  2^30
    pytest.param(S16_MIN, -1, 65535, 1, id="min_x_-1_k65535"),       #  2^31 - 2^15, K odd
    pytest.param(S16_MIN, -1, 21845, 3, id="min_x_-1_k21845_x3"),    #  the same over a batch
    pytest.param(S16_MIN, S16_MIN, 2, 1, id="wrap_min_x_min_k2"),    #  2^31: wraps to -2^31
    pytest.param(S16_MIN, S16_MIN, 3, 2, id="wrap_min_x_min_k3_x2"),  # 6·2^30: wraps to -2^31
]


@pytest.mark.parametrize("a_value, b_value, k, count", _EXTREMES)
@pytest.mark.parametrize("info", _ukernel_params())
def test_ukernel_extremes(info, a_value, b_value, k, count, rng, isa_restored):
    require_ukernel(info)
    m, n = info["mr"] + 1, info["nr"] + 1  # a remainder tile in both directions
    A = np.full((count, m, k), a_value, dtype=np.int16)
    Bp = brgemm.pack_b(np.full((count, k, n), b_value, dtype=np.int16), "s16s16")
    C = random_s32((m, n), rng)  # garbage: beta 0 must overwrite it
    brgemm.Kernel(m, n, k, dtype="s16s16", ukernel=info["name"])(A, Bp.data, C, count)
    total = a_value * b_value * k * count
    if S32_MIN <= total <= S32_MAX:
        assert_exact_s32(C, np.full((m, n), total, dtype=np.int64), what=info["name"])
    else:
        wrapped = (total + 2 ** 31) % 2 ** 32 - 2 ** 31
        assert (C == wrapped).all(), f"{info['name']}: {C[0, 0]} != {wrapped} ({total} modulo 2^32)"


# --- nothing read or written past A, B or C ---------------------------------------------------------

_GUARD_SCRIPT = r"""
import numpy as np
import brgemm
from brgemm.testing import assert_exact_s32, guarded as flush, packed_b_extent, reference_s16s16

rng = np.random.default_rng(12)
names = [u["name"] for u in brgemm.ukernels() if u["dtype"] == "s16s16" and u["available"]]
calls = 0
for k in (1, 2, 3, 5, 67):
    for m, n in ((1, 1), (7, 17), (13, 65)):
        a = flush(m * k, np.int16)
        a[:] = rng.integers(-4096, 4096, a.size, dtype=np.int16)
        b_plain = rng.integers(-4096, 4096, (k, n), dtype=np.int16)
        packed = brgemm.pack_b(b_plain, "s16s16").data.reshape(-1)
        b = flush(packed_b_extent(k, n, n, 2), np.int16)
        b[:] = packed[:b.size]
        c = flush(m * n, np.int32)
        ref = reference_s16s16([a.reshape(m, k)], [b_plain])
        for name in names:
            brgemm.Kernel(m, n, k, dtype="s16s16", ukernel=name)(a, b, c, 1)
            assert_exact_s32(c.reshape(m, n), ref, what=f"{name} m={m} n={n} k={k}")
            calls += 1
print("calls", calls, "kernels", len(names))
"""


def test_ukernels_stay_inside_a_b_and_c():
    """A (odd K too), the packed B (ceil(k/2) rows × n columns) and C each end exactly at a
    PROT_NONE page; a read or write past any of them kills the child with SIGSEGV."""
    proc = subprocess.run([sys.executable, "-c", _GUARD_SCRIPT], capture_output=True, text=True,
                          env=subprocess_env(), timeout=120)
    assert proc.returncode == 0, f"child exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    available = sum(u["available"] for u in S16S16)
    assert f"calls {5 * 3 * available} kernels {available}" in proc.stdout


# --- pack_b: the VNNI-2 layout ------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3, 5, 64, 65])
@pytest.mark.parametrize("n, ldb", [(1, None), (17, 23), (64, 64)])
def test_pack_b_s16s16_round_trip(k, n, ldb, rng):
    big = random_s16((k + 2, n + 5), rng, bound=2 ** 15)
    B = big[1:1 + k, 2:2 + n]  # rows ld_src > n apart
    P = brgemm.pack_b(B, "s16s16", ldb=ldb)
    L = n if ldb is None else ldb
    assert (P.dtype, P.k, P.n, P.kp, P.ldb, P.batch, P.colsum) == ("s16s16", k, n, 2, L, None, None)
    assert P.data.dtype == np.int16 and P.data.shape == (packed_rows(k, 2), L, 2)
    assert np.array_equal(unpack_vnni4(P.data, 0, k, n, L, kp=2), B)
    full = P.data.transpose(0, 2, 1).reshape(packed_rows(k, 2) * 2, L)
    assert not full[k:].any() and not full[:, n:].any(), "padding must be zeros"


def test_pack_b_s16s16_panels(rng):
    B = random_s16((9, 70), rng)
    P = brgemm.pack_b(B, "s16s16", layout="panels")
    assert P.data.shape == (2, 5, 64, 2)
    assert np.array_equal(unpack_vnni4(P.data[1], 0, 9, 6, 64, kp=2), B[:, 64:])


@pytest.mark.parametrize("dtype", [np.int8, np.uint16, np.int32, np.float32])
def test_pack_b_s16s16_rejects_other_dtypes(dtype, rng):
    with pytest.raises(TypeError, match=r"^B must have dtype int16, got " + np.dtype(dtype).name):
        brgemm.pack_b(np.zeros((4, 5), dtype), "s16s16")


# --- batch_reduce and gemm with int16 A under every ISA -------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 13, 37, 5), (2, 64, 64, 64), (2, 9, 65, 131)],
                         ids=lambda s: "b{}_m{}_n{}_k{}".format(*s))
def test_batch_reduce_and_gemm_s16s16(isa, shape, rng):
    count, m, n, k = shape
    A = random_s16((count + 1, m + 2, k + 3), rng)[1:, 1:1 + m, 2:2 + k]  # lda > K
    B = random_s16((count, k, n), rng)
    ref = reference_s16s16(list(A), list(B))
    Bp = brgemm.pack_b(B, "s16s16")
    assert_exact_s32(brgemm.batch_reduce(A, Bp), ref, what=f"batch_reduce under {isa}")
    assert_exact_s32(brgemm.batch_reduce(A, B), ref, what="batch_reduce, B packed per call")
    C0 = random_s32((m, n), rng, bound=2 ** 30)
    C1 = C0.copy()
    assert brgemm.batch_reduce(A, Bp, C1, beta=1.0) is C1
    assert_exact_s32(C1, ref + C0, what=f"batch_reduce beta 1 under {isa}")
    ref0 = reference_s16s16([A[0]], [B[0]])
    for layout in ("rows", "panels"):
        assert_exact_s32(brgemm.gemm(A[0], brgemm.pack_b(B[0], "s16s16", layout=layout)), ref0,
                         what=f"gemm {layout} under {isa}")


def test_gemm_s16s16_deep_k_threads(rng, isa_restored):
    """K above gemm's K chunk, several threads: partial sums accumulate exactly."""
    brgemm.set_isa(None)
    A, B = random_s16((67, 2500), rng), random_s16((2500, 130), rng)
    threads = brgemm.get_num_threads()
    try:
        brgemm.set_num_threads(2)
        C = brgemm.gemm(A, brgemm.pack_b(B, "s16s16", layout="panels"))
    finally:
        brgemm.set_num_threads(threads)
    assert_exact_s32(C, reference_s16s16([A], [B]))


def test_s16s16_epilogue_dequantizes(rng, isa_restored):
    """scale (a power of two: DFP-16's exponent), bias and ReLU on the int32 sum → float32."""
    brgemm.set_isa(None)
    A, B = random_s16((5, 40), rng), random_s16((40, 33), rng)
    bias = rng.standard_normal(33).astype(np.float32)
    ep = brgemm.Epilogue(out_dtype="float32", scale=np.float32(2.0 ** -20), bias=bias, activation="relu")
    C = brgemm.gemm(A, brgemm.pack_b(B, "s16s16"), epilogue=ep)
    acc = reference_s16s16([A], [B])
    want = np.maximum(acc.astype(np.float32) * np.float32(2.0 ** -20) + bias, 0)
    assert C.dtype == np.float32 and np.array_equal(C, want)


# --- errors name their argument -----------------------------------------------------------------------


def test_s16s16_errors(rng):
    A = random_s16((2, 3, 4), rng)
    B = random_s16((2, 4, 5), rng)
    with pytest.raises(ValueError, match=r"^B was packed for 'u8s8', but A \(int16\) needs 's16s16'"):
        brgemm.batch_reduce(A, brgemm.pack_b(B.astype(np.int8), "u8s8"))
    with pytest.raises(ValueError, match=r"^B was packed for 's16s16', but A \(uint8\) needs 'u8s8'"):
        brgemm.batch_reduce(A.astype(np.uint8), brgemm.pack_b(B, "s16s16"))
    with pytest.raises(TypeError, match=r"^B must have dtype int16, got int8"):
        brgemm.batch_reduce(A, B.astype(np.int8))
    with pytest.raises(TypeError, match=r"^C must have dtype int32, got float32"):
        brgemm.batch_reduce(A, B, np.zeros((3, 5), np.float32))
    for beta in (0.5, 2.0):
        with pytest.raises(ValueError, match=r"beta must be 0 or 1 for s16s16"):
            brgemm.Kernel(4, 4, 4, dtype="s16s16", beta=beta)
    kernel = brgemm.Kernel(3, 5, 4, dtype="s16s16")
    with pytest.raises(TypeError, match=r"^A must have dtype int16, got int8"):
        kernel(A[0].astype(np.int8), brgemm.pack_b(B[0], "s16s16").data, np.zeros((3, 5), np.int32), 1)
    with pytest.raises(ValueError, match=r"^epilogue: zero points are for int8 kernels"):
        brgemm.gemm(A[0], brgemm.pack_b(B[0], "s16s16"),
                    epilogue=brgemm.Epilogue(out_dtype="float32", a_zero_point=3))


# --- s16s16f32: s32 per batch element, f32 across the batch (the DFP-16 chunks) ------------------------

S16S16F32 = [u for u in ALL_UKERNELS if u["dtype"] == "s16s16f32"]


def reference_s16s16f32(A, B, c0, beta):
    """float32: each A[i] @ B[i] exact (modulo 2^32, as int32), rounded to float32, added in batch
    order to a zero accumulator; then acc (beta 0) or acc + C0 (beta 1)."""
    acc = np.zeros((A.shape[1], B.shape[2]), np.float32)
    for a, b in zip(A, B):
        s = a.astype(np.int64) @ b.astype(np.int64)
        acc = acc + ((s + 2 ** 31) % 2 ** 32 - 2 ** 31).astype(np.float32)
    return acc if beta == 0 else acc + c0


def test_s16s16f32_names_and_levels():
    assert S16S16F32 and S16S16F32[0]["isa"] == "scalar"
    for u in S16S16F32:
        assert u["name"] == f"ukernel_s16s16_f32_{u['mr']}x{u['nr']}c2__{u['isa'].replace('_', '')}"
    for level in ("avx2", "avx512", "avx512_vnni"):
        if level in _core.built_isas():
            assert any(u["isa"] == level for u in S16S16F32), f"no s16s16f32 ukernel for {level}"


_F32_CASES = [(1, 1, 1, 1), (5, 17, 3, 3), (7, 33, 64, 2), (13, 65, 37, 4), (6, 32, 2, 7)]  # (m, n, k, count)


@pytest.mark.parametrize("beta", [0.0, 1.0])
@pytest.mark.parametrize("m, n, k, count", _F32_CASES)
@pytest.mark.parametrize("info", [pytest.param(u, id=u["name"]) for u in S16S16F32])
def test_s16s16f32_ukernels(info, m, n, k, count, beta, rng, isa_restored):
    require_ukernel(info)
    A = random_s16((count, m, k), rng, bound=2 ** 15)  # full range: chunks past the s32 bound wrap
    B = random_s16((count, k, n), rng, bound=2 ** 15)
    Bp = brgemm.pack_b(B, "s16s16f32")
    assert (Bp.dtype, Bp.kp) == ("s16s16", 2)  # the s16s16 packing
    C = rng.standard_normal((m, n)).astype(np.float32)
    c0 = C.copy()
    if beta == 0:
        C[:] = np.nan  # beta 0 never reads C
    kernel = brgemm.Kernel(m, n, k, dtype="s16s16f32", ukernel=info["name"], beta=beta)
    kernel(A, Bp.data, C, count)
    want = reference_s16s16f32(A, B, c0, beta)
    assert np.array_equal(C, want), info["name"]
