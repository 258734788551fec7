"""brgemm.nn.TernaryConv2d (8-bit activations × ternary weights with residual levels, the ternary
product of csrc/include/brgemm/ternary.h on the input's windows), the spellings that build the
ternary layers (``from_float(..., weights="ternary")``, ``quantize_model(..., weights="ternary")``)
and lowering the residual levels of a whole model at inference time."""

import numpy as np
import pytest

import brgemm
from brgemm import quant
from brgemm.nn import (Conv2d, Flatten, Linear, QuantizedConv2d, QuantizedLinear, Sequential, TernaryConv2d,
                       TernaryLinear)
from brgemm.quant import QParams, quantize, ternarize

EPS = 2.0 ** -24


def conv_reference(x, w, stride, padding, dilation):
    """float64 direct convolution of x (N, C, H, W) with w (K, C, R, S); padding (t, b, l, r)
    adds real zeros."""
    n, c, h, wd = x.shape
    k, _, r, s = w.shape
    (pt, pb, pl, pr), (sh, sw), (dh, dw) = padding, stride, dilation
    xp = np.zeros((n, c, h + pt + pb, wd + pl + pr))
    xp[:, :, pt:pt + h, pl:pl + wd] = x
    oh = (h + pt + pb - dh * (r - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (s - 1) - 1) // sw + 1
    y = np.zeros((n, k, oh, ow))
    for i in range(r):
        for j in range(s):
            patch = xp[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]
            y += np.einsum("nchw,kc->nkhw", patch, w[:, :, i, j])
    return y


GEOMETRIES = [  # (C, K, R×S, stride, padding, dilation, H, W): remainders of the 64-column panel,
    (3, 5, 3, 1, 1, 1, 7, 6),        # ragged last block (C·R·S = 27), 1×1 and strided cases
    (16, 70, 3, 2, 1, 1, 9, 9),
    (8, 64, 1, 1, 0, 1, 5, 4),
    (5, 9, (3, 2), (1, 2), (2, 0), 2, 8, 9),
]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "c{}k{}".format(*g[:2]))
def test_matches_the_float64_reference_on_every_isa(isa, geometry):
    """Every ISA: bit-identical to the scalar twin and within the float32 rounding bound of the
    float64 convolution with the dequantized ternary weight, for each number of residual levels."""
    c, k, rs, stride, padding, dilation, h, w = geometry
    rng = np.random.default_rng(c * 100 + k)
    kernel = (rs, rs) if isinstance(rs, int) else rs
    weight = rng.standard_normal((k,) + kernel + (c,)).astype(np.float32)  # channels last
    t = ternarize(weight, block=8, max_residuals=2, error_target=0.01)
    bias = rng.standard_normal(k).astype(np.float32)
    x = rng.integers(0, 256, (2, c, h, w), dtype=np.uint8)
    for act in (None, "relu"):
        layer = TernaryConv2d(t, bias, act, stride=stride, padding=padding, dilation=dilation,
                              input_scale=0.02, input_zero_point=9)
        for r in range(t.levels):
            layer.residuals = r
            y = layer(x)
            brgemm.set_isa("scalar")
            twin = layer(x)
            brgemm.set_isa(isa)
            np.testing.assert_array_equal(y.view(np.int32), twin.view(np.int32))
            wd = t.dequantize(residuals=r).astype(np.float64).transpose(0, 3, 1, 2)
            geo = layer.geometry
            z = 0.02 * conv_reference(x.astype(np.float64) - 9, wd, geo.stride, geo.padding, geo.dilation)
            z += bias[None, :, None, None]
            ref = np.maximum(z, 0) if act else z
            assert y.shape == ref.shape and y.dtype == np.float32
            # float32 rounds each of the L·nb fused block terms, the zero point's term and the
            # scale's multiply-add: |error| ≤ (L·nb + 3)·ε·Σ|terms|; the int32 block sums are exact.
            mag = 0.02 * conv_reference(x.astype(np.float64) + 9, np.abs(wd), geo.stride, geo.padding, geo.dilation)
            mag += np.abs(bias)[None, :, None, None]
            tol = (t.levels * t.alpha.shape[2] + 3) * EPS * mag + 1e-30
            assert np.all(np.abs(y - ref) <= tol)


