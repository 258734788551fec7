"""Fused epilogues (brgemm.Epilogue) and int8 activations (s8s8).

Every stage is exact IEEE arithmetic in a fixed order, so each result is compared with ``==``
(NaN equal to NaN) against ``twin``: the same stages written in numpy float32 and applied to
the accumulator of the same product computed without an epilogue. Under every forced ISA
that checks each vector epilogue (AVX2, AVX-512) and the scalar one against the twin. int8
accumulators are exact, so there the twin starts from the int64 oracle.

s8s8: the kernels compute on a + 128 and the epilogue removes 128·colsum(B); the results must
be the exact Σ a·b on every ukernel, extremes included (−128 × −128 everywhere).
"""

import ml_dtypes
import numpy as np
import pytest

import brgemm
from conftest import ALL_UKERNELS, require_ukernel, restore_isa

BF16 = ml_dtypes.bfloat16


@pytest.fixture
def isa_restored():
    yield
    restore_isa()


# --- the twin -------------------------------------------------------------------------------


def bf16_out(v):
    """What an epilogue stores as bf16 (types.h: bf16_out_bits): ml_dtypes' round to nearest even,
    except that a zero or subnormal float32 gives a zero of its sign, as vcvtneps2bf16 does."""
    v = np.asarray(v, np.float32)
    flushed = np.where((v.view(np.uint32) & 0x7F800000) == 0, np.copysign(np.float32(0), v), v)
    return flushed.astype(BF16)


def twin(acc, *, prev=None, beta=0.0, int8=False, scale=None, bias=None, activation=None, out_dtype=None,
         out_scale=1.0, out_zero_point=0):
    """The epilogue stages of brgemm.h in numpy, on an accumulator: float32 for float kernels,
    the exact int64 sum (already corrected for zero points) for int8 ones."""
    if int8:
        s = np.asarray(acc, np.int64)
        if prev is not None and beta:
            s = s + prev
        s = ((s + 2 ** 31) % 2 ** 32 - 2 ** 31).astype(np.int32)  # modulo 2^32, as the kernels
        if out_dtype is None:
            return s
        v = s.astype(np.float32)
        if scale is not None:
            v = v * np.asarray(scale, np.float32)
    else:
        v = np.asarray(acc, np.float32)
        if prev is not None and beta:
            v = v + np.float32(beta) * prev
    if bias is not None:
        v = v + np.asarray(bias, np.float32)
    if activation == "relu":
        v = np.where(np.float32(0) > v, np.float32(0), v)  # max(0, v) as the x86 instruction: NaN stays
    if out_dtype == "bfloat16":
        return bf16_out(v)
    if out_dtype in ("uint8", "int8"):
        lo, hi = (0, 255) if out_dtype == "uint8" else (-128, 127)
        q = np.rint(v / np.float32(out_scale)) + np.float32(out_zero_point)
        q = np.where(q > lo, q, np.float32(lo))  # NaN → lo, as maxps(q, lo)
        q = np.where(q < hi, q, np.float32(hi))
        return q.astype(out_dtype)
    return v


def assert_same(got, want, what="C"):
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, expected {want.dtype}"
    assert got.shape == want.shape
    g, w = got.view(np.uint16) if got.dtype == BF16 else got, want.view(np.uint16) if want.dtype == BF16 else want
    if got.dtype == BF16:  # NaN payloads may differ; everything else bit for bit
        gn, wn = np.isnan(got.astype(np.float32)), np.isnan(want.astype(np.float32))
        assert np.array_equal(gn, wn), f"{what}: NaN at different places"
        g, w = g[~gn], w[~wn]
    bad = np.flatnonzero(~((g == w) | (np.isnan(g) & np.isnan(w)) if g.dtype.kind == "f" else g == w))
    assert bad.size == 0, f"{what}: {bad.size} of {g.size} differ, first at flat index {bad[0]}: " \
                          f"{g.reshape(-1)[bad[0]]} vs {w.reshape(-1)[bad[0]]}"


# --- float kernels ----------------------------------------------------------------------------

FLOAT_EPILOGUES = {
    "bias": dict(bias=True),
    "relu": dict(activation="relu"),
    "bias_relu": dict(bias=True, activation="relu"),
    "bf16": dict(out_dtype="bfloat16"),
    "bias_relu_bf16": dict(bias=True, activation="relu", out_dtype="bfloat16"),
    "f32_out": dict(out_dtype="float32"),
}
# (M, K, N): remainders of every tile and vector width, several K chunks of gemm (kc = 512),
# and the few-row (GEMV) path of gemm (M < 4·MR, K·N ≥ 2^16).
GEMM_SHAPES = [(1, 1, 1), (7, 13, 17), (37, 70, 45), (64, 64, 64), (29, 1100, 70), (3, 1030, 200), (1, 300, 257)]


