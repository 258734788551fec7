"""Every int8 microkernel (A uint8 × B int8 packed VNNI-4 → C int32), called directly by name,
over the named sweep (tests/shapes.py, adapted to int8: beta 0 or 1, C full of garbage instead
of NaN, more K that are not multiples of 4) against the exact int64 oracle (brgemm.testing,
"# --- int8 ---"); the results bit-identical across every kernel and every ISA, including the
sums next to the s32 overflow bound; A, B and C flush against an unmapped page (nothing is read
or written past them); pack_b's VNNI-4 layout and column sums; batch_reduce with uint8 A under
every ISA; and the errors that name their argument.

Integer sums do not depend on the order of the additions, so there is no tolerance anywhere:
every comparison is ==. That is what catches vpmaddubsw, whose 16-bit pair sums saturate
(255·127 + 255·127 > 32767): it must not be used on any path.
"""

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

import brgemm
from brgemm import _core
from brgemm.testing import (K_MAX_255_127, K_MAX_255_M128, S32_MAX, S32_MIN, assert_exact_s32,
                            make_problem_u8s8, packed_rows, random_s8, random_s32, random_u8,
                            reference_u8s8, unpack_vnni4)
from conftest import (ALL_UKERNELS, ISA_LEVELS, require_ukernel, restore_isa, subprocess_env,
                      ukernel_unavailable_reason)
from shapes import BATCH_KINDS, Case, sweep

U8S8 = [u for u in ALL_UKERNELS if u["dtype"] == "u8s8"]


@pytest.fixture
def isa_restored():
    """Restores the session's ISA cap after a test that lifted it (require_ukernel)."""
    yield
    restore_isa()


def int8_cases(mr, nr):
    """The named sweep for an MR × NR int8 ukernel: sweep(mr, nr) with every beta that is not 0
    or 1 turned into beta 1 (u8s8 beta applies to the s32 accumulator and is 0 or 1 only; the
    plain "beta0.5" case would repeat "beta1" and is dropped), "nan_c" (C full of NaN under
    beta 0) turned into "garbage_c" (C full of arbitrary int32, the extremes included), plus
    K = 5..8 on a full tile (1..4 are in the sweep: K below, at and above one quad) and K
    around the AVX-512 kernel's A chunk of 256 bytes."""
    cases = []
    for c in sweep(mr, nr):
        cid, changes = c.id, {}
        if c.beta not in (0.0, 1.0):
            if c.id == "beta0.5":
                continue
            cid = cid.replace(f"beta{c.beta:g}", "beta1")
            changes["beta"] = 1.0
        if c.c_fill == "nan":
            cid = cid.replace("nan_c", "garbage_c")
            changes["c_fill"] = "garbage"
        cases.append(replace(c, id=cid, **changes))
    for k in (5, 6, 7, 8, 256, 257, 263):
        cases.append(Case(f"k{k}_full_tile", mr, nr, k))
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "int8 case ids must be unique"
    assert all(c.beta in (0.0, 1.0) for c in cases)
    return cases


def _sweep_params():
    return [pytest.param(u, case, id=f"{u['name']}-{case.id}")
            for u in U8S8 for case in int8_cases(u["mr"], u["nr"])]


def _ukernel_params():
    return [pytest.param(u, id=u["name"]) for u in U8S8]


# --- every variant over the sweep, exact ---------------------------------------------------------


@pytest.mark.parametrize("info, case", _sweep_params())
def test_ukernel_sweep(info, case, rng, isa_restored):
    require_ukernel(info)
    p = make_problem_u8s8(case.m, case.n, case.k, rng=rng, **case.problem_kwargs())
    kernel = brgemm.Kernel(case.m, case.n, case.k, ukernel=info["name"], **p.kernel_kwargs())
    assert kernel.name == info["name"]
    assert (kernel.dtype, kernel.mr, kernel.nr, kernel.isa) == ("u8s8", info["mr"], info["nr"], info["isa"])
    assert p.run(kernel) is p.c  # returns C, written in place
    p.check(what=info["name"])
    # The harness packed what the oracle multiplies (pack_b and unpack_vnni4 agree).
    for plain, unpacked in zip(p.b_plain, p.b_blocks):
        assert np.array_equal(plain, unpacked)


def test_int8_sweep_covers_the_contract():
    """The cases that the contract singles out are in every variant's sweep."""
    for u in U8S8:
        cases = int8_cases(u["mr"], u["nr"])
        ks = {c.k for c in cases}
        assert set(range(1, 9)) <= ks and any(k % 4 and k > 1000 for k in ks)
        assert {(c.batch, c.count) for c in cases} >= {(b, n) for b in BATCH_KINDS for n in (1, 2, 7)}
        assert any(c.c_fill == "garbage" for c in cases) and any(c.beta == 1.0 for c in cases)
        assert any(c.m < u["mr"] for c in cases) and any(c.n % u["nr"] for c in cases)


