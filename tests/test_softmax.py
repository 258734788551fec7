"""The softmax family (brgemm.nn.functional.softmax / taylor_softmax and their backward passes;
the core kernels csrc/kernels/<isa>/softmax.cpp, twin csrc/kernels/softmax_twin.h).

Every test runs on every ISA (the isa fixture; a missing level is a skip). References are
float64 from the same float32 inputs, with tolerances derived from brgemm.h's contract, in
units of u = 2^-24 (float32's unit roundoff):
- e^z: ≤ 0.89 ulp (measured over every float in [−87, 0]), so ≤ 2u relative; and z = x − max
  is rounded once, which moves e^z by |z|·u relative.
- a row sum: lanes of at most 64 float additions (then double), ≤ (min(n, 1024)/16 + 2)·u relative
  on non-negative terms; the reciprocal and the final product: u each.
- Horner in float32 (Taylor): ≤ 2(n + 2)·u·cond_n(z), cond_n = Σ|z|^k/k! / |P_n(z)|.
ISAs must agree bit for bit (NaN: where, not which NaN).
"""

import math

import ml_dtypes
import numpy as np
import pytest

import brgemm
from brgemm import _core
from brgemm.nn import functional as F
from conftest import restore_isa

BF16 = ml_dtypes.bfloat16
U = 2.0 ** -24
TINY = math.exp(-87.0)  # e^z below it (z < −87) is returned as +0
EXP_ULP = 0.89
LENGTHS = [1, 2, 15, 16, 17, 63, 64, 65, 127, 1000, 1023, 1024, 1025, 4099]


def f64(x):
    return np.asarray(x).astype(np.float64)


def sum_rel(n):
    return (min(n, 1024) / 16 + 2) * U


def exact_ref(x):
    z = f64(x)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True), z


def poly(z, order):
    return sum(z ** i / math.factorial(i) for i in range(order + 1))


def poly_cond(z, order):
    return sum(np.abs(z) ** k / math.factorial(k) for k in range(order + 1)) / np.abs(poly(z, order))


def taylor_ref(x, order):
    p = poly(f64(x), order)
    return p / p.sum(axis=-1, keepdims=True)


def same_bits(a, b):
    """Bit-identical, NaN compared by position only."""
    a, b = np.asarray(a), np.asarray(b)
    na, nb = np.isnan(f64(a)), np.isnan(f64(b))
    view = np.uint16 if a.dtype == BF16 else np.uint32
    return np.array_equal(na, nb) and np.array_equal(a.view(view)[~na], b.view(view)[~nb])


@pytest.fixture
def isa_restored():
    yield
    restore_isa()