def _float_operands(dtype, m, k, n, rng, layout="rows"):
    A = rng.standard_normal((m, k)).astype(np.float32)
    B = rng.standard_normal((k, n)).astype(np.float32)
    if dtype == "bf16":
        return A.astype(BF16), brgemm.pack_b(B.astype(BF16), "bf16", layout=layout)
    if dtype == "f32f16" or layout == "panels":
        return A, brgemm.pack_b(B, dtype, layout=layout)
    return A, B


@pytest.mark.parametrize("shape", GEMM_SHAPES, ids=lambda s: "m{}_k{}_n{}".format(*s))
@pytest.mark.parametrize("name", list(FLOAT_EPILOGUES))
@pytest.mark.parametrize("dtype, layout", [("f32", "rows"), ("bf16", "rows"), ("f32f16", "rows"),
                                           ("f32", "panels"), ("bf16", "panels"), ("f32f16", "panels")])
def test_gemm_float_epilogue_is_its_twin(isa, dtype, layout, name, shape, rng):
    m, k, n = shape
    A, B = _float_operands(dtype, m, k, n, rng, layout)
    spec = dict(FLOAT_EPILOGUES[name])
    bias = rng.standard_normal(n).astype(np.float32) if spec.pop("bias", False) else None
    acc = brgemm.gemm(A, B)
    got = brgemm.gemm(A, B, epilogue=brgemm.Epilogue(bias=bias, **spec))
    assert_same(got, twin(acc, bias=bias, **spec))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(37, 1100, 45), (3, 1030, 200), (200, 600, 130)], ids=str)
def test_gemm_epilogue_after_k_chunks_and_threads(threads, shape, rng):
    """However many K chunks gemm takes, the epilogue runs once, on the finished sum: with
    beta it equals the same product without epilogue (C0 added as gemm adds it) followed by
    the twin; a bf16 output keeps the partial sums in float32 until the end."""
    m, k, n = shape
    A, B = _float_operands("f32", m, k, n, rng)
    bias = rng.standard_normal(n).astype(np.float32)
    C0 = rng.standard_normal((m, n)).astype(np.float32)
    old = brgemm.get_num_threads()
    brgemm.set_num_threads(threads)
    try:
        acc = brgemm.gemm(A, B)
        summed = brgemm.gemm(A, B, C0.copy(), beta=1.0)
        C = C0.copy()
        brgemm.gemm(A, B, C, beta=1.0, epilogue=brgemm.Epilogue(bias=bias, activation="relu"))
        assert_same(C, twin(summed, bias=bias, activation="relu"))
        got = brgemm.gemm(A, B, epilogue=brgemm.Epilogue(bias=bias, out_dtype="bf16"))
        assert_same(got, twin(acc, bias=bias, out_dtype="bfloat16"))
    finally:
        brgemm.set_num_threads(old)


def test_epilogue_beta_general_on_one_chunk(isa, rng):
    A, B = _float_operands("f32", 20, 50, 40, rng)
    C0 = rng.standard_normal((20, 40)).astype(np.float32)
    bias = rng.standard_normal(40).astype(np.float32)
    acc = brgemm.gemm(A, B)
    C = C0.copy()
    brgemm.gemm(A, B, C, beta=-0.75, epilogue=brgemm.Epilogue(bias=bias))
    assert_same(C, twin(acc, prev=C0, beta=-0.75, bias=bias))


def test_float_epilogue_special_values(isa):
    """NaN and infinities go through every stage as the instructions define them: ReLU keeps
    NaN, bf16 rounding keeps NaN and infinities, ties round to even, subnormals become a zero of
    their sign (AVX512_BF16's rule: the twin's ±1e-40 must give ±0, not ml_dtypes' subnormal)."""
    vals = np.array([np.nan, -np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-40, -1e-40, 3.4e38,
                     1.00390625, 1.01171875, 1.0078125, -1.00390625, 65504.0, -2.5, 2.5], np.float32)
    n = vals.size
    A = np.ones((1, 1), np.float32)
    B = vals.reshape(1, n)
    acc = brgemm.batch_reduce(A[None], B[None])
    assert np.array_equal(acc, vals.reshape(1, n) + np.float32(0), equal_nan=True)  # 0 + 1·v: −0 becomes 0
    for spec in FLOAT_EPILOGUES.values():
        spec = dict(spec)
        bias = np.linspace(-1, 1, n).astype(np.float32) if spec.pop("bias", False) else None
        got = brgemm.batch_reduce(A[None], B[None], epilogue=brgemm.Epilogue(bias=bias, **spec))
        assert_same(got, twin(acc, bias=bias, **spec), what=str(spec))