# --- names, dispatch ----------------------------------------------------------------------------


def test_ukernel_names_are_their_specification():
    assert U8S8, "the build has no int8 microkernels"
    assert U8S8[0]["isa"] == "scalar", "the reference ukernel comes first"
    levels = [ISA_LEVELS.index(u["isa"]) for u in U8S8]
    assert levels == sorted(levels), "ukernels are listed in ascending ISA order"
    names = [u["name"] for u in U8S8]
    assert len(names) == len(set(names))
    available = set(brgemm.available_isas())
    for u in U8S8:
        suffix = u["isa"].replace("_", "")  # avx512_vnni -> avx512vnni
        assert u["name"] == f"ukernel_u8s8_s32_{u['mr']}x{u['nr']}c4__{suffix}"
        assert u["kp"] == 4
        assert u["available"] == (u["isa"] in available)
    # Every integer ISA level of this build has its own kernel (none silently runs scalar code).
    for level in ("avx2", "avx512", "avx512_vnni"):
        if level in _core.built_isas():
            assert any(u["isa"] == level for u in U8S8), f"no u8s8 ukernel for {level}"


def _expected_dispatch(level):
    cap = ISA_LEVELS.index(level)
    usable = [u for u in U8S8 if ISA_LEVELS.index(u["isa"]) <= cap and u["available"]]
    best = max(ISA_LEVELS.index(u["isa"]) for u in usable)
    return next(u for u in usable if ISA_LEVELS.index(u["isa"]) == best)


@pytest.mark.parametrize("batch", BATCH_KINDS)
def test_dispatch_under_forced_isa(isa, batch, rng):
    assert brgemm.isa() == isa
    kernel = brgemm.Kernel(9, 21, 5, dtype="u8s8", batch=batch)
    want = _expected_dispatch(isa)
    assert kernel.name == want["name"]
    assert (kernel.mr, kernel.nr) == (want["mr"], want["nr"])
    p = make_problem_u8s8(9, 21, 5, rng=rng, batch=batch, count=2, beta=1.0)
    p.run(brgemm.Kernel(9, 21, 5, **p.kernel_kwargs()))
    p.check(what=f"dispatch under {isa}")


# --- bit-identical across every kernel and every ISA -----------------------------------------------

# Shapes that leave M and N remainders for every variant, K not a multiple of 4, padded
# leading dimensions, repeated blocks (offset), C garbage (beta 0) or accumulated (beta 1).
_AGREEMENT = [pytest.param(kind, beta, id=f"{kind}-beta{beta:g}") for kind in BATCH_KINDS for beta in (0.0, 1.0)]


@pytest.mark.parametrize("batch, beta", _AGREEMENT)
def test_every_ukernel_gives_identical_bits(batch, beta, isa_restored):
    available = [u for u in U8S8 if u["available"]]
    if len(available) < 2:
        pytest.skip("fewer than two u8s8 ukernels can run here: " +
                    "; ".join(ukernel_unavailable_reason(u) for u in U8S8 if not u["available"]))
    brgemm.set_isa(None)
    rng = np.random.default_rng(20240612)  # the same inputs for every kernel
    p = make_problem_u8s8(23, 77, 37, rng=rng, batch=batch, count=3, lda=41, ldb=80, ldc=79, beta=beta,
                          c_fill="garbage" if beta == 0 else "random")
    results = {}
    for u in available:
        c = p.fresh_c()
        kernel = brgemm.Kernel(p.m, p.n, p.k, ukernel=u["name"], **p.kernel_kwargs())
        assert p.run(kernel, c) is c
        p.check(c, what=u["name"])
        results[u["name"]] = c
    ref_name = available[0]["name"]
    for name, c in results.items():
        assert c.tobytes() == results[ref_name].tobytes(), f"{name} and {ref_name} differ"


@pytest.mark.parametrize("batch", BATCH_KINDS)
def test_isa_bit_identical_to_scalar(isa, batch):
    """Dispatch under ``isa`` and under scalar on the same inputs: the same bits, both exact."""
    rng = np.random.default_rng(20240613)
    p = make_problem_u8s8(31, 67, 259, rng=rng, batch=batch, count=2, lda=263, ldb=70, ldc=71, beta=1.0)
    results = {}
    for level in (isa, "scalar"):
        brgemm.set_isa(level)  # the fixture restores the session's cap afterwards
        c = p.fresh_c()
        kernel = brgemm.Kernel(p.m, p.n, p.k, **p.kernel_kwargs())
        p.run(kernel, c)
        p.check(c, what=f"{kernel.name} under {level}")
        results[level] = c
    assert results[isa].tobytes() == results["scalar"].tobytes()


