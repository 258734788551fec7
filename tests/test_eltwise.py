"""Element-wise functions (brgemm.nn.functional) and the epilogue activations built on them.

K-TanH is checked exhaustively: every one of the 65 536 bfloat16 bit patterns, against
float64 tanh with the documented bound, special values, oddness; float32 inputs against the
exact supremum of the error their truncation adds. Every ISA must give the scalar twin's bits
(the isa fixture forces each level; tails of every vector width included). The composites
(ksigmoid, kswish, kgelu) are checked bit for bit against their formula written in numpy
float32 on top of ktanh, the exact functions against float64 numpy/math, the backward passes
against float64 derivatives. The softmax family: tests/test_softmax.py.
"""

import math

import ml_dtypes
import numpy as np
import pytest

import brgemm
from brgemm import _core, _ktanh_fit
from brgemm.nn import functional as F
from conftest import restore_isa

BF16 = ml_dtypes.bfloat16
ALL_BITS = np.arange(1 << 16, dtype=np.uint32)
ALL_BF16_AS_F32 = (ALL_BITS << 16).view(np.float32)  # every bf16 value, exactly, as float32
KTANH_BOUND_BF16 = 0.009   # the bar; the table reaches 0.00892
ACTIVATIONS = ["relu", "tanh", "sigmoid", "gelu", "swish", "ktanh", "ksigmoid", "kgelu", "kswish", "relu6"]


def f64(x):
    return np.asarray(x).astype(np.float64)


@pytest.fixture
def isa_restored():
    yield
    restore_isa()


def special_and_random(rng, n=5003):
    """Special values, the whole K-TanH domain edges, and a spread of random values."""
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 0.25, -0.25, 0.2499, 4.0, -4.0, 3.999, 1e-40, -1e-40,
                        3.4e38, -3.4e38, 1.0, -1.0, 30.0, -30.0], np.float32)
    return np.concatenate([special, (rng.standard_normal(n) * 3).astype(np.float32)])


# --- the table ------------------------------------------------------------------------------


def test_compiled_table_is_the_derived_one():
    exp, shift, bias, worst = _ktanh_fit.fit()
    assert _core.ktanh_table() == (exp, shift, bias, _ktanh_fit.LOW_EXP, _ktanh_fit.HIGH_EXP)
    assert worst <= KTANH_BOUND_BF16


# --- K-TanH ---------------------------------------------------------------------------------


def test_ktanh_every_bf16_input(isa):
    with np.errstate(invalid="ignore"):
        x = ALL_BF16_AS_F32.astype(BF16)
    y = F.ktanh(x)
    assert y.dtype == BF16 and y.shape == x.shape
    yf, xf = f64(y), f64(x)
    finite = np.isfinite(xf)
    err = np.abs(yf[finite] - np.tanh(xf[finite]))
    assert err.max() <= KTANH_BOUND_BF16, f"max error {err.max()} at x = {xf[finite][err.argmax()]}"
    assert np.array_equal(np.isnan(yf), np.isnan(xf))                  # NaN in, NaN out, nothing else
    np.testing.assert_array_equal(yf[np.isinf(xf)], np.sign(xf[np.isinf(xf)]))  # ±inf → ±1
    zero = xf == 0
    np.testing.assert_array_equal(np.signbit(yf[zero]), np.signbit(xf[zero]))  # ±0 → ±0
    assert np.all(np.abs(yf[finite]) <= 1.0)


def test_ktanh_is_odd_and_nearly_monotone():
    pos = ALL_BITS[:0x7F81]  # +0 … +inf
    y = F.ktanh(((pos << 16).view(np.float32)).astype(BF16)).view(np.uint16)
    yn = F.ktanh((((pos | 0x8000) << 16).view(np.float32)).astype(BF16)).view(np.uint16)
    np.testing.assert_array_equal(yn, y | 0x8000)
    # Each interval's entry is fitted on its own, so at a few interval edges the next value
    # steps back a little (documented: 7 places, by at most 0.0079).
    steps = np.diff(f64(y.view(BF16)))
    assert np.count_nonzero(steps < 0) == 7 and steps.min() >= -0.0079