# --- forward ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_exact_forward(isa, n, scale, rng):
    x = (rng.standard_normal((3, n)) * scale).astype(np.float32)
    y = F.softmax(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    ref, z = exact_ref(x)
    delta = (np.abs(z) + 2 * EXP_ULP) * U  # per e_j: z's rounding, then exp's error
    rel = delta + (ref * delta).sum(-1, keepdims=True) + sum_rel(n) + 2 * U
    assert np.all(np.abs(f64(y) - ref) <= ref * rel + TINY)
    np.testing.assert_allclose(f64(y).sum(-1), 1.0, rtol=0, atol=n * 4 * U + sum_rel(n))


@pytest.mark.parametrize("order", [2, 4, 6, 8, 16])
@pytest.mark.parametrize("n", [1, 15, 16, 17, 1000, 4099])
def test_taylor_forward(isa, order, n, rng):
    x = (rng.standard_normal((3, n)) * 3).astype(np.float32)
    y = F.taylor_softmax(x, order=order)
    assert y.dtype == np.float32 and y.shape == x.shape and np.all(y > 0)
    ref = taylor_ref(x, order)
    rel = 2 * (order + 2) * U * poly_cond(f64(x), order)
    bound = ref * (rel + (ref * rel).sum(-1, keepdims=True) + sum_rel(n) + 2 * U)
    assert np.all(np.abs(f64(y) - ref) <= bound)


@pytest.mark.parametrize("order", [0, 2, 8])
@pytest.mark.parametrize("n", [1, 17, 1000, 1025])
def test_bf16_is_the_f32_result_rounded(isa, order, n, rng):
    """bf16 rows are widened on load and rounded to nearest even once, on store."""
    xb = (rng.standard_normal((4, n)) * 4).astype(BF16)
    yb = _core.softmax(xb, order)
    assert yb.dtype == BF16
    assert same_bits(yb, _core.softmax(xb.astype(np.float32), order).astype(BF16))


def test_exp_accuracy(isa):
    """Rows [0, z]: y0 = 1·(1/Σ) exactly and y1 = e^z·(1/Σ) rounded once, so y1/y0 is the kernel's
    e^z within 1/2 ulp (+ the division's 1/2): ≤ EXP_ULP + 1 ulp on a dense sweep of z ≤ 0."""
    z = -np.geomspace(1e-7, 87.0, 1 << 20).astype(np.float32)
    z = np.concatenate([z, -np.linspace(0, 87.0, 1 << 20, dtype=np.float32)])
    x = np.stack([np.zeros_like(z), z], axis=1)
    y = f64(F.softmax(x))
    e = y[:, 1] / y[:, 0]
    want = np.exp(f64(z))
    ulp = np.spacing(want.astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(e - want) / ulp) <= EXP_ULP + 1.0


def test_underflow_gives_zero(isa):
    x = np.array([[0.0, -87.0, np.nextafter(np.float32(-87.0), np.float32(-100)), -100.0, -1e30, -np.inf]],
                 np.float32)
    y = F.softmax(x)
    assert np.all(y[0, 2:] == 0)  # z < −87
    assert y[0, 1] > 0 and abs(y[0, 1] / math.exp(-87.0) - 1) < 2 ** -22


# --- special values ----------------------------------------------------------------------------


def test_exact_special_values(isa):
    inf, nan = np.inf, np.nan
    x = np.array([[-inf, -inf, -inf],      # no finite maximum: NaN, as torch.softmax
                  [0.0, nan, 1.0],         # a NaN: the whole row NaN
                  [inf, 0.0, 1.0],         # +inf: NaN (inf − inf)
                  [-inf, 0.0, 0.0],        # −inf entries: 0, the rest the softmax of the others
                  [1e30, -1e30, 0.0],      # huge but finite
                  [3.4e38, 3.4e38, -3.4e38]], np.float32)
    y = F.softmax(x)
    assert np.all(np.isnan(y[:3]))
    np.testing.assert_array_equal(y[3], [0.0, 0.5, 0.5])
    np.testing.assert_array_equal(y[4], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(y[5], [0.5, 0.5, 0.0])
    yb = F.softmax(x.astype(BF16))
    assert np.all(np.isnan(f64(yb[:3])))
    np.testing.assert_array_equal(f64(yb[3]), [0.0, 0.5, 0.5])
    # the NaN rows hold the quiet NaN's bits, whatever the ISA
    assert np.all(y[:3].view(np.uint32) == 0x7FC00000) and np.all(yb[:3].view(np.uint16) == 0x7FC0)


def test_taylor_special_values(isa):
    x = np.array([[0.0, np.nan, 1.0], [np.inf, 0.0, 1.0], [1e4, -1e4, 0.0], [-3e4, -3e4, -3e4]], np.float32)
    y = F.taylor_softmax(x)
    assert np.all(np.isnan(y[0]))
    assert np.isnan(y[1, 0]) and np.all(y[1, 1:] == 0)  # Σ = inf: the inf entry inf·0, the others 0
    np.testing.assert_allclose(f64(y[2]), taylor_ref(x[2:3], 2)[0], rtol=1e-5)
    np.testing.assert_allclose(f64(y[3]), 1 / 3, rtol=1e-6)


def test_in_place(rng):
    x = rng.standard_normal((5, 33)).astype(np.float32)
    want = F.softmax(x)
    _core.softmax(x, 0, x)
    assert same_bits(x, want)


# --- every ISA gives the twin's bits -------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, BF16], ids=["f32", "bf16"])
@pytest.mark.parametrize("order", [0, 2, 4, 16])
def test_every_isa_gives_the_same_bits(dtype, order, rng, isa_restored):
    cases = []
    for n in LENGTHS + [2048, 3000]:
        x = (rng.standard_normal((3, n)) * 8).astype(dtype)
        x[1, ::5] = -np.inf
        x[2, n // 2] = np.nan
        g = rng.standard_normal((3, n)).astype(dtype)
        cases.append((x, g))
    results = {}
    for level in brgemm.available_isas():
        brgemm.set_isa(level)
        for i, (x, g) in enumerate(cases):
            y = _core.softmax(x, order)
            results.setdefault(i, []).append((level, y, _core.softmax_backward(order, x, y, g)))
    for i, per_isa in results.items():
        ref_level, ref_y, ref_g = per_isa[0]
        for level, y, gx in per_isa[1:]:
            n = cases[i][0].shape[1]
            assert same_bits(y, ref_y), f"forward n={n}: {level} differs from {ref_level}"
            assert same_bits(gx, ref_g), f"backward n={n}: {level} differs from {ref_level}"


# --- backward ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 15, 16, 17, 1000, 4099])
def test_exact_backward(isa, n, rng):
    x = (rng.standard_normal((3, n)) * 3).astype(np.float32)
    g = rng.standard_normal((3, n)).astype(np.float32)
    y = F.softmax(x)
    got = F.softmax_backward(g, y)
    yd, gd = f64(y), f64(g)
    d = (gd * yd).sum(-1, keepdims=True)
    want = yd * (gd - d)
    # d: lanes of fused multiply-adds (min(n, 1024)/16 + 2 roundings) on Σ|g·y|; g − d and the
    # product: u each.
    d_err = sum_rel(n) * (np.abs(gd * yd)).sum(-1, keepdims=True) + U * np.abs(d)
    assert np.all(np.abs(f64(got) - want) <= yd * (d_err + 2 * U * np.abs(gd - d)) + TINY)


@pytest.mark.parametrize("order", [2, 4, 8])
@pytest.mark.parametrize("n", [1, 17, 1000, 1025])
def test_taylor_backward_against_float64(isa, order, n, rng):
    x = (rng.standard_normal((3, n)) * 2).astype(np.float32)
    g = rng.standard_normal((3, n)).astype(np.float32)
    got = f64(F.taylor_softmax_backward(g, x, order=order))
    xd, gd = f64(x), f64(g)
    p, q = poly(xd, order), poly(xd, order - 1)
    s = p.sum(-1, keepdims=True)
    d = (gd * p).sum(-1, keepdims=True) / s
    want = q / s * (gd - d)
    rp = 2 * (order + 2) * U * poly_cond(xd, order)
    rq = 2 * (order + 1) * U * poly_cond(xd, order - 1)
    rs = (p * rp).sum(-1, keepdims=True) / s + sum_rel(n)
    d_err = ((np.abs(gd) * p * rp).sum(-1, keepdims=True) + sum_rel(n) * (np.abs(gd) * p).sum(-1, keepdims=True)) / s \
        + np.abs(d) * (rs + 2 * U)
    bound = np.abs(q / s) * (np.abs(gd - d) * (rq + rs + 4 * U) + d_err)
    assert np.all(np.abs(got - want) <= bound + TINY)


@pytest.mark.parametrize("order", [2, 4])
def test_taylor_backward_by_finite_differences(order, rng):
    x = rng.standard_normal((3, 6)).astype(np.float32)
    g = rng.standard_normal((3, 6)).astype(np.float32)
    got = F.taylor_softmax_backward(g, x, order=order)
    xd, h = f64(x), 1e-6
    fd = np.zeros_like(xd)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(xd)
        e[idx] = h
        fd[idx] = ((taylor_ref(xd + e, order) - taylor_ref(xd - e, order)) * g).sum() / (2 * h)
    np.testing.assert_allclose(f64(got), fd, rtol=1e-4, atol=1e-6)
    got0 = F.taylor_softmax_backward(g.T.copy(), x.T.copy(), axis=0, order=order)
    np.testing.assert_allclose(f64(got0), fd.T, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("order", [0, 2])
def test_bf16_backward_is_the_f32_one_rounded(isa, order, rng):
    xb = (rng.standard_normal((3, 77)) * 2).astype(BF16)
    gb = rng.standard_normal((3, 77)).astype(BF16)
    yb = F.softmax(xb)
    if order == 0:
        got, want = F.softmax_backward(gb, yb), F.softmax_backward(gb.astype(np.float32), yb.astype(np.float32))
    else:
        got = F.taylor_softmax_backward(gb, xb, order=order)
        want = F.taylor_softmax_backward(gb.astype(np.float32), xb.astype(np.float32), order=order)
    assert got.dtype == BF16 and same_bits(got, want.astype(BF16))


# --- properties, threads, arguments ----------------------------------------------------------------


def test_axis_and_shift(rng):
    x = (rng.standard_normal((6, 5, 4)) * 2).astype(np.float32)
    for axis in (0, 1, -1):
        want = np.moveaxis(taylor_ref(np.moveaxis(x, axis, -1), 2), -1, axis)
        np.testing.assert_allclose(f64(F.taylor_softmax(x, axis=axis)), want, rtol=2e-6)
    assert not np.allclose(F.taylor_softmax(x), F.taylor_softmax(x + 5))  # Taylor: not shift-invariant
    np.testing.assert_allclose(F.softmax(x), F.softmax(x + 5), rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, BF16], ids=["f32", "bf16"])
@pytest.mark.parametrize("order", [0, 2, 6])
@pytest.mark.parametrize("n", [1, 31, 33, 1000, 1024, 1030])
def test_backward_rows_are_independent(isa, dtype, order, n, rng):
    # the kernels run a thread's rows together (AVX-512 bf16: one row's sums in the loop of the
    # previous row's update): a row's result must be the one it has alone
    x = (rng.standard_normal((7, n)) * 2).astype(dtype)
    x[3, n // 2] = np.nan
    g = rng.standard_normal((7, n)).astype(dtype)
    y = _core.softmax(x, order)
    together = _core.softmax_backward(order, x, y, g)
    for r in range(7):
        alone = _core.softmax_backward(order, x[r:r + 1].copy(), y[r:r + 1].copy(), g[r:r + 1].copy())
        assert same_bits(together[r:r + 1], alone), f"row {r}"


@pytest.mark.parametrize("order", [0, 2])
def test_threads_agree(order, rng):
    x = (rng.standard_normal((300, 1000)) * 3).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    before = brgemm.get_num_threads()
    try:
        out = []
        for t in (1, 2, 3):
            brgemm.set_num_threads(t)
            y = _core.softmax(x, order)
            out.append((y, _core.softmax_backward(order, x, y, g)))
    finally:
        brgemm.set_num_threads(before)
    for y, gx in out[1:]:
        assert same_bits(y, out[0][0]) and same_bits(gx, out[0][1])


def test_errors():
    x = np.ones((2, 3), np.float32)
    for order in (1, 3, 0, -2):
        with pytest.raises(ValueError, match="order must be an even integer"):
            F.taylor_softmax(x, order=order)
    with pytest.raises(ValueError, match="order must be at most 16"):
        F.taylor_softmax(x, order=18)
    with pytest.raises(TypeError, match="order must be an integer"):
        F.taylor_softmax(x, order=2.0)
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        F.taylor_softmax(x, axis=2)
    with pytest.raises(TypeError, match="x must be a numpy array"):
        F.taylor_softmax([[1.0]])
    with pytest.raises(TypeError, match="x must have dtype float32 or bfloat16"):
        F.taylor_softmax(x.astype(np.float64))
    with pytest.raises(ValueError, match="at least one element"):
        F.taylor_softmax(np.ones((2, 0), np.float32))
    with pytest.raises(TypeError, match="y must have grad_y's dtype"):
        F.softmax_backward(x, x.astype(BF16))
    with pytest.raises(TypeError, match="x must have grad_y's dtype"):
        F.taylor_softmax_backward(x.astype(BF16), x)
    with pytest.raises(ValueError, match="y must have grad_y's shape"):
        F.softmax_backward(x, np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="softmax needs y"):
        _core.softmax_backward(0, x, None, x)
    with pytest.raises(ValueError, match="Taylor softmax needs x"):
        _core.softmax_backward(2, None, x, x)
    with pytest.raises(ValueError, match="order must be 0"):
        _core.softmax_backward(3, x, x, x)
    with pytest.raises(ValueError, match="grad_y must be C-contiguous"):
        _core.softmax_backward(0, None, x, np.ones((3, 2), np.float32).T)