# --- the extremes, next to the s32 overflow bound ----------------------------------------------------
#
# With A = 255 everywhere and B = -128 (or 127) everywhere every product has the same sign, so
# every partial sum of any order lies between 0 and the final sum: no kernel may overflow
# before the end as long as the final sum fits. The largest K_total that fits:
#   255·(-128)·K >= -2^31     ⇔ K <= 65793  (sum -2 147 450 880; K = 65794 overflows)
#   255·127·K   <= 2^31 - 1  ⇔ K <= 66311  (sum  2 147 474 235; K = 66312 overflows)
# A kernel built on vpmaddubsw fails both at once (255·127·2 = 64770 saturates to 32767).

_EXTREMES = [
    pytest.param(255, -128, K_MAX_255_M128, 1, id="a255_b-128_k65793"),
    pytest.param(255, 127, K_MAX_255_127, 1, id="a255_b127_k66311"),
    pytest.param(255, -128, K_MAX_255_M128 // 3, 3, id="a255_b-128_k21931_x3"),
]


def test_overflow_bounds_are_tight():
    assert K_MAX_255_M128 == 65793 and K_MAX_255_127 == 66311
    assert 255 * -128 * K_MAX_255_M128 >= S32_MIN > 255 * -128 * (K_MAX_255_M128 + 1)
    assert 255 * 127 * K_MAX_255_127 <= S32_MAX < 255 * 127 * (K_MAX_255_127 + 1)
    assert 3 * (K_MAX_255_M128 // 3) == K_MAX_255_M128


@pytest.mark.parametrize("a_value, b_value, k, count", _EXTREMES)
@pytest.mark.parametrize("info", _ukernel_params())
def test_ukernel_extremes_near_s32_overflow(info, a_value, b_value, k, count, rng, isa_restored):
    require_ukernel(info)
    m, n = info["mr"] + 1, info["nr"] + 1  # a remainder tile in both directions
    A = np.full((count, m, k), a_value, dtype=np.uint8)
    Bp = brgemm.pack_b(np.full((count, k, n), b_value, dtype=np.int8), "u8s8")
    C = random_s32((m, n), rng)  # garbage: beta 0 must overwrite it
    kernel = brgemm.Kernel(m, n, k, dtype="u8s8", ukernel=info["name"])
    kernel(A, Bp.data, C, count, stride_b=Bp.data[0].size)
    total = a_value * b_value * k * count
    assert S32_MIN <= total <= S32_MAX and abs(total) > 2 ** 31 - 2 ** 16  # near the bound, inside it
    assert_exact_s32(C, np.full((m, n), total, dtype=np.int64), what=info["name"])


# --- nothing read or written past A, B or C -------------------------------------------------------------

_GUARD_SCRIPT = r"""
import numpy as np
import brgemm
from brgemm.testing import assert_exact_s32, guarded as flush, packed_b_extent, reference_u8s8

rng = np.random.default_rng(11)
names = [u["name"] for u in brgemm.ukernels() if u["dtype"] == "u8s8" and u["available"]]
calls = 0
for k in (1, 2, 3, 5, 6, 7, 9, 67, 257):
    for m, n in ((1, 1), (3, 17), (7, 33), (15, 65)):
        a = flush(m * k, np.uint8)            # lda = k: the last row ends at the guard page
        a[:] = rng.integers(0, 256, a.size, dtype=np.uint8)
        b_plain = rng.integers(-128, 128, (k, n), dtype=np.int8)
        packed = brgemm.pack_b(b_plain, "u8s8").data.reshape(-1)
        b = flush(packed_b_extent(k, n, n), np.int8)  # the last packed row ends at the guard
        b[:] = packed[:b.size]
        c = flush(m * n, np.int32)
        ref = reference_u8s8([a.reshape(m, k)], [b_plain])
        for name in names:
            c[:] = rng.integers(-2**31, 2**31, c.size, dtype=np.int64).astype(np.int32)
            brgemm.Kernel(m, n, k, dtype="u8s8", ukernel=name)(a, b, c, 1)
            assert_exact_s32(c.reshape(m, n), ref, what=f"{name} m={m} n={n} k={k}")
            calls += 1
print("calls", calls, "kernels", len(names))
"""


def test_ukernels_stay_inside_a_b_and_c():
    """A (its k real columns: K not a multiple of 4 too), the packed B (its ceil(k/4) rows × n
    columns) and C (m×n) each end exactly at a PROT_NONE page; every available u8s8 kernel
    runs on them. A read or write past any of them kills the child with SIGSEGV."""
    proc = subprocess.run([sys.executable, "-c", _GUARD_SCRIPT], capture_output=True, text=True,
                          env=subprocess_env(), timeout=120)
    assert proc.returncode == 0, f"child exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    available = sum(u["available"] for u in U8S8)
    assert f"calls {9 * 4 * available} kernels {available}" in proc.stdout


# --- pack_b: the VNNI-4 layout and the column sums -----------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 7, 8, 9, 31, 64, 65])
@pytest.mark.parametrize("n, ldb", [(1, None), (17, None), (17, 23), (64, 64)])
def test_pack_b_u8s8_round_trip(k, n, ldb, rng):
    # B a slice of a larger array: its rows are ld_src > n apart.
    big = random_s8((k + 2, n + 5), rng)
    B = big[1:1 + k, 2:2 + n]
    P = brgemm.pack_b(B, "u8s8", ldb=ldb)
    L = n if ldb is None else ldb
    assert isinstance(P, brgemm.PackedB)
    assert (P.dtype, P.k, P.n, P.kp, P.ldb, P.batch) == ("u8s8", k, n, 4, L, None)
    assert P.data.dtype == np.int8 and P.data.shape == (packed_rows(k), L, 4)
    # Unpacked by the layout's formula: element (k, n) at ((k/4)·ldb + n)·4 + k%4.
    assert np.array_equal(unpack_vnni4(P.data, 0, k, n, L), B)
    # The same by a reshape: quad q of column j is data[q, j, :], so rows are data[q, :, r].
    full = P.data.transpose(0, 2, 1).reshape(packed_rows(k) * 4, L)
    assert np.array_equal(full[:k, :n], B)
    assert not full[k:].any(), "K padding must be zeros"
    assert not full[:, n:].any(), "columns past n must be zeros"
    assert P.colsum.dtype == np.int32 and P.colsum.shape == (n,)
    assert np.array_equal(P.colsum, B.sum(axis=-2, dtype=np.int64))


def test_pack_b_u8s8_batched_colsum_extremes(rng):
    k, n = 1001, 19
    B = random_s8((3, k, n), rng)
    B[0] = -128  # column sums -128128: far outside int16, exact in int32
    B[2] = 127
    P = brgemm.pack_b(B, "u8s8")
    assert P.batch == 3 and P.data.shape == (3, packed_rows(k), n, 4) and P.colsum.shape == (3, n)
    assert np.array_equal(P.colsum, B.sum(axis=-2, dtype=np.int64))
    assert (P.colsum[0] == -128 * k).all() and (P.colsum[2] == 127 * k).all()
    for i in range(3):
        assert np.array_equal(unpack_vnni4(P.data[i], 0, k, n, n), B[i])


def test_default_stride_b_is_one_packed_block(rng, isa_restored):
    """kernel(A, B, C, count) without stride_b steps B by one packed block (ceil(k/4)·ldb·4
    elements), not by k·ldb: with K = 5 the two differ."""
    brgemm.set_isa(None)
    count, m, n, k = 3, 5, 20, 5
    A = random_u8((count, m, k), rng)
    B = random_s8((count, k, n), rng)
    Bp = brgemm.pack_b(B, "u8s8")
    C = random_s32((m, n), rng)
    brgemm.Kernel(m, n, k, dtype="u8s8")(A, Bp.data, C, count)
    assert_exact_s32(C, reference_u8s8(list(A), list(B)))


# --- batch_reduce with uint8 A under every ISA ----------------------------------------------------------

_BR_SHAPES = [(1, 1, 1, 1), (3, 13, 37, 5), (2, 64, 64, 64), (7, 9, 65, 130)]  # (batch, M, N, K)


@pytest.mark.parametrize("shape", _BR_SHAPES, ids=lambda s: "b{}_m{}_n{}_k{}".format(*s))
@pytest.mark.parametrize("packed", [False, True], ids=["plain_B", "PackedB"])
def test_batch_reduce_u8s8(isa, packed, shape, rng):
    count, m, n, k = shape
    # A sliced out of a larger array: lda > K and a batch stride > M·lda.
    A = random_u8((count + 1, m + 2, k + 3), rng)[1:, 1:1 + m, 2:2 + k]
    B = random_s8((count, k, n), rng)
    ref = reference_u8s8(list(A), list(B))
    Bx = brgemm.pack_b(B, "u8s8") if packed else B
    C = brgemm.batch_reduce(A, Bx)
    assert_exact_s32(C, ref, what=f"batch_reduce under {isa}")
    # beta = 1 into a given C accumulates; beta = 0 overwrites garbage.
    C0 = random_s32((m, n), rng, bound=2 ** 30)
    C1 = C0.copy()
    assert brgemm.batch_reduce(A, Bx, C1, beta=1.0) is C1
    assert_exact_s32(C1, ref + C0, what=f"batch_reduce beta 1 under {isa}")
    C2 = random_s32((m, n), rng)
    brgemm.batch_reduce(A, Bx, C2, beta=0.0)
    assert_exact_s32(C2, ref, what=f"batch_reduce beta 0 under {isa}")


# --- errors name their argument ------------------------------------------------------------------------


@pytest.fixture
def u8s8_ops(rng):
    m, n, k = 3, 5, 6
    A = random_u8((m, k), rng)
    Bp = brgemm.pack_b(random_s8((k, n), rng), "u8s8")
    return brgemm.Kernel(m, n, k, dtype="u8s8"), A, Bp.data, np.zeros((m, n), np.int32)


@pytest.mark.parametrize("a_dtype", [np.int8, np.float32, np.int32])
def test_u8s8_kernel_rejects_a_of_another_dtype(u8s8_ops, a_dtype):
    kernel, A, B, C = u8s8_ops
    with pytest.raises(TypeError, match=r"^A must have dtype uint8, got " + np.dtype(a_dtype).name):
        kernel(A.astype(a_dtype), B, C, 1)


def test_u8s8_kernel_rejects_b_and_c_of_another_dtype(u8s8_ops):
    kernel, A, B, C = u8s8_ops
    with pytest.raises(TypeError, match=r"^B must have dtype int8, got uint8"):
        kernel(A, B.view(np.uint8), C, 1)
    with pytest.raises(TypeError, match=r"^C must have dtype int32, got float32"):
        kernel(A, B, C.astype(np.float32), 1)


@pytest.mark.parametrize("beta", [0.5, -1.0, 2.0])
def test_u8s8_beta_must_be_0_or_1(beta, rng):
    with pytest.raises(ValueError, match=r"beta must be 0 or 1 for u8s8"):
        brgemm.Kernel(4, 4, 4, dtype="u8s8", beta=beta)
    A, B = random_u8((2, 3, 4), rng), random_s8((2, 4, 5), rng)
    with pytest.raises(ValueError, match=r"beta must be 0 or 1 for u8s8"):
        brgemm.batch_reduce(A, brgemm.pack_b(B, "u8s8"), np.zeros((3, 5), np.int32), beta=beta)
    # 0 and 1 are accepted
    assert brgemm.Kernel(4, 4, 4, dtype="u8s8", beta=1).name.startswith("ukernel_u8s8_s32_")


def test_batch_reduce_u8s8_errors(rng):
    import ml_dtypes

    A = random_u8((2, 3, 4), rng)
    B = random_s8((2, 4, 5), rng)
    with pytest.raises(TypeError, match=r"^A must have dtype float32, bfloat16 \(ml_dtypes\), uint8, int8 or int16, got int32"):
        brgemm.batch_reduce(A.astype(np.int32), B)
    # A PackedB of the wrong dtype for A.
    bf16 = brgemm.pack_b(B.astype(np.float32).astype(ml_dtypes.bfloat16), "bf16")
    with pytest.raises(ValueError, match=r"^B was packed for 'bf16', but A \(uint8\) needs 'u8s8'"):
        brgemm.batch_reduce(A, bf16)
    f32 = brgemm.pack_b(B.astype(np.float32), "f32")
    with pytest.raises(ValueError, match=r"^B was packed for 'f32', but A \(uint8\) needs 'u8s8'"):
        brgemm.batch_reduce(A, f32)
    with pytest.raises(ValueError, match=r"^B was packed for 'u8s8', but A \(float32\) needs 'f32'"):
        brgemm.batch_reduce(A.astype(np.float32), brgemm.pack_b(B, "u8s8"))
    # A plain B of the wrong dtype is rejected by the packer, naming B.
    with pytest.raises(TypeError, match=r"^B must have dtype int8, got uint8"):
        brgemm.batch_reduce(A, B.view(np.uint8))
    with pytest.raises(TypeError, match=r"^C must have dtype int32, got float32"):
        brgemm.batch_reduce(A, B, np.zeros((3, 5), np.float32))
