"""Conv2d(dtype="dfp16"): forward, ∂x and ∂W as DFP-16 products (layers/dfp_conv.h), on every
ISA, checked two ways against float64 references: (1) against the same convolutions of the
DFP-16 roundings themselves (the mantissas at the layer's exponents): exact int32 sums make the
only difference the float32 conversion and addition of each batch element's sum, so a wrapped
(overflowed) sum could not pass; (2) against the float convolution, within the rounding of each
operand to its shared exponent (half a step, 2^(e−1), per value). Then the overflow guarantee
on adversarial data (every mantissa at its largest), accumulation, SGD on float32 master
weights and the errors."""

import numpy as np
import pytest

from brgemm import layout
from brgemm.nn import Conv2d

EPS32 = float(np.finfo(np.float32).eps)


def conv_ref(x, w, stride, pad, dil):
    """float64 forward: y[n, k, o, p] = Σ_{c, r, s} xpad[n, c, o·sh + r·dh, p·sw + s·dw]·w[k, c, r, s]."""
    (sh, sw), (pt, pb, pl, pr), (dh, dw) = stride, pad, dil
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    k, c, r, s = w.shape
    oh = (xp.shape[2] - dh * (r - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (s - 1) - 1) // sw + 1
    y = np.zeros((x.shape[0], k, oh, ow))
    for i in range(r):
        for j in range(s):
            win = xp[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]
            y += np.einsum("nchw,kc->nkhw", win, w[:, :, i, j].astype(np.float64))
    return y


def conv_grads_ref(x, w, dz, stride, pad, dil):
    """float64 (∂x, ∂W) of conv_ref for the output gradient dz."""
    (sh, sw), (pt, pb, pl, pr), (dh, dw) = stride, pad, dil
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    gxp = np.zeros_like(xp)
    k, c, r, s = w.shape
    oh, ow = dz.shape[2:]
    gw = np.zeros(w.shape)
    dz = dz.astype(np.float64)
    for i in range(r):
        for j in range(s):
            rows = slice(i * dh, i * dh + sh * (oh - 1) + 1, sh)
            cols = slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)
            gxp[:, :, rows, cols] += np.einsum("nkhw,kc->nchw", dz, w[:, :, i, j].astype(np.float64))
            gw[:, :, i, j] = np.einsum("nkhw,nchw->kc", dz, xp[:, :, rows, cols])
    return gxp[:, :, pt:xp.shape[2] - pb, pl:xp.shape[3] - pr], gw


def rounded(a, e):
    """The DFP-16 value of a at exponent e: round(a·2^−e) (ties to even), clamped to ±32767."""
    return np.clip(np.rint(a.astype(np.float64) * 2.0 ** -e), -32767, 32767) * 2.0 ** e


SHAPES = [  # n, c, k, h, w, kernel, stride, padding, dilation
    (2, 3, 5, 9, 7, 3, 1, 1, 1),
    (1, 16, 32, 8, 8, 3, 2, 1, 1),
    (2, 70, 20, 6, 5, (3, 1), (1, 2), (1, 0, 2, 1), (2, 1)),
    (1, 64, 64, 5, 5, 1, 1, 0, 1),
    (3, 5, 128, 7, 9, 5, 2, 2, 1),
    (1, 130, 17, 4, 4, 2, 1, 0, 1),
    (2, 8, 24, 7, 9, 3, 1, (2, 0, 1, 3), 2),  # stride 1, dilated, an odd padded width
    (2, 128, 64, 6, 6, 3, 1, 1, 1),  # dW's blocks past 256 KiB: the element-major weight gradient
]