def test_bf16_output_matches_ml_dtypes_rounding(isa, rng):
    """Round to nearest even, as ml_dtypes converts (the float32 values sit on and next to
    every bf16 tie)."""
    base = rng.standard_normal(4096).astype(np.float32).view(np.uint32)
    vals = np.concatenate([(base & 0xFFFF0000) | tail for tail in (0x8000, 0x7FFF, 0x8001, 0x0000)]).view(np.float32)
    A = np.ones((1, 1), np.float32)
    got = brgemm.batch_reduce(A[None], vals.reshape(1, 1, -1), epilogue=brgemm.Epilogue(out_dtype="bfloat16"))
    assert np.array_equal(got.view(np.uint16), vals.reshape(1, -1).astype(BF16).view(np.uint16))


# --- int8 kernels -----------------------------------------------------------------------------


def _int8_operands(signed, m, k, n, rng, extreme=None):
    if extreme is None:
        A = rng.integers(-128, 128, (m, k)).astype(np.int8) if signed else rng.integers(0, 256, (m, k)).astype(np.uint8)
        B = rng.integers(-128, 128, (k, n)).astype(np.int8)
    else:
        a, b = extreme
        A = np.full((m, k), a, np.int8 if signed else np.uint8)
        B = np.full((k, n), b, np.int8)
    return A, B


def _exact(A, B, za=0, zb=0):
    return (A.astype(np.int64) - za) @ (B.astype(np.int64) - zb)


INT8_EPILOGUES = {
    "acc": dict(),
    "f32_tensor": dict(out_dtype="float32", scale="tensor"),
    "f32_column_bias_relu": dict(out_dtype="float32", scale="column", bias=True, activation="relu"),
    "bf16_column": dict(out_dtype="bfloat16", scale="column", bias=True),
    "u8_requant": dict(out_dtype="uint8", scale="column", bias=True, out_scale=0.37, out_zero_point=100),
    "s8_requant_relu": dict(out_dtype="int8", scale="tensor", activation="relu", out_scale=2.5, out_zero_point=-3),
}


def _int8_epilogue(spec, n, rng, za, zb):
    spec = dict(spec)
    scale = spec.pop("scale", None)
    if scale == "tensor":
        spec["scale"] = np.float32(rng.uniform(1e-4, 1e-2))
    elif scale == "column":
        spec["scale"] = rng.uniform(1e-4, 1e-2, n).astype(np.float32)
    if spec.pop("bias", False):
        spec["bias"] = rng.standard_normal(n).astype(np.float32)
    return brgemm.Epilogue(a_zero_point=za, b_zero_point=zb, **spec), spec


@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 13, 17), (37, 70, 45), (29, 1100, 70), (3, 1030, 200)],
                         ids=lambda s: "m{}_k{}_n{}".format(*s))
@pytest.mark.parametrize("name", list(INT8_EPILOGUES))
@pytest.mark.parametrize("signed, za, zb", [(False, 0, 0), (False, 128, 0), (False, 7, -5), (True, 0, 0),
                                            (True, -20, 3)], ids=["u8", "u8_za128", "u8_za_zb", "s8", "s8_za_zb"])
@pytest.mark.parametrize("layout", ["rows", "panels"])
def test_gemm_int8_epilogue_is_its_twin(isa, layout, signed, za, zb, name, shape, rng):
    m, k, n = shape
    A, B = _int8_operands(signed, m, k, n, rng)
    ep, spec = _int8_epilogue(INT8_EPILOGUES[name], n, rng, za, zb)
    got = brgemm.gemm(A, brgemm.pack_b(B, "u8s8", layout=layout), epilogue=ep)
    want = twin(_exact(A, B, za, zb), int8=True, **spec)
    assert_same(got, want)