def test_integer_sums_exact_with_padding_as_the_zero_point(isa):
    """α = 1, scale 1: the output is the exact integer convolution of x_q − zero_point (the padded
    border contributes 0), all-255 inputs against all-+1 codes reach 255·C·R·S."""
    rng = np.random.default_rng(7)
    k, c = 4, 32
    codes = rng.integers(-1, 2, (1, k, 9 * c), dtype=np.int8)
    codes[0, 0] = 1
    t = quant.Ternary(codes, np.ones((1, k, 9 * c // 16), np.float32), (k, 3, 3, c), 16)
    x = rng.integers(0, 256, (1, c, 5, 5), dtype=np.uint8)
    x[:, :, 1:4, 1:4] = 255
    layer = TernaryConv2d(t, padding=1, input_zero_point=3)
    y = layer(x)
    want = conv_reference(x.astype(np.int64) - 3, codes[0].reshape(k, 3, 3, c).transpose(0, 3, 1, 2).astype(np.int64),
                          (1, 1), (1, 1, 1, 1), (1, 1))
    np.testing.assert_array_equal(y, want.astype(np.float32))
    assert y[0, 0, 2, 2] == 252 * c * 9


def test_from_float_spellings_and_uint8_output():
    rng = np.random.default_rng(8)
    conv = Conv2d(4, 12, 3, stride=2, padding=1, activation="relu", seed=3)
    q = QuantizedConv2d.from_float(conv, 0.02, 4, 0.05, 7, weights="ternary", block=12, max_residuals=2,
                                   error_target=0.01, residuals=1)
    assert isinstance(q, TernaryConv2d) and q.out_dtype == "uint8" and q.residuals == 1 and q.ternary.levels == 3
    assert isinstance(QuantizedConv2d.from_float(conv, 0.02), QuantizedConv2d)  # int8 stays the default
    # blocks over each tap's channels: the channels-last weight's ternarization
    want = ternarize(conv.weight.transpose(0, 2, 3, 1), block=12, max_residuals=2, error_target=0.01)
    np.testing.assert_array_equal(q.ternary.codes, want.codes)
    assert q.ternary.shape == (12, 3, 3, 4)
    same = TernaryConv2d.from_float(conv, 0.02, 4, block=12, max_residuals=2, error_target=0.01, residuals=1)
    x = rng.integers(0, 256, (3, 4, 9, 8), dtype=np.uint8)
    np.testing.assert_array_equal(q(x), quantize(same(x), QParams(0.05, 7)))
    xf = (x.astype(np.float32) - 4) * np.float32(0.02)
    np.testing.assert_array_equal(q(xf), q(x))  # float32 input: quantized with the layer's parameters first
    out = np.empty((3, 12, 5, 4), np.uint8)
    assert q(x, out=out) is out
    lin = Linear(50, 7, seed=1)
    ql = QuantizedLinear.from_float(lin, 0.1, weights="ternary", block=16)
    assert isinstance(ql, TernaryLinear) and ql.out_dtype == "float32" and ql.ternary.block == 16


def test_errors_name_the_argument():
    conv = Conv2d(4, 8, 3, seed=1)
    with pytest.raises(ValueError, match="weights"):
        QuantizedConv2d.from_float(conv, 0.1, weights="binary")
    with pytest.raises(ValueError, match="block"):
        QuantizedConv2d.from_float(conv, 0.1, block=8)  # int8 weights have no blocks
    with pytest.raises(TypeError, match="blok"):
        QuantizedConv2d.from_float(conv, 0.1, weights="ternary", blok=8)
    with pytest.raises(ValueError, match="outlier_fraction"):
        QuantizedLinear.from_float(Linear(8, 4), 0.1, weights="ternary", outlier_fraction=0.01)
    with pytest.raises(ValueError, match="groups"):
        TernaryConv2d.from_float(Conv2d(4, 8, 3, groups=2), 0.1)
    with pytest.raises(TypeError, match="conv"):
        TernaryConv2d.from_float(Linear(8, 4), 0.1)
    with pytest.raises(ValueError, match="block"):
        TernaryConv2d.from_float(conv, 0.1, block=6)
    with pytest.raises(ValueError, match="4-D"):
        TernaryConv2d(ternarize(np.ones((8, 36)), block=4))
    with pytest.raises(ValueError, match="output_scale"):
        TernaryConv2d.from_float(conv, 0.1, output_scale=-1.0)
    with pytest.raises(TypeError, match="output_scale"):
        TernaryConv2d.from_float(conv, 0.1, output_scale="big")
    with pytest.raises(ValueError, match="out_dtype"):
        TernaryConv2d.from_float(conv, 0.1, out_dtype="uint8")
    layer = TernaryConv2d.from_float(conv, 0.1, block=4)
    with pytest.raises(ValueError, match="x must"):
        layer(np.zeros((1, 3, 5, 5), np.uint8))
    with pytest.raises(TypeError, match="x must"):
        layer(np.zeros((1, 4, 5, 5), np.int16))
    with pytest.raises(ValueError, match="kernel|fit"):
        layer(np.zeros((1, 4, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="out must"):
        layer(np.zeros((1, 4, 5, 5), np.uint8), out=np.empty((1, 8, 3, 4), np.float32))
    with pytest.raises(ValueError, match="residuals"):
        layer.residuals = -1


def test_quantize_model_ternary_and_set_residuals():
    """quantize_model(..., weights="ternary"): the same calibration and uint8 hand-over as int8,
    ternary layers; set_residuals lowers every layer's levels, and each level's model equals the
    layers run one by one with the dequantized weights' float64 product, up to one uint8 step."""
    rng = np.random.default_rng(9)
    model = Sequential(Conv2d(2, 6, 3, padding=1, activation="relu", seed=1), Flatten(),
                       Linear(6 * 16, 12, activation="relu", seed=2), Linear(12, 3, seed=3))
    cal = [rng.uniform(0, 1, (8, 2, 4, 4)).astype(np.float32) for _ in range(3)]
    q, report = quant.quantize_model(model, cal, method="minmax", weights="ternary", block=8, max_residuals=2,
                                     error_target=0.0)
    assert isinstance(q[0], TernaryConv2d) and q[0].out_dtype == "uint8"
    assert isinstance(q[2], TernaryLinear) and q[2].out_dtype == "uint8" and q[3].out_dtype == "float32"
    assert (q[0].output_scale, q[0].output_zero_point) == (q[2].input_scale, q[2].input_zero_point)
    assert [len(r["blocks"]) for r in report] == [3, 3, 3] and all(r["sqnr_db"] > 0 for r in report)
    ref = model(cal[0])
    errs = []
    for r in (2, 1, 0):
        assert quant.set_residuals(q, r) == 3 and all(q[i].residuals == r for i in (0, 2, 3))
        errs.append(np.abs(q(cal[0]) - ref).max())
    assert errs[0] < errs[2]  # the residual levels buy accuracy back
    assert errs[0] <= 0.1 * np.abs(ref).max()
    with pytest.raises(ValueError, match="weights"):
        quant.quantize_model(model, cal, weights="int4")
    with pytest.raises(ValueError, match="per_channel"):
        quant.quantize_model(model, cal, weights="ternary", per_channel=False)
    with pytest.raises(ValueError, match="block"):
        quant.quantize_model(model, cal, block=8)
    with pytest.raises(ValueError, match="ternary layers"):
        quant.set_residuals(model, 1)
    with pytest.raises(ValueError, match="residuals"):
        quant.set_residuals(q, -1)