@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:5])))
def test_forward_and_gradients(isa, shape, activation, rng):
    n, c, k, h, w, kernel, stride, padding, dilation = shape
    conv = Conv2d(c, k, kernel, stride, padding, dilation, activation=activation, dtype="dfp16", seed=2)
    geo = conv.stride, conv.padding, conv.dilation
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    wt, b = conv.weight.copy(), conv.bias.copy()
    y = conv(x)
    e = conv.exponents
    xr, wr = rounded(x, e["x"]), rounded(wt, e["weight"])
    taps = wt.shape[2] * wt.shape[3]
    # (1) the same convolution of the roundings: float32 conversion and addition of each batch
    # element's exact sum, at most one per channel block and tap (≤ C·taps of them), each
    # within eps of the running |sum| ≤ the convolution of the magnitudes
    z = conv_ref(xr, wr, *geo) + b[None, :, None, None]
    want = np.maximum(z, 0) if activation == "relu" else z
    mag = conv_ref(np.abs(xr), np.abs(wr), *geo) + np.abs(b)[None, :, None, None]
    assert np.all(np.abs(y - want) <= 2 * (c * taps + 2) * EPS32 * mag)
    # (2) the float convolution: each value within half a step of its exponent
    zf = conv_ref(x, wt, *geo) + b[None, :, None, None]
    reff = np.maximum(zf, 0) if activation == "relu" else zf
    ones_x, ones_w = np.ones_like(x), np.ones_like(wt)
    step = (2.0 ** (e["weight"] - 1) * conv_ref(np.abs(x), ones_w, *geo)
            + 2.0 ** (e["x"] - 1) * conv_ref(ones_x, np.abs(wr), *geo))
    assert np.all(np.abs(y - reff) <= step + 2 * (c * taps + 2) * EPS32 * mag)

    gy = rng.standard_normal(y.shape, dtype=np.float32)
    gx = conv.backward(gy)
    dz = np.where(y > 0, gy, 0).astype(np.float32) if activation == "relu" else gy
    e = conv.exponents
    dzr = rounded(dz, e["grad"])
    gx_want, gw_want = conv_grads_ref(xr, wr, dzr, *geo)
    gx_mag, gw_mag = conv_grads_ref(np.abs(xr), np.abs(wr), np.abs(dzr), *geo)
    # ∂x: a batch element per output channel block and tap (≤ K·taps); ∂W: one per output row
    # (n·OH), its per-thread parts summed (≤ 2 more per thread)
    assert np.all(np.abs(gx - gx_want) <= 2 * (k * taps + 2) * EPS32 * gx_mag)
    oh = y.shape[2]
    assert np.all(np.abs(conv.weight_grad - gw_want) <= 2 * (n * oh + 8) * EPS32 * gw_mag)
    assert np.allclose(conv.bias_grad, dz.astype(np.float64).sum((0, 2, 3)), rtol=1e-5, atol=1e-5)

    # a second backward accumulates; zero_grad then starts again
    wg = conv.weight_grad.copy()
    conv.backward(gy, input_grad=False)
    assert np.all(np.abs(conv.weight_grad - 2 * wg) <= 4 * (n * oh + 8) * EPS32 * gw_mag)
    conv.zero_grad()
    conv.backward(gy, input_grad=False)
    assert np.array_equal(conv.weight_grad, wg)


@pytest.mark.parametrize("shape", [(2, 70, 20, 6, 5, 1), (3, 128, 64, 9, 9, 1), (2, 21, 40, 7, 8, 2)],
                         ids=lambda s: "x".join(map(str, s)))
def test_plain_and_blocked_operands_same_bits(isa, shape, rng):
    # A plain (NCHW) x and ∂y are blocked by the layer itself, plane by plane, each plane scanned
    # for the exponent while in cache: the same values as blocked operands, so the same bits.
    n, c, k, h, w, stride = shape
    a = Conv2d(c, k, 3, stride, 1, activation="relu", dtype="dfp16", seed=5)
    b = Conv2d(c, k, 3, stride, 1, activation="relu", dtype="dfp16", seed=5)
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    y = a(x)
    g = rng.standard_normal(y.shape, dtype=np.float32)
    gx = a.backward(g)
    yb = b(layout.to_blocked(x))
    np.testing.assert_array_equal(layout.from_blocked(yb, k), y)
    gxb = b.backward(layout.to_blocked(g))
    np.testing.assert_array_equal(layout.from_blocked(gxb, c), gx)
    np.testing.assert_array_equal(a.weight_grad, b.weight_grad)
    np.testing.assert_array_equal(a.bias_grad, b.bias_grad)
    assert a.exponents == b.exponents