@pytest.mark.parametrize("out_dtype", ["uint8", "int8"])
@pytest.mark.parametrize("bias, za, activation, out_scale", [
    (True, 128, None, 1.0), (False, 0, None, 1.0), (True, 0, "relu", 0.37), (False, 128, "relu", 1.0),
    (True, 7, None, 2.5)], ids=["bias_za", "bare", "bias_relu_scaled", "za_relu", "bias_za_scaled"])
@pytest.mark.parametrize("shape", [(13, 64, 64), (7, 70, 128), (6, 3, 64)], ids=lambda s: "m{}_k{}_n{}".format(*s))
def test_int8_64_wide_tiles_in_registers_are_their_twin(isa, shape, bias, za, activation, out_scale, out_dtype, rng):
    """N a multiple of 64 with a column scale: the AVX-512 kernels' whole-width tiles requantize
    in registers with their stages picked once per tile (an absent bias or column offset added
    as zero). Every combination that path takes, with specials in the bias (±inf, NaN, values
    past the output range, ±0), equal to the twin on every ISA."""
    m, k, n = shape
    A, B = _int8_operands(False, m, k, n, rng)
    spec = dict(out_dtype=out_dtype, scale=rng.uniform(1e-4, 1e-2, n).astype(np.float32), activation=activation,
                out_scale=out_scale, out_zero_point=3 if out_dtype == "uint8" else -2)
    if bias:
        b = rng.standard_normal(n).astype(np.float32)
        b[:8] = [np.inf, -np.inf, np.nan, 1e9, -1e9, 0.0, -0.0, 300.0]
        spec["bias"] = b
    got = brgemm.gemm(A, brgemm.pack_b(B, "u8s8"), epilogue=brgemm.Epilogue(a_zero_point=za, **spec))
    assert_same(got, twin(_exact(A, B, za), int8=True, **spec))


@pytest.mark.parametrize("extreme", [(255, -128), (0, 127), (-128, -128), (127, -128), (-128, 127)], ids=str)
def test_int8_extremes_every_isa(isa, extreme, rng):
    """Every product at its extreme, with K up to where the s32 sum still fits: the s8 shift
    and its compensation (a + 128 = 0 or 255) stay exact."""
    a, b = extreme
    signed = a < 0 or a == 127  # 255 and 0 as uint8
    k = 4099  # |Σ| ≤ 4099·255·128 < 2^31
    A, B = _int8_operands(signed, 5, k, 33, rng, extreme=(a, b))
    P = brgemm.pack_b(B, "u8s8")
    assert_same(brgemm.gemm(A, P), twin(_exact(A, B), int8=True))


def test_requantize_saturates_and_rounds_ties_to_even(isa):
    """Values beyond the output range saturate; ties (x.5) round to even, as np.rint."""
    vals = np.array([-1e9, -300.5, -128.5, -127.5, -0.5, 0.5, 1.5, 2.5, 126.5, 127.5, 254.5, 255.5, 1e9,
                     np.inf, -np.inf], np.float32)
    A = np.ones((1, 1), np.uint8)
    B = np.ones((1, vals.size), np.int8)
    for out in ("uint8", "int8"):
        # The dequantized value of the (exact) sum 1 is scale·1 = bias 0 + the value itself via bias.
        ep = brgemm.Epilogue(out_dtype=out, scale=0.0, bias=vals)
        got = brgemm.gemm(A, brgemm.pack_b(B, "u8s8"), epilogue=ep)
        assert_same(got, twin(np.ones((1, vals.size), np.int64), int8=True, scale=np.float32(0), bias=vals,
                              out_dtype=out), what=out)


def test_batch_reduce_int8_zero_points_over_the_batch(isa, rng):
    """Column sums over the whole batch (from the batched PackedB) and K·batch·za·zb."""
    count, m, k, n = 3, 9, 21, 19
    A = rng.integers(0, 256, (count, m, k)).astype(np.uint8)
    B = rng.integers(-128, 128, (count, k, n)).astype(np.int8)
    want = sum(_exact(A[i], B[i], 11, -4) for i in range(count))
    got = brgemm.batch_reduce(A, brgemm.pack_b(B, "u8s8"), epilogue=brgemm.Epilogue(a_zero_point=11, b_zero_point=-4))
    assert_same(got, twin(want, int8=True))
    As = A.view(np.int8)
    got = brgemm.batch_reduce(As, brgemm.pack_b(B, "u8s8"))
    assert_same(got, twin(sum(_exact(As[i], B[i]) for i in range(count)), int8=True))