def test_ktanh_float32_is_ktanh_of_the_truncated_value(isa, rng):
    """f32 inputs are truncated to bf16: the result equals the bf16 path on the truncation,
    and the error stays within the exact supremum over each bf16 step (0.0118)."""
    low = rng.integers(0, 1 << 16, ALL_BITS.size, dtype=np.uint32)
    x = ((ALL_BITS << 16) | low).view(np.float32)
    finite = np.isfinite(x)
    x = x[finite]
    truncated = ((x.view(np.uint32) >> 16).astype(np.uint16)).view(BF16)
    y = F.ktanh(x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, F.ktanh(truncated).astype(np.float32))
    assert np.abs(f64(y) - np.tanh(f64(x))).max() <= 0.0118


def test_ktanh_float32_supremum_over_bf16_steps():
    b = ALL_BITS[:0x7F80]
    lo, hi = (b << 16).view(np.float32), ((b + 1) << 16).view(np.float32)
    y = f64(F.ktanh(lo))
    sup = np.maximum(np.abs(y - np.tanh(f64(lo))), np.abs(y - np.tanh(f64(hi)))).max()
    assert 0.0117 < sup <= 0.0118  # the figure the documentation gives


def test_float32_nan_payloads_stay_nan():
    # A NaN whose payload lies only in the low 16 bits would truncate to infinity.
    x = np.array([0x7F800001, 0xFF800001, 0x7FC00000], np.uint32).view(np.float32)
    for name in ("ktanh", "ksigmoid", "kgelu", "kswish"):
        assert np.all(np.isnan(F.activation(x, name)))


# --- every ISA gives the twin's bits ----------------------------------------------------------


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float32, BF16], ids=["f32", "bf16"])
def test_every_isa_gives_the_same_bits(name, dtype, rng, isa_restored):
    x = special_and_random(rng).astype(dtype)
    results = {}
    for level in brgemm.available_isas():
        brgemm.set_isa(level)
        for n in (x.size, 1, 7, 8, 9, 15, 16, 17, 33):  # every vector tail
            results.setdefault(n, []).append((level, F.activation(x[:n], name)))
    for n, per_isa in results.items():
        ref_level, ref = per_isa[0]
        for level, got in per_isa[1:]:
            assert np.array_equal(got.view(np.uint16 if dtype == BF16 else np.uint32),
                                  ref.view(np.uint16 if dtype == BF16 else np.uint32)), \
                f"{name} n={n}: {level} differs from {ref_level}"


# --- composites and exact functions -------------------------------------------------------------


def test_composites_are_their_formula(isa, rng):
    """ksigmoid, kswish, kgelu as brgemm.h writes them, in numpy float32 on brgemm's ktanh."""
    x = special_and_random(rng)
    f = np.float32
    with np.errstate(all="ignore"):
        ks = (f(1) + F.ktanh(x * f(0.5))) * f(0.5)
        inner = f(0.7978845608028654) * (x + f(0.044715) * ((x * x) * x))
        kg = (x * f(0.5)) * (f(1) + F.ktanh(inner.astype(np.float32)))
        for got, want in ((F.ksigmoid(x), ks), (F.kswish(x), x * ks), (F.kgelu(x), kg)):
            np.testing.assert_array_equal(got, want)


def test_composite_accuracy(rng):
    x = np.linspace(-8, 8, 100001).astype(np.float32)
    xd = f64(x)
    sig = 1 / (1 + np.exp(-xd))
    gelu_tanh = 0.5 * xd * (1 + np.tanh(np.sqrt(2 / np.pi) * (xd + 0.044715 * xd ** 3)))
    assert np.abs(f64(F.ksigmoid(x)) - sig).max() <= 0.0118 / 2 + 1e-7  # half of tanh's, truncation included
    assert np.abs(f64(F.kswish(x)) - xd * sig).max() <= 8 * 0.0118 / 2 + 1e-6
    assert np.abs(f64(F.kgelu(x)) - gelu_tanh).max() <= 8 * 0.0118 / 2 + 1e-6


def test_exact_functions(isa, rng):
    x = (rng.standard_normal(4099) * 4).astype(np.float32)
    xd = f64(x)
    sig = 1 / (1 + np.exp(-xd))
    erfc = np.vectorize(math.erfc)  # Φ(x) = erfc(−x/√2)/2: no cancellation on the negative side
    for name, want in (("tanh", np.tanh(xd)), ("sigmoid", sig), ("swish", xd * sig),
                       ("gelu", 0.5 * xd * erfc(-xd / np.sqrt(2))), ("relu", np.maximum(xd, 0)),
                       ("relu6", np.clip(xd, 0, 6))):
        got = f64(F.activation(x, name))
        np.testing.assert_allclose(got, want, rtol=4e-7, atol=1e-37, err_msg=name)


