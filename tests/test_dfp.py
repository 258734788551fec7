"""DFP-16 (brgemm.dfp): the shared exponent E(max|f|) − 14 and the mantissas against a numpy
reference, exactly, under every ISA (the per-ISA kernels give the scalar twin's bits, tails of
every vector width included); the round trip's error bound; special values refused; and the
chunked product: no int32 chunk sum can overflow (checked from the chunks it reports), its
result equal to the float32 sum of the exact chunk sums, and close to float64 within the bound
DFP-16's rounding of both operands gives."""

import numpy as np
import pytest

import brgemm
from brgemm import dfp

S32_MAX = 2 ** 31 - 1
SIZES = [1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100, 1000]


def reference_exponent(x):
    """⌊log2 max|x|⌋ − 14 in float64 (exact for float32 inputs), 0 for all zeros."""
    top = np.abs(x.astype(np.float64)).max()
    return 0 if top == 0 else int(np.floor(np.log2(top))) - 14


def reference_mantissa(x, e):
    """round-half-even(x·2^−e) clamped to ±32767, in float64 (x·2^−e is exact)."""
    return np.clip(np.rint(np.ldexp(x.astype(np.float64), -e)), -32767, 32767).astype(np.int16)


def awkward(rng, n):
    """Normal values over several octaves, with ties (k + 0.5 in mantissa units) mixed in."""
    x = (rng.standard_normal(n) * 2.0 ** rng.integers(-8, 8, n)).astype(np.float32)
    if n > 4:
        e = reference_exponent(x)
        x[: n // 4] = ((rng.integers(-1000, 1000, n // 4) + 0.5) * 2.0 ** e).astype(np.float32)
    return x


@pytest.mark.parametrize("n", SIZES)
def test_to_dfp16_matches_the_reference_on_every_isa(isa, n, rng):
    x = awkward(rng, n)
    t = dfp.to_dfp16(x)
    e = reference_exponent(x)
    assert t.exponent == e and t.mantissa.dtype == np.int16
    assert np.array_equal(t.mantissa, reference_mantissa(x, e)), f"under {isa}"
    assert np.abs(t.mantissa).max() >= 2 ** 14  # the largest value uses the top bit
    y = dfp.from_dfp16(t)
    assert np.array_equal(y, np.ldexp(t.mantissa.astype(np.float64), e).astype(np.float32))
    assert np.abs(y - x).max() <= 2.0 ** (e - 1)  # half a step of the fixed point


def test_isas_give_identical_bits(rng):
    x = awkward(rng, 4099)
    results = set()
    for level in brgemm.available_isas():
        brgemm.set_isa(level)
        try:
            t = dfp.to_dfp16(x)
            results.add((t.exponent, t.mantissa.tobytes(), dfp.from_dfp16(t).tobytes()))
        finally:
            brgemm.set_isa(None)
    assert len(results) == 1


@pytest.mark.parametrize("top, e", [(1.0, -14), (1.5, -14), (np.nextafter(np.float32(2), 0), -14), (2.0, -13),
                                    (3.0e38, 127 - 14), (2.0 ** -126, -140), (2.0 ** -149, -163),
                                    (3 * 2.0 ** -149, -162), (0.0, 0)])
def test_exponent_of_the_largest_magnitude(top, e):
    x = np.array([top / 4, -top, top / 3], np.float32)  # the maximum is negative: |f| counts
    t = dfp.to_dfp16(x)
    assert t.exponent == e
    assert np.array_equal(t.mantissa, reference_mantissa(x, e))


def test_rounding_up_to_2_15_is_clamped():
    """max|f| just below 2^(E+1): f·2^−e rounds to 32768, which int16 cannot hold."""
    x = np.array([np.nextafter(np.float32(2), 0), -np.nextafter(np.float32(2), 0)], np.float32)
    t = dfp.to_dfp16(x)
    assert t.exponent == -14 and list(t.mantissa) == [32767, -32767]


def test_explicit_exponent_clamps(rng):
    x = np.array([1.0, -100.0, 1e-6, 3.0], np.float32)
    t = dfp.to_dfp16(x, exponent=-10)
    assert t.exponent == -10
    assert np.array_equal(t.mantissa, reference_mantissa(x, -10))
    assert t.mantissa[1] == -32767


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_special_values_are_refused(bad):
    x = np.ones(40, np.float32)
    x[33] = bad
    with pytest.raises(ValueError, match="^x holds NaN or infinity"):
        dfp.to_dfp16(x)


def test_argument_errors():
    with pytest.raises(TypeError, match="^x must have dtype float32, got float64"):
        dfp.to_dfp16(np.ones(3))
    with pytest.raises(ValueError, match="^exponent must be in"):
        dfp.to_dfp16(np.ones(3, np.float32), exponent=1000)
    with pytest.raises(TypeError, match="^t must be a DFP16"):
        dfp.from_dfp16(np.ones(3, np.int16))
    with pytest.raises(ValueError, match="^a and b disagree on K"):
        dfp.matmul(np.ones((2, 3), np.float32), np.ones((4, 5), np.float32))
    with pytest.raises(ValueError, match="^a must be 2-D"):
        dfp.matmul(np.ones(3, np.float32), np.ones((3, 5), np.float32))


# --- the chunked product --------------------------------------------------------------------------


def chunk_sums_in_float32(a, b, bounds):
    """What matmul computes: each chunk's exact int sum, rounded to float32, scaled by 2^(ea+eb)
    (exact), added in float32 in chunk order."""
    scale = np.float32(2.0 ** (a.exponent + b.exponent))
    ma, mb = a.mantissa.astype(np.int64), b.mantissa.astype(np.int64)
    c = None
    for k0, k1 in zip(bounds[:-1], bounds[1:]):
        part = (ma[:, k0:k1] @ mb[k0:k1]).astype(np.float32) * scale
        c = part if c is None else part + c
    return c


@pytest.mark.parametrize("m, k, n", [(1, 1, 1), (5, 3, 7), (13, 64, 65), (97, 130, 70), (200, 33, 129)])
def test_matmul_chunks_never_overflow_and_sum_exactly(isa, m, k, n, rng):
    a = dfp.to_dfp16(rng.standard_normal((m, k), dtype=np.float32))
    b = dfp.to_dfp16(rng.standard_normal((k, n), dtype=np.float32))
    bounds = dfp.chunks(a, b)
    assert bounds[0] == 0 and bounds[-1] == k and all(x % 2 == 0 for x in bounds[:-1])
    assert all(x < y for x, y in zip(bounds[:-1], bounds[1:]))
    absa, bmax = np.abs(a.mantissa.astype(np.int64)), int(np.abs(b.mantissa.astype(np.int64)).max())
    for k0, k1 in zip(bounds[:-1], bounds[1:]):
        assert absa[:, k0:k1].sum(axis=1).max() * bmax <= S32_MAX  # no partial sum can overflow
    c = dfp.matmul(a, b)
    assert np.array_equal(c, chunk_sums_in_float32(a, b, bounds)), f"under {isa}"


def test_matmul_with_full_range_mantissas(rng):
    """Every mantissa near ±2^15: chunks of a pair, still exact per chunk."""
    a = dfp.DFP16(rng.integers(-32767, 32768, (9, 41), dtype=np.int16), -20)
    b = dfp.DFP16(np.where(rng.random((41, 17)) < 0.5, -32767, 32767).astype(np.int16), -3)
    bounds = dfp.chunks(a, b)
    assert len(bounds) > 10
    assert np.array_equal(dfp.matmul(a, b), chunk_sums_in_float32(a, b, bounds))


def test_matmul_close_to_float64(rng):
    """Each operand is within 2^(e−1) of its float value, so |Δc| ≤ Σ_k (|a|·δb + δa·|b| + δa·δb),
    plus float32 rounding of the chunk sums and their adds (K·eps·Σ|a||b|)."""
    x = rng.standard_normal((33, 300), dtype=np.float32)
    w = (rng.standard_normal((300, 40)) * 0.05).astype(np.float32)
    a, b = dfp.to_dfp16(x), dfp.to_dfp16(w)
    c = dfp.matmul(x, w)
    da, db = 2.0 ** (a.exponent - 1), 2.0 ** (b.exponent - 1)
    ax, aw = np.abs(x.astype(np.float64)), np.abs(w.astype(np.float64))
    bound = ax @ (np.ones_like(aw) * db) + (np.ones_like(ax) * da) @ aw + 300 * da * db
    bound += 300 * np.finfo(np.float32).eps * (ax @ aw)
    assert np.all(np.abs(c - x.astype(np.float64) @ w) <= bound)


def test_matmul_writes_out_and_checks_it(rng):
    x, w = rng.standard_normal((4, 6), dtype=np.float32), rng.standard_normal((6, 5), dtype=np.float32)
    out = np.empty((4, 5), np.float32)
    assert dfp.matmul(x, w, out=out) is out
    with pytest.raises(ValueError, match=r"^C must be a float32 array of shape \(4, 5\)"):
        dfp.matmul(x, w, out=np.empty((5, 4), np.float32))


@pytest.mark.parametrize("r, c", [(1, 1), (3, 70), (65, 33), (300, 129)])
def test_transpose(r, c, rng):
    t = dfp.DFP16(rng.integers(-32767, 32768, (r, c), dtype=np.int16), -7)
    tt = dfp.transpose(t)
    assert tt.exponent == -7 and np.array_equal(tt.mantissa, t.mantissa.T)
    with pytest.raises(ValueError, match=r"^out must be an int16 array of shape"):
        dfp.transpose(t, out=np.empty((r, c + 1), np.int16))


# --- slice norms (the DFP-16 convolution's overflow bounds) ---------------------------------------


def slice_norms_reference(x):
    """The one summation order of brgemm/dfp.h's dfp16_slice_norms, in float64: a lane's squares
    over the pixels in turn; a pixel's in 8 partial sums (lane l into l mod 8, in turn) added as
    ((p0+p1)+(p2+p3))+((p4+p5)+(p6+p7))."""
    sq = x.astype(np.float64) ** 2
    cols, lanes = sq.shape
    lane = np.zeros(lanes)
    for c in range(cols):
        lane = lane + sq[c]
    best = 0.0
    for c in range(cols):
        p = [0.0] * 8
        for l in range(lanes):
            p[l % 8] += sq[c, l]
        best = max(best, ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7])))
    return best, float(lane.max())


@pytest.mark.parametrize("lanes", [1, 3, 8, 13, 16, 31, 64])
def test_slice_norms_one_order_on_every_isa(isa, lanes, rng):
    """Magnitudes spread over 2^±20, so that a different summation order would round differently:
    every ISA must give the reference's sums exactly."""
    from brgemm import _core
    x = (rng.standard_normal((29, lanes)) * 2.0 ** rng.integers(-20, 21, (29, lanes))).astype(np.float32)
    assert _core.dfp16_slice_norms(x) == slice_norms_reference(x)


def test_slice_norms_errors():
    from brgemm import _core
    with pytest.raises(ValueError, match="lanes"):
        _core.dfp16_slice_norms(np.zeros((3, 65), np.float32))
    with pytest.raises(TypeError, match="x"):
        _core.dfp16_slice_norms(np.zeros((3, 4), np.float64))
