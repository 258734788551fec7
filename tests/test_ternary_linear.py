"""The ternary product (csrc/include/brgemm/ternary.h) and brgemm.nn.TernaryLinear: integer sums
exact on every ISA, every ISA bit-identical to the scalar twin, float results within a bound
derived from the float32 operations, residual levels lowered at inference, argument errors."""

import numpy as np
import pytest

import brgemm
from brgemm import _core
from brgemm.nn import Linear, TernaryLinear
from brgemm.quant import QParams, Ternary, quantize, ternarize

EPS = 2.0 ** -24


def _ternary(rng, levels, n, k, block, alpha=None):
    codes = rng.integers(-1, 2, (levels, n, k), dtype=np.int8)
    a = rng.random((levels, n, k // block), dtype=np.float32) if alpha is None else np.full((levels, n, k // block), alpha, np.float32)
    if levels > 1:
        a[1:][rng.random(a[1:].shape) < 0.5] = 0  # residual blocks only where some remain
        codes[1:][np.repeat(a[1:] == 0, block, axis=2)] = 0
    return Ternary(codes, a, (n, k), block)


@pytest.mark.parametrize("block", [64, 256])
def test_integer_sums_exact(isa, block):
    """α = 1, scale 1, zero point 0: the product is the integer one; all-255 activations against
    all +1 and all −1 codes reach the s16 lanes' largest sums (255·block/2)."""
    rng = np.random.default_rng(1)
    t = _ternary(rng, 1, 100, 512, block, alpha=1.0)
    t.codes[0, :3] = 1
    t.codes[0, 3:6] = -1
    x = rng.integers(0, 256, (3, 512), dtype=np.uint8)
    x[0] = 255
    y = TernaryLinear(t)(x)
    want = x.astype(np.int64) @ t.codes[0].astype(np.int64).T
    np.testing.assert_array_equal(y, want.astype(np.float32))
    assert y[0, 0] == 255 * 512 and y[0, 3] == -255 * 512


def test_every_isa_matches_the_twin_and_the_bound(isa):
    rng = np.random.default_rng(2)
    t = _ternary(rng, 3, 130, 320, 64)
    bias = rng.standard_normal(130).astype(np.float32)
    x = rng.integers(0, 256, (4, 320), dtype=np.uint8)
    for relu in (None, "relu"):
        layer = TernaryLinear(t, bias, relu, input_scale=0.013, input_zero_point=17)
        for r in range(3):
            layer.residuals = r
            y = layer(x)
            brgemm.set_isa("scalar")
            twin = layer(x)
            brgemm.set_isa(isa)
            np.testing.assert_array_equal(y.view(np.int32), twin.view(np.int32))
            # float64 reference; the float32 result rounds each of the L·nb fused terms, the zero
            # point's term, the scale's multiply-add: |error| ≤ (L·nb + 3)·ε·(the magnitudes' sum).
            w = t.dequantize(residuals=r).astype(np.float64)
            xf = x.astype(np.float64) - 17
            z = 0.013 * (xf @ w.T) + bias
            ref = np.maximum(z, 0) if relu else z
            mag = 0.013 * (np.abs(x.astype(np.float64)) @ np.abs(w.T) + 17 * np.abs(w).sum(axis=1)) + np.abs(bias)
            tol = (3 * t.alpha.shape[2] + 3) * EPS * mag + 1e-30
            assert np.all(np.abs(y - ref) <= tol)


def test_from_float_residuals_lowered_at_inference():
    rng = np.random.default_rng(3)
    lin = Linear(200, 96, activation="relu", seed=4)
    layer = TernaryLinear.from_float(lin, 0.02, 5, block=64, max_residuals=2, error_target=0.01)
    assert layer.ternary.levels == 3 and layer.residuals == 2
    xq = rng.integers(0, 256, (5, 200), dtype=np.uint8)
    xf = (xq.astype(np.float32) - 5) * np.float32(0.02)
    sizes = []
    for r in (2, 1, 0):
        layer.residuals = r
        sizes.append(layer.nbytes())
        want = np.maximum((xq.astype(np.float64) - 5) * 0.02 @ layer.ternary.dequantize(residuals=r).T.astype(np.float64)
                          + lin.bias, 0)
        np.testing.assert_allclose(layer(xq), want, rtol=1e-5, atol=1e-5)
        # float input: quantized with the layer's scale and zero point first
        np.testing.assert_array_equal(layer(xf), layer(quantize(xf, QParams(0.02, 5))))
    assert sizes[0] > sizes[1] > sizes[2]
    layer.residuals = 9  # at most the stored levels
    assert layer.residuals == 2
    out = np.empty((5, 96), np.float32)
    assert layer(xq, out=out) is out


def test_errors():
    rng = np.random.default_rng(5)
    t = ternarize(rng.standard_normal((8, 64)), block=64)
    with pytest.raises(ValueError, match="block"):
        TernaryLinear(ternarize(rng.standard_normal((8, 60)), block=6))
    with pytest.raises(ValueError, match="activation"):
        TernaryLinear(t, activation="tanh")
    with pytest.raises(ValueError, match="input_zero_point"):
        TernaryLinear(t, input_zero_point=300)
    with pytest.raises(TypeError, match="ternary"):
        TernaryLinear(np.zeros((8, 64)))
    layer = TernaryLinear(t)
    with pytest.raises(ValueError, match="residuals"):
        layer.residuals = -1
    with pytest.raises(ValueError, match="x must"):
        layer(np.zeros((2, 63), np.uint8))
    with pytest.raises(TypeError, match="x must"):
        layer(np.zeros((2, 64), np.int32))
    with pytest.raises(ValueError, match="out must"):
        layer(np.zeros((2, 64), np.uint8), out=np.empty((2, 7), np.float32))
    with pytest.raises(ValueError, match="codes"):
        _core.ternary_pack(np.full((1, 8, 64), 2, np.int8), np.ones((1, 8, 1), np.float32), 64)
    with pytest.raises(ValueError, match="alpha"):
        _core.ternary_pack(np.ones((1, 8, 64), np.int8), np.full((1, 8, 1), np.nan, np.float32), 64)
    with pytest.raises(ValueError, match="levels"):
        _core.ternary_gemm(np.zeros((1, 64), np.uint8), layer._packed, layer._alpha, 1, 2, 8, 64, 1.0, 0,
                           layer._corr[0], None, False, np.empty((1, 8), np.float32))


def test_ragged_input_width():
    """in_features not a whole number of blocks: the last block's codes are 0 past the width."""
    rng = np.random.default_rng(6)
    w = rng.standard_normal((40, 150)).astype(np.float32)
    t = ternarize(w, block=32, max_residuals=1)
    x = rng.integers(0, 256, (2, 150), dtype=np.uint8)
    y = TernaryLinear(t)(x)
    np.testing.assert_allclose(y, x.astype(np.float64) @ t.dequantize().T.astype(np.float64), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 7, 8, 9, 13])
def test_row_blocks_and_remainders(isa, m):
    """The AVX-512 kernels take 4 rows at a time and the rest one by one: every row count gives
    the scalar twin's bits, and the integer sums stay exact (α = 1, scale 1)."""
    rng = np.random.default_rng(10 + m)
    t = _ternary(rng, 2, 70, 128, 32)
    x = rng.integers(0, 256, (m, 128), dtype=np.uint8)
    layer = TernaryLinear(t, input_zero_point=0)
    y = layer(x)
    brgemm.set_isa("scalar")
    twin = layer(x)
    brgemm.set_isa(isa)
    np.testing.assert_array_equal(y.view(np.int32), twin.view(np.int32))
    ints = TernaryLinear(_ternary(np.random.default_rng(m), 1, 70, 128, 32, alpha=1.0))
    want = x.astype(np.int64) @ ints.ternary.codes[0].astype(np.int64).T
    np.testing.assert_array_equal(ints(x), want.astype(np.float32))


def test_rows_split_across_threads_when_panels_are_few(threads_restored):
    """One 64-column panel and many rows: the driver splits the rows among threads; the bits are
    those of one thread."""
    rng = np.random.default_rng(11)
    t = _ternary(rng, 2, 50, 512, 64)
    x = rng.integers(0, 256, (203, 512), dtype=np.uint8)
    layer = TernaryLinear(t, rng.standard_normal(50).astype(np.float32), "relu", input_scale=0.01,
                          input_zero_point=3)
    brgemm.set_num_threads(1)
    one = layer(x)
    brgemm.set_num_threads(2)
    np.testing.assert_array_equal(layer(x).view(np.int32), one.view(np.int32))