def test_bf16_output_is_the_f32_result_rounded(rng):
    x = special_and_random(rng).astype(BF16)
    for name in ACTIVATIONS:
        want = F.activation(x.astype(np.float32), name).astype(BF16)
        np.testing.assert_array_equal(F.activation(x, name).view(np.uint16), want.view(np.uint16), err_msg=name)


# --- backward -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_backward(name, rng):
    x = (rng.standard_normal(3001) * 3).astype(np.float32)
    x[np.abs(x) < 1e-3] = 0.5  # relu's kink
    x[np.abs(x - 6) < 1e-3] = 5.5  # relu6's
    g = rng.standard_normal(x.size).astype(np.float32)
    y = F.activation(x, name)
    got = F.activation_backward(name, g, x=x, y=y)
    xd, yd, gd = f64(x), f64(y), f64(g)
    if name in ("tanh", "ktanh"):
        want = gd * (1 - yd * yd)
    elif name in ("sigmoid", "ksigmoid"):
        want = gd * yd * (1 - yd)
    elif name == "relu":
        want = gd * (xd > 0)
    elif name == "relu6":
        want = gd * ((xd > 0) & (xd < 6))
    else:  # derivative of the function itself, in float64 (k-versions: of their formula with ktanh's output)
        h = 1e-3
        if name.startswith("k"):
            # d/dx of the formula, with the tanh part's derivative taken as 1 − t² (as brgemm.h).
            if name == "kgelu":
                c = np.sqrt(2 / np.pi)
                t = f64(F.ktanh((c * (xd + 0.044715 * xd ** 3)).astype(np.float32)))
                want = gd * (0.5 * (1 + t) + 0.5 * xd * (1 - t * t) * c * (1 + 3 * 0.044715 * xd * xd))
            else:
                s = f64(F.ksigmoid(x))
                want = gd * (s + xd * s * (1 - s))
        else:
            fd = (f64(F.activation((xd + h).astype(np.float32), name)) -
                  f64(F.activation((xd - h).astype(np.float32), name))) / (f64((xd + h).astype(np.float32)) -
                                                                          f64((xd - h).astype(np.float32)))
            want = gd * fd
    tol = 2e-3 if name in ("gelu", "swish") else 1e-5  # finite differences in float32
    np.testing.assert_allclose(f64(got), want, rtol=tol, atol=tol)


def test_backward_errors():
    g = np.ones(4, np.float32)
    with pytest.raises(ValueError, match="needs x"):
        F.activation_backward("gelu", g, y=g)
    with pytest.raises(ValueError, match="needs y"):
        F.activation_backward("tanh", g, x=g)
    with pytest.raises(ValueError, match="must have grad_y's shape"):
        F.activation_backward("tanh", g, y=np.ones(5, np.float32))
    with pytest.raises(ValueError, match="name must be one of"):
        F.activation_backward("elu", g, y=g)


# --- calling conventions ------------------------------------------------------------------------


def test_out_in_place_and_errors(rng):
    x = rng.standard_normal((3, 70)).astype(np.float32)
    want = F.ktanh(x)
    y = x.copy()
    assert F.ktanh(y, out=y) is not None
    np.testing.assert_array_equal(y, want)
    out = np.empty_like(x)
    F.ktanh(x, out=out)
    np.testing.assert_array_equal(out, want)
    with pytest.raises(TypeError, match="out must have dtype float32"):
        F.ktanh(x, out=np.empty((3, 70), np.float64))
    with pytest.raises(ValueError, match="out must have shape"):
        F.ktanh(x, out=np.empty((70, 3), np.float32))
    big = np.zeros(100, np.float32)
    with pytest.raises(ValueError, match="partly overlaps"):
        F.ktanh(big[:60], out=big[10:70])
    with pytest.raises(TypeError, match="x must have dtype float32 or bfloat16"):
        F.ktanh(np.ones(4, np.float64))
    with pytest.raises(TypeError, match="x must be a numpy array"):
        F.ktanh([1.0, 2.0])
    with pytest.raises(ValueError, match="x must be C-contiguous"):
        F.ktanh(x[:, ::2])
    with pytest.raises(ValueError, match="name must be one of"):
        F.activation(x, "elu")
    assert F.ktanh(np.ones((0, 3), np.float32)).shape == (0, 3)