def test_overflow_bound_on_adversarial_data(isa):
    """Every mantissa at its largest, all of one sign: a 64-channel slice of x and one of W
    would sum to 64·2^28 = 2^34 in int32. The Cauchy–Schwarz bound takes bits from x (and from
    ∂y for the gradients) until no batch element can exceed 2^31 − 1, and the results are the
    exact sums (a wrapped one would be off by a multiple of 2^32 mantissa units)."""
    conv = Conv2d(64, 64, 3, padding=1, bias=False, dtype="dfp16")
    conv.weight = np.ones((64, 64, 3, 3), np.float32)
    x = np.ones((2, 64, 6, 6), np.float32)
    y = conv(x)
    e = conv.exponents
    assert e["x_shift"] > 0
    want = conv_ref(x, conv.weight, (1, 1), (1, 1, 1, 1), (1, 1))  # exact: ones round to ones
    assert np.array_equal(y, want.astype(np.float32))
    gx = conv.backward(np.ones_like(y))
    e = conv.exponents
    assert e["grad_shift"] > 0
    gx_want, gw_want = conv_grads_ref(x, conv.weight, np.ones_like(y), (1, 1), (1, 1, 1, 1), (1, 1))
    assert np.array_equal(gx, gx_want.astype(np.float32))
    assert np.array_equal(conv.weight_grad, gw_want.astype(np.float32))


def test_same_as_float32_layer_within_bound(rng):
    """The dfp16 layer against the float32 one with the same weights (a 128 → 128 3×3): the
    difference stays within the roundings' bound of test_forward_and_gradients (2^−14 of the
    magnitudes, relative)."""
    f32 = Conv2d(128, 128, 3, padding=1, activation="relu", seed=4)
    d16 = Conv2d(128, 128, 3, padding=1, activation="relu", dtype="dfp16", seed=4)
    x = rng.standard_normal((2, 128, 10, 10), dtype=np.float32)
    y32, y16 = f32(x), d16(x)
    mag = conv_ref(np.abs(x), np.abs(f32.weight), (1, 1), (1, 1, 1, 1), (1, 1))
    assert np.all(np.abs(y16 - y32) <= 2.0 ** -13 * mag + 1e-6)


def test_sgd_on_float32_master_weights(rng):
    conv = Conv2d(4, 8, 3, dtype="dfp16", seed=1)
    x = rng.standard_normal((2, 4, 6, 6), dtype=np.float32)
    y = conv(x)
    conv.backward(np.ones_like(y), input_grad=False)
    w0, g = conv.weight.copy(), conv.weight_grad.copy()
    conv.apply_sgd(1e-7)  # far below one DFP-16 step of w: the master copy still moves
    assert conv.weight.dtype == np.float32
    assert np.array_equal(conv.weight, w0 - np.float32(1e-7) * g)
    y2 = conv(x)  # the next forward converts the new weights
    assert y2.shape == y.shape


def test_errors(rng):
    with pytest.raises(ValueError, match="groups"):
        Conv2d(4, 4, 3, groups=2, dtype="dfp16")
    with pytest.raises(ValueError, match="activation"):
        Conv2d(4, 4, 3, activation="tanh", dtype="dfp16")
    with pytest.raises(ValueError, match="algorithm"):
        Conv2d(4, 4, 3, algorithm="winograd", dtype="dfp16")
    conv = Conv2d(4, 4, 3, dtype="dfp16")
    with pytest.raises(RuntimeError, match="forward"):
        conv.backward(np.ones((1, 4, 2, 2), np.float32))
    with pytest.raises(TypeError, match="x must have dtype float32"):
        conv(np.ones((1, 4, 4, 4), np.float64))
    x = np.ones((1, 4, 4, 4), np.float32)
    x[0, 1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="x holds an inf or a NaN"):
        conv(x)
    y = conv(np.ones((1, 4, 4, 4), np.float32))
    gy = np.ones_like(y)
    gy[0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="grad_out holds an inf or a NaN"):
        conv.backward(gy)
    conv.weight[0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="weight holds an inf or a NaN"):
        conv(np.ones((1, 4, 4, 4), np.float32))
    assert Conv2d(4, 4, 3).exponents is None  # a float32 layer has none
