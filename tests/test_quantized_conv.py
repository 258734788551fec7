"""brgemm.nn.QuantizedConv2d: int8 inference exact against an integer reference (int64 sums,
then the epilogue's float32 steps in the same order) over the odd shapes of test_conv.py,
every ISA, both output types, with and without zero points; the quantization of float weights
within its derived bound; uint8 chains, in-place changes, errors.
"""

import numpy as np
import pytest

from brgemm import _core, layout
from brgemm.nn import Conv2d, QuantizedConv2d, functional, quantize_per_channel
from test_conv import CASES, IDS, _taps

F32 = np.float32


def make(case, seed=0, activation=None, bias=True, **quant):
    """A layer for case with random int8 weights, scales and bias from seed, and an input."""
    rng = np.random.default_rng(seed)
    c, k, h, w, kernel, stride, padding, dilation = case
    q = QuantizedConv2d(c, k, kernel, stride, padding, dilation, bias=bias, activation=activation, **quant)
    r, s = q.kernel_size
    q.weight = rng.integers(-127, 128, (k, c, r, s)).astype(np.int8)
    q.weight_scale = rng.uniform(1e-3, 1e-2, k).astype(F32)
    if bias:
        q.bias = rng.standard_normal(k).astype(F32)
    x = rng.integers(0, 256, (2, c, h, w)).astype(np.uint8)
    return q, x


def int_sums(x_q, q):
    """Σ (x_q − input_zero_point)·w_q in int64, padding a real zero."""
    n, _, h, w = x_q.shape
    oh, ow = q.output_size(h, w)
    x = x_q.astype(np.int64) - q.input_zero_point
    acc = np.zeros((n, q.out_channels, oh, ow), np.int64)
    for r, s, patch in _taps(x, q, oh, ow):
        acc += np.einsum("nchw,kc->nkhw", patch, q.weight[:, :, r, s].astype(np.int64))
    return acc