# --- s8s8 microkernels, each by name ------------------------------------------------------------

S8S8 = [u for u in ALL_UKERNELS if u["dtype"] == "s8s8"]


def test_every_u8s8_ukernel_has_its_s8s8_twin():
    assert sorted(u["name"].replace("u8s8", "s8s8") for u in ALL_UKERNELS if u["dtype"] == "u8s8") == \
        sorted(u["name"] for u in S8S8)


def test_ukernel_tiles_fit_the_epilogue_scratch():
    """execute() stages a tile in a 16 × 64 scratch buffer before its epilogue."""
    for u in ALL_UKERNELS:
        assert u["mr"] <= 16 and u["nr"] <= 64, u["name"]


@pytest.mark.parametrize("info", S8S8, ids=lambda u: u["name"])
def test_s8s8_ukernel_exact(info, rng, isa_restored):
    require_ukernel(info)
    mr, nr = info["mr"], info["nr"]
    for m, n, k, count, beta in [(mr, nr, 64, 3, 0.0), (mr - 1 or 1, nr - 3, 7, 2, 1.0), (1, 1, 1, 1, 0.0),
                                 (2 * mr + 1, 2 * nr + 5, 259, 2, 1.0), (mr, nr, 5, 0, 1.0)]:
        for extreme in (None, (-128, -128), (127, -128)):
            blocks = max(count, 1)  # count 0 still names one block's worth of A and B
            A, B = _int8_operands(True, blocks * m, k, n, rng, extreme)
            A = A.reshape(blocks, m, k)
            Bs = np.stack([B] * blocks) if extreme else rng.integers(-128, 128, (blocks, k, n)).astype(np.int8)
            P = brgemm.pack_b(Bs, "u8s8")
            colsum = Bs[:count].astype(np.int64).sum(axis=(0, 1)).astype(np.int32).reshape(n)
            kern = brgemm.Kernel(m, n, k, dtype="s8s8", beta=beta, ukernel=info["name"],
                                 epilogue=brgemm.Epilogue(b_colsum=colsum))
            C0 = rng.integers(-2 ** 20, 2 ** 20, (m, n)).astype(np.int32)
            C = C0.copy()
            kern(A, P.data, C, count)
            want = sum((_exact(A[i], Bs[i]) for i in range(count)), np.zeros((m, n), np.int64))
            assert_same(C, twin(want, prev=C0 if beta else None, beta=beta, int8=True), what=f"{m}x{n}x{k} b{count}")


# --- the Kernel API with an epilogue ------------------------------------------------------------