def test_large_arrays_use_threads_and_agree(rng):
    x = (rng.standard_normal(1 << 20) * 3).astype(np.float32)
    old = brgemm.get_num_threads()
    try:
        brgemm.set_num_threads(1)
        one = F.kgelu(x)
        brgemm.set_num_threads(2)
        np.testing.assert_array_equal(F.kgelu(x), one)
    finally:
        brgemm.set_num_threads(old)


# --- epilogue activations -------------------------------------------------------------------


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_gemm_epilogue_activation_is_the_function(isa, name, rng):
    """The epilogue applies the same function to acc + bias as brgemm.nn.functional does."""
    A = rng.standard_normal((37, 50)).astype(np.float32)
    B = rng.standard_normal((50, 45)).astype(np.float32)
    bias = rng.standard_normal(45).astype(np.float32)
    acc = brgemm.gemm(A, B)
    got = brgemm.gemm(A, B, epilogue=brgemm.Epilogue(bias=bias, activation=name))
    np.testing.assert_array_equal(got, F.activation(acc + bias, name))
    got16 = brgemm.gemm(A, B, epilogue=brgemm.Epilogue(bias=bias, activation=name, out_dtype="bfloat16"))
    want = F.activation(acc + bias, name)
    # An epilogue's bf16 store gives a zero of the sign for a subnormal (vcvtneps2bf16's rule; gelu
    # of a large negative value is one), otherwise ml_dtypes' rounding.
    want = np.where((want.view(np.uint32) & 0x7F800000) == 0, np.copysign(np.float32(0), want), want)
    np.testing.assert_array_equal(got16.view(np.uint16), want.astype(BF16).view(np.uint16))


def test_int8_epilogue_activation(isa, rng):
    A = rng.integers(0, 256, (9, 40)).astype(np.uint8)
    B = rng.integers(-128, 128, (40, 21)).astype(np.int8)
    exact = (A.astype(np.int64) @ B.astype(np.int64)).astype(np.float32)
    got = brgemm.gemm(A, brgemm.pack_b(B, "u8s8"), epilogue=brgemm.Epilogue(out_dtype="float32", scale=1e-3,
                                                                            activation="ktanh"))
    np.testing.assert_array_equal(got, F.ktanh(exact * np.float32(1e-3)))


def test_epilogue_rejects_unknown_activation():
    with pytest.raises(ValueError, match="activation must be None or one of relu"):
        brgemm.Epilogue(activation="elu")


@pytest.mark.parametrize("size", [1, 7, 8, 15, 16, 17, 33, 105])
def test_bf16_conversions_round_to_nearest_even_on_every_isa(isa, rng, size):
    """f32 → bf16 (the conversion of blocked layouts, bf16 layers' activations and the RNNs'
    states) and back, through to_blocked, against ml_dtypes' rounding: ties to even, ±0, ±inf,
    subnormals, the largest values that round to inf; NaN stays NaN (quieted)."""
    from brgemm import layout
    special = np.array([0.0, -0.0, np.inf, -np.inf, 1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8, 1e-40, -1e-45,
                        3.4e38, np.finfo(np.float32).max, 1.00390625, np.nan], np.float32)
    x = rng.standard_normal((1, 1, 1, size)).astype(np.float32) * 10.0 ** rng.integers(-30, 30, size)
    x.flat[:min(size, special.size)] = special[:size]
    got = layout.to_blocked(x, dtype=ml_dtypes.bfloat16)[0, 0, 0, :, 0]
    want = x.ravel().astype(ml_dtypes.bfloat16)
    nan = np.isnan(want.astype(np.float32))
    assert np.array_equal(np.isnan(got.astype(np.float32)), nan)
    assert np.array_equal(got[~nan].view(np.uint16), want[~nan].view(np.uint16))
    back = layout.to_blocked(got.reshape(1, 1, 1, size), dtype=np.float32)[0, 0, 0, :, 0]
    assert np.array_equal(back.view(np.uint32), (got.view(np.uint16).astype(np.uint32) << 16))