def epilogue(acc, q):
    """The epilogue's float32 steps: one rounding of the sum, × (input_scale·weight_scale),
    + bias, activation, then requantized when the output is uint8. With no activation or ReLU
    the uint8 output folds 1/output_scale into the scale and the bias (one multiply-add, as
    fbgemm requantizes)."""
    scale = F32(q.input_scale) * q.weight_scale
    bias = q.bias if q.bias is not None else np.zeros(q.out_channels, F32)
    fold = q.out_dtype == "uint8" and q.activation in (None, "relu")
    if fold:
        scale, bias = scale / F32(q.output_scale), bias / F32(q.output_scale)
    v = acc.astype(F32) * scale[None, :, None, None]
    if q.bias is not None:
        v = v + bias[None, :, None, None]
    if q.activation == "relu":
        v = np.maximum(v, F32(0))
    elif q.activation is not None:  # the activations' own functions: the epilogue's bits
        v = functional.activation(np.ascontiguousarray(v), q.activation)
    if q.out_dtype == "float32":
        return v
    if not fold:
        v = v / F32(q.output_scale)
    return np.clip(np.rint(v) + q.output_zero_point, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_int8_conv_is_exact(isa, rng, case):
    assert 2 * 255 * 127 * case[0] * 49 < 2 ** 31  # the reference's sums fit the kernel's int32
    for x_zero in (0, 7):
        acc = None
        for act in (None, "relu", "gelu"):  # gelu: requantized by division, not folded
            for out in ("float32", "uint8"):
                q, x = make(case, 1, act, input_scale=0.05, input_zero_point=x_zero, output_scale=0.03,
                            output_zero_point=11, out_dtype=out)
                acc = int_sums(x, q) if acc is None else acc
                got, want = q(x), epilogue(acc, q)
                assert got.dtype == want.dtype and got.shape == want.shape
                np.testing.assert_array_equal(got, want, err_msg=f"x_zero={x_zero} act={act} out={out}")


def test_padding_is_a_real_zero_with_a_zero_point(rng):
    """A constant input at the zero point is real zero: every output, border or not, is the bias."""
    q, _ = make((16, 16, 6, 6, 3, 1, 2, 1), input_scale=0.1, input_zero_point=200)
    y = q(np.full((1, 16, 6, 6), 200, np.uint8))
    np.testing.assert_array_equal(y, np.broadcast_to(q.bias[None, :, None, None], y.shape))


def test_float_input_is_quantized_on_the_way_in(rng):
    q, _ = make(CASES[1], input_scale=0.02, input_zero_point=128)
    x = rng.standard_normal((2, q.in_channels, 13, 13)).astype(F32) * 2
    x[0, 0, 0, :3] = [300.0, -300.0, np.nan]                    # saturation both ways; NaN → 0
    x_q = np.clip(np.rint(x / F32(0.02)) + 128, 0, 255)
    x_q = np.where(np.isnan(x_q), 0, x_q).astype(np.uint8)
    np.testing.assert_array_equal(q(x), q(x_q))
    xb = np.empty((2, -(-q.in_channels // q.bc), 13, 13, q.bc), np.uint8)
    _core.conv_to_blocked(x, xb, scale=0.02, zero_point=128)
    np.testing.assert_array_equal(layout.from_blocked(xb, q.in_channels), x_q)


def test_from_float_is_within_the_weight_rounding_bound(rng):
    """y_int8 − y_float(dequantized x) comes only from rounding W: |w − s_k·w_q| ≤ s_k/2, so the
    error is at most (s_k/2)·Σ|x| over the receptive field (+ a few float32 roundings)."""
    conv = Conv2d(24, 40, 3, stride=2, padding=1, activation=None, seed=3)
    xs, xz = 0.04, 100
    q = QuantizedConv2d.from_float(conv, input_scale=xs, input_zero_point=xz)
    x_q = rng.integers(0, 256, (2, 24, 11, 11)).astype(np.uint8)
    x = (x_q.astype(np.float64) - xz) * xs
    n, _, h, w = x.shape
    oh, ow = conv.output_size(h, w)
    ref = np.zeros((n, 40, oh, ow))
    absx = np.zeros((n, 1, oh, ow))
    for r, s, patch in _taps(x, conv, oh, ow):
        ref += np.einsum("nchw,kc->nkhw", patch, conv.weight[:, :, r, s].astype(np.float64))
        absx += np.abs(patch).sum(axis=1, keepdims=True)
    ref += conv.bias[None, :, None, None]
    w_q, scale = quantize_per_channel(conv.weight)
    np.testing.assert_array_equal(q.weight, w_q)
    assert np.abs(w_q).max() == 127 and np.all(np.abs(conv.weight - scale[:, None, None, None] * w_q)
                                               <= scale[:, None, None, None] / 2 * (1 + 1e-6))
    bound = scale[None, :, None, None] / 2 * absx * (1 + 1e-5) + 1e-5 * (np.abs(ref) + 1)
    err = np.abs(q(x_q).astype(np.float64) - ref)
    assert np.all(err <= bound), f"max excess {np.max(err - bound)}"
    assert err.max() > 0  # the bound is not vacuous: rounding W does change y
    # a float Conv2d on the dequantized x agrees to the same bound
    np.testing.assert_array_less(np.abs(conv(x.astype(F32)) - ref), 1e-4 * (np.abs(ref) + 1))


def test_uint8_chain_stays_blocked(rng):
    a, x = make((20, 36, 9, 9, 3, 1, 1, 1), 2, activation="relu", input_scale=0.05, input_zero_point=3,
                output_scale=0.5, output_zero_point=0)
    b, _ = make((36, 10, 9, 9, 3, 2, 1, 1), 3, input_scale=0.5, input_zero_point=0)
    assert a.out_dtype == "uint8" and b.out_dtype == "float32"
    plain = b(a(x))
    xb = layout.to_blocked(x)
    assert xb.dtype == np.uint8 and xb.shape[-1] == a.bc
    yb = a(xb)
    assert yb.dtype == np.uint8 and yb.ndim == 5 and yb.shape[-1] == b.bc
    zb = b(yb)
    np.testing.assert_array_equal(layout.from_blocked(zb, b.out_channels), plain)
    out = np.empty_like(plain)
    assert b(a(x), out=out) is out
    np.testing.assert_array_equal(out, plain)


def test_changes_take_effect(rng):
    q, x = make(CASES[0], input_scale=0.05, output_scale=0.1)
    y0 = q(x)
    q.weight[0] = -q.weight[0]                 # in place
    y1 = q(x)
    assert not np.array_equal(y0[:, 0], y1[:, 0])
    np.testing.assert_array_equal(y1, epilogue(int_sums(x, q), q))
    q.weight_scale[1] *= 2                      # in place
    q.input_zero_point = 9
    q.output_zero_point = 4
    np.testing.assert_array_equal(q(x), epilogue(int_sums(x, q), q))


def test_no_bias_and_repr(rng):
    q, x = make(CASES[1], bias=False, input_scale=0.05)
    assert q.bias is None
    np.testing.assert_array_equal(q(x), epilogue(int_sums(x, q), q))
    assert "QuantizedConv2d(17, 33" in repr(q) and "out_dtype='float32'" in repr(q)


def test_errors_name_the_argument(rng):
    q, x = make(CASES[0], input_scale=0.05, output_scale=0.1)
    with pytest.raises(ValueError, match="x has 4 channels"):
        q(np.zeros((1, 4, 5, 5), np.uint8))
    with pytest.raises(TypeError, match="x must have dtype uint8 or float32"):
        q(x.astype(np.int8))
    with pytest.raises(TypeError, match="blocked float32; this layer takes blocked uint8"):
        q(layout.to_blocked(x.astype(F32)))
    with pytest.raises(ValueError, match="blocks of 3"):
        q(np.zeros((1, 1, 5, 5, 8), np.uint8))
    with pytest.raises(ValueError, match="larger than the padded input"):
        QuantizedConv2d(3, 5, 7, input_scale=0.1)(np.zeros((1, 3, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="out must be a uint8 array of shape"):
        q(x, out=np.empty((2, 5, 5, 5), F32))
    with pytest.raises(ValueError, match="out_dtype='uint8' needs output_scale"):
        QuantizedConv2d(3, 5, 3, out_dtype="uint8")
    with pytest.raises(ValueError, match="out_dtype must be"):
        QuantizedConv2d(3, 5, 3, out_dtype="int8")
    for attr, value, exc, msg in [("input_zero_point", 256, ValueError, "input_zero_point must be in"),
                                  ("output_zero_point", -1, ValueError, "output_zero_point must be in"),
                                  ("input_zero_point", 1.5, TypeError, "input_zero_point must be an integer"),
                                  ("input_scale", 0.0, ValueError, "input_scale must be positive"),
                                  ("output_scale", float("nan"), ValueError, "output_scale must be positive"),
                                  ("weight", q.weight.astype(F32), TypeError, "weight must have dtype int8"),
                                  ("weight_scale", np.zeros(5, F32), ValueError, "weight_scale must be positive"),
                                  ("bias", np.zeros(4, F32), ValueError, "bias must have shape \\(5,\\)"),
                                  ("output_scale", "big", TypeError, "output_scale must be a real number")]:
        old = getattr(q, attr)
        setattr(q, attr, value)
        with pytest.raises(exc, match=msg):
            q(x)
        setattr(q, attr, old)
    np.testing.assert_array_equal(q(x), epilogue(int_sums(x, q), q))  # still usable
    with pytest.raises(ValueError, match="too long a reduction"):
        QuantizedConv2d(2048, 8, 7)
    with pytest.raises(TypeError, match="brgemm.nn.Conv2d"):
        QuantizedConv2d.from_float(object(), input_scale=0.1)
    with pytest.raises(ValueError, match="NaN"):
        quantize_per_channel(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match="needs a scale"):
        _core.conv_to_blocked(x.astype(F32), np.empty((2, 1, 5, 5, 4), np.uint8))
    with pytest.raises(TypeError, match="cannot be blocked as"):
        _core.conv_to_blocked(x, np.empty((2, 1, 5, 5, 4), F32))
    with pytest.raises(TypeError, match="cannot be unblocked into"):
        _core.conv_from_blocked(np.empty((2, 1, 5, 5, 4), np.uint8), np.empty((2, 3, 5, 5), F32))