@pytest.mark.parametrize("batch", ["stride", "offset", "address"])
def test_kernel_epilogue_every_batch_kind(isa, batch, rng):
    m, n, k, count = 10, 37, 20, 3
    A = rng.standard_normal((count, m, k)).astype(np.float32)
    B = rng.standard_normal((count, k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    plain = brgemm.Kernel(m, n, k, batch=batch)
    fused = brgemm.Kernel(m, n, k, batch=batch, epilogue=brgemm.Epilogue(bias=bias, activation="relu",
                                                                         out_dtype="bfloat16"))
    assert fused.epilogue.out_dtype == "bfloat16" and plain.epilogue is None
    assert fused.handle != plain.handle
    def run(kern, C):
        if batch == "stride":
            return kern(A, B, C, count)
        if batch == "offset":
            return kern(A, B, C, np.arange(count) * m * k, np.arange(count) * k * n)
        return kern(list(A), list(B), C)

    acc = run(plain, np.empty((m, n), np.float32))
    C = run(fused, np.empty((m, n), BF16))
    assert_same(C, twin(acc, bias=bias, activation="relu", out_dtype="bfloat16"))
    bias[:] = 0  # kept by reference: in-place writes reach the next call
    assert_same(run(fused, np.empty((m, n), BF16)), twin(acc, activation="relu", out_dtype="bfloat16"))


# --- errors name their argument -----------------------------------------------------------------


def test_epilogue_argument_errors():
    with pytest.raises(ValueError, match="^activation must be None or one of relu, "):
        brgemm.Epilogue(activation="gelu2")
    with pytest.raises(TypeError, match="^activation must be None or a name"):
        brgemm.Epilogue(activation=1)
    with pytest.raises(ValueError, match="^out_dtype must be None"):
        brgemm.Epilogue(out_dtype="float16")
    with pytest.raises(ValueError, match="^out_scale and out_zero_point requantize"):
        brgemm.Epilogue(out_scale=0.5)
    with pytest.raises(ValueError, match="^out_scale must be a positive finite float32"):
        brgemm.Epilogue(out_dtype="uint8", out_scale=0.0)
    with pytest.raises(ValueError, match="^out_scale must be a positive finite float32"):
        brgemm.Epilogue(out_dtype="uint8", out_scale=1e-50)
    with pytest.raises(ValueError, match=r"^out_zero_point must be in 0\.\.255"):
        brgemm.Epilogue(out_dtype="uint8", out_scale=1.0, out_zero_point=-1)
    with pytest.raises(ValueError, match=r"^b_zero_point must be in -128\.\.127"):
        brgemm.Epilogue(b_zero_point=200)
    with pytest.raises(TypeError, match="^bias must be a number or a 1-D array"):
        brgemm.Epilogue(bias=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="^scale must be finite"):
        brgemm.Epilogue(scale=np.nan)
    ep = brgemm.Epilogue()
    with pytest.raises(AttributeError, match="immutable"):
        ep.bias = np.zeros(3, np.float32)
    with pytest.raises(TypeError, match="^epilogue must be a brgemm.Epilogue"):
        brgemm.gemm(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.float32), epilogue="relu")


def test_epilogue_errors_against_the_call(rng):
    A = np.zeros((4, 6), np.float32)
    B = np.zeros((6, 5), np.float32)
    with pytest.raises(ValueError, match="^bias must be 1-D with n = 5 values"):
        brgemm.gemm(A, B, epilogue=brgemm.Epilogue(bias=np.zeros(4, np.float32)))
    with pytest.raises(ValueError, match="^epilogue: scale is for int8 kernels"):
        brgemm.gemm(A, B, epilogue=brgemm.Epilogue(scale=2.0))
    with pytest.raises(ValueError, match="^epilogue: zero points are for int8 kernels"):
        brgemm.gemm(A, B, epilogue=brgemm.Epilogue(a_zero_point=3))
    with pytest.raises(ValueError, match="^beta must be 0 with this epilogue"):
        brgemm.gemm(A, B, np.zeros((4, 5), BF16), beta=1.0, epilogue=brgemm.Epilogue(out_dtype="bfloat16"))
    with pytest.raises(TypeError, match="^C must have dtype bfloat16"):
        brgemm.gemm(A, B, np.zeros((4, 5), np.float32), epilogue=brgemm.Epilogue(out_dtype="bfloat16"))
    Au = np.zeros((4, 6), np.uint8)
    P = brgemm.pack_b(np.zeros((6, 5), np.int8), "u8s8")
    with pytest.raises(ValueError, match="^epilogue: scale must hold 1 .per tensor. or n = 5"):
        brgemm.gemm(Au, P, epilogue=brgemm.Epilogue(scale=np.ones(3), out_dtype="float32"))
    with pytest.raises(ValueError, match="^epilogue: bias, activation and scale need a float or requantized output"):
        brgemm.gemm(Au, P, epilogue=brgemm.Epilogue(bias=np.ones(5)))
    with pytest.raises(ValueError, match=r"^epilogue: a_zero_point must be in -128\.\.127 for int8 A"):
        brgemm.gemm(Au.view(np.int8), P, epilogue=brgemm.Epilogue(a_zero_point=200))
    with pytest.raises(ValueError, match="^beta must be 0 or 1 for s8s8"):
        brgemm.gemm(Au.view(np.int8), P, np.zeros((4, 5), np.int32), beta=0.5)
    # s8s8 through the Kernel API needs B's column sums, of the right length.
    with pytest.raises(ValueError, match="^epilogue: b_colsum .column sums of B"):
        brgemm.Kernel(4, 5, 6, dtype="s8s8")
    with pytest.raises(ValueError, match="^epilogue: b_colsum .column sums of B"):
        brgemm.Kernel(4, 5, 6, dtype="u8s8", epilogue=brgemm.Epilogue(a_zero_point=3))
    with pytest.raises(ValueError, match="^b_colsum must have n = 5 columns"):
        brgemm.Kernel(4, 5, 6, dtype="s8s8", epilogue=brgemm.Epilogue(b_colsum=np.zeros(4, np.int32)))
    # Without zero points, u8 A needs no column sums.
    brgemm.Kernel(4, 5, 6, dtype="u8s8", epilogue=brgemm.Epilogue(out_dtype="float32", scale=0.5))
