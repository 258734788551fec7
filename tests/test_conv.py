"""brgemm.nn.Conv2d and brgemm.layout: forward, backward data and weight gradient against a
float64 numpy reference (and PyTorch's autograd when it is installed), over odd shapes, every
ISA, both dtypes; fused activations against the unfused layer; blocked and plain arrays;
parameters written in place; errors.

Tolerances are derived: a sum of n float32 products is within n·2⁻²³·Σ|a||b| of the exact one
(any order). bfloat16 layers are compared with what their kernels multiply rounded to bfloat16
first (x and W forward; dZ and W for the input gradient; x and dZ for the weight gradient, bf16
products summed in f32; the bias gradient sums the f32 dZ), plus one bf16 rounding (2⁻⁸
relative) where the output is bfloat16.
"""

import itertools

import ml_dtypes
import numpy as np
import pytest

import brgemm
from brgemm import layout
from brgemm.nn import Conv2d
from conftest import restore_isa

BF16 = ml_dtypes.bfloat16
EPS = 2.0 ** -23

# (C, K, H, W, kernel, stride, padding, dilation)
CASES = [
    (3, 5, 5, 5, 3, 1, 1, 1),               # RGB-like C, K not a multiple of anything
    (17, 33, 13, 13, 3, 2, 1, 1),           # stride 2, odd sizes
    (20, 18, 1, 1, 1, 1, 0, 1),             # 1 × 1 image
    (8, 8, 1, 1, 3, 1, 1, 1),               # 1 × 1 image, 3 × 3 kernel: only the centre tap
    (16, 16, 5, 5, 3, 1, 2, 2),             # dilation 2
    (64, 64, 6, 6, 1, 1, 0, 1),             # 1 × 1, stride 1: rows merged
    (40, 70, 9, 7, 1, 2, 0, 1),             # 1 × 1, stride 2
    (5, 7, 13, 11, 7, 2, 3, 1),             # 7 × 7, stride 2, padding 3
    (6, 10, 9, 8, (2, 3), (1, 2), (0, 1, 2, 0), 1),  # rectangular, asymmetric padding
    (20, 20, 13, 13, 3, 3, 2, 2),           # stride 3 with dilation: three stride classes
    (192, 130, 5, 5, 3, 1, 1, 1),           # several reduction chunks both ways
    (7, 9, 11, 10, 3, 3, 2, 2),             # C < 16 (Xᵀ·dZ weight gradient) in three stride phases
    (12, 20, 6, 5, 1, 1, 0, 1),             # C < 16, 1 × 1 with rows merged
    (3, 16, 12, 15, 7, 2, 3, 1),            # the stem: RGB (blocks of 4), 7 × 7 stride 2
    (4, 8, 5, 3, 5, 2, (1, 2, 2, 3), 1),    # a kernel row wider than the image, padded unevenly
]
IDS = ["c3k5", "stride2", "hw1", "hw1_k3", "dil2", "1x1", "1x1s2", "7x7s2", "rect_asym", "s3d2", "chunks",
       "narrow_s3d2", "narrow_1x1", "stem", "wide_window"]


def bf16_round(a):
    return np.asarray(a, np.float32).astype(BF16).astype(np.float64)


def _taps(x, conv, oh, ow):
    """(r, s, patch): the (N, C, OH, OW) input values tap (r, s) meets, from the padded x."""
    (r_, s_), (sh, sw), (dh, dw), (pt, pb, pl, pr) = conv.kernel_size, conv.stride, conv.dilation, conv.padding
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    for r in range(r_):
        for s in range(s_):
            yield r, s, xp[:, :, r * dh:r * dh + sh * (oh - 1) + 1:sh, s * dw:s * dw + sw * (ow - 1) + 1:sw]


def ref_forward(x, w, b, conv):
    n, _, h, wd = x.shape
    oh, ow = conv.output_size(h, wd)
    y = np.zeros((n, w.shape[0], oh, ow))
    for r, s, patch in _taps(x, conv, oh, ow):
        y += np.einsum("nchw,kc->nkhw", patch, w[:, :, r, s])
    return y + (0.0 if b is None else b[None, :, None, None])


def ref_backward(x, w, g, conv):
    """(dx, dw, db) of sum(g · conv(x)) in float64."""
    n, c, h, wd = x.shape
    oh, ow = g.shape[2:]
    (pt, pb, pl, pr), (sh, sw), (dh, dw_) = conv.padding, conv.stride, conv.dilation
    dxp = np.zeros((n, c, h + pt + pb, wd + pl + pr))
    dw = np.zeros_like(w)
    for r, s, patch in _taps(x, conv, oh, ow):
        dxp[:, :, r * dh:r * dh + sh * (oh - 1) + 1:sh, s * dw_:s * dw_ + sw * (ow - 1) + 1:sw] += \
            np.einsum("nkhw,kc->nchw", g, w[:, :, r, s])
        dw[:, :, r, s] = np.einsum("nkhw,nchw->kc", g, patch)
    return dxp[:, :, pt:pt + h, pl:pl + wd], dw, g.sum(axis=(0, 2, 3))


def assert_close(got, ref, bound, what, rel_out=0.0):
    got = np.asarray(got, np.float64)
    err = np.abs(got - ref)
    tol = bound + rel_out * np.abs(ref) + 1e-30
    worst = np.unravel_index(np.argmax(err - tol), err.shape)
    assert np.all(err <= tol), f"{what}: error {err[worst]:.3g} > bound {tol[worst]:.3g} at {worst}"


def make(case, dtype="float32", activation=None, bias=True, seed=1):
    c, k, h, w, ks, st, pad, dil = case
    return Conv2d(c, k, ks, st, pad, dil, bias=bias, activation=activation, dtype=dtype, seed=seed), (c, h, w)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_conv_matches_float64(isa, rng, case, dtype):
    conv, (c, h, w) = make(case, dtype)
    n = 2
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    y = conv.forward(x)
    oh, ow = conv.output_size(h, w)
    assert y.shape == (n, conv.out_channels, oh, ow)
    assert y.dtype == (np.float32 if dtype == "float32" else BF16)
    bf = dtype == "bfloat16"
    rnd = bf16_round if bf else (lambda a: np.asarray(a, np.float64))
    xo, wo, b = rnd(x), rnd(conv.weight), conv.bias.astype(np.float64)
    red = c * conv.kernel_size[0] * conv.kernel_size[1]
    bound = (red + 2) * EPS * (ref_forward(np.abs(xo), np.abs(wo), np.abs(b), conv))
    assert_close(y, ref_forward(xo, wo, b, conv), bound, "forward", 2.0 ** -8 if bf else 0.0)

    g = rng.standard_normal(y.shape).astype(np.float32)
    dx = conv.backward(g)
    assert dx.dtype == np.float32 and dx.shape == x.shape
    g64 = g.astype(np.float64)
    dx_ref, _, _ = ref_backward(xo, rnd(conv.weight), rnd(g), conv)
    dx_abs, _, _ = ref_backward(np.abs(xo), np.abs(rnd(conv.weight)), np.abs(rnd(g)), conv)
    red_x = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert_close(dx, dx_ref, (red_x + 1) * EPS * dx_abs, "grad input")
    _, _, db_ref = ref_backward(xo, wo, g64, conv)
    _, _, db_abs = ref_backward(np.abs(xo), np.abs(wo), np.abs(g64), conv)
    _, dw_ref, _ = ref_backward(xo, wo, rnd(g), conv)   # the weight gradient's B: dZ rounded, as dx's A
    _, dw_abs, _ = ref_backward(np.abs(xo), np.abs(wo), np.abs(rnd(g)), conv)
    pixels = n * oh * ow
    assert_close(conv.weight_grad, dw_ref, (pixels + 1) * EPS * dw_abs, "weight grad")
    assert_close(conv.bias_grad, db_ref, (pixels + 1) * EPS * db_abs, "bias grad")


EMULATING = ["scalar", "avx2", "avx512", "avx512_vnni"]


@pytest.mark.parametrize("case", [CASES[1], CASES[9], CASES[10], CASES[13]], ids=["stride2", "s3d2", "chunks", "stem"])
def test_bf16_layer_same_bits_on_the_isas_that_widen(rng, case):
    """Below AVX512_BF16 the bf16 products are widened to f32 and added one at a time, in the same
    order on every ISA (the scalar twin's): a bf16 layer's output, input gradient and weight
    gradient (bf16 products too, pairs of pixels) are the same bits on each of them."""
    from conftest import restore_isa
    levels = [lv for lv in EMULATING if lv in brgemm.available_isas()]
    if len(levels) < 2:
        pytest.skip("fewer than two ISAs without AVX512_BF16 here")
    c, _, h, w = case[:4]
    x = rng.standard_normal((2, c, h, w)).astype(np.float32)
    got = {}
    try:
        for level in levels:
            brgemm.set_isa(level)
            conv, _ = make(case, "bfloat16", activation="relu")
            y = conv.forward(x)
            g = np.random.default_rng(7).standard_normal(y.shape).astype(np.float32)
            dx = conv.backward(g)
            got[level] = (np.asarray(y, np.float32), dx, conv.weight_grad.copy(), conv.bias_grad.copy())
    finally:
        restore_isa()
    for level in levels[1:]:
        for name, a, b in zip(("y", "dx", "dW", "db"), got[level], got[levels[0]]):
            assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), f"{name}: {level} differs from {levels[0]}"


@pytest.mark.parametrize("case", [CASES[1], CASES[7], CASES[8]], ids=["stride2", "7x7s2", "rect_asym"])
def test_conv_matches_torch_autograd(rng, case):
    torch = pytest.importorskip("torch")
    conv, (c, h, w) = make(case, activation="relu")
    x = rng.standard_normal((3, c, h, w)).astype(np.float32)
    y = conv(x)
    pt, pb, pl, pr = conv.padding
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    wt = torch.tensor(conv.weight, dtype=torch.float64, requires_grad=True)
    bt = torch.tensor(conv.bias, dtype=torch.float64, requires_grad=True)
    yt = torch.relu(torch.nn.functional.conv2d(torch.nn.functional.pad(xt, (pl, pr, pt, pb)), wt, bt,
                                               stride=conv.stride, dilation=conv.dilation))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-5, atol=1e-5)
    g = rng.standard_normal(y.shape).astype(np.float32)
    # Where y is 0 the two sides may disagree on the sign of a tiny pre-activation: compare there
    # through our own mask (the ReLU's derivative is taken from the output, as documented).
    gm = g * (y > 0)
    yt.backward(torch.tensor(gm, dtype=torch.float64))
    dx = conv.backward(g)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(conv.weight_grad, wt.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(conv.bias_grad, bt.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_conv_gradients_by_finite_differences(rng):
    conv = Conv2d(3, 4, 3, stride=2, padding=1, seed=2)
    x = rng.standard_normal((1, 3, 5, 6)).astype(np.float32)
    g = rng.standard_normal((1, 4) + conv.output_size(5, 6)).astype(np.float32)
    conv(x)
    dx = conv.backward(g)
    dw = conv.weight_grad.copy()

    def loss():
        return float(np.sum(conv(x).astype(np.float64) * g))

    h = 1e-2
    for idx in [(0, 0, 0, 0), (0, 2, 4, 5), (0, 1, 2, 3)]:
        x[idx] += h
        up = loss()
        x[idx] -= 2 * h
        down = loss()
        x[idx] += h
        assert abs((up - down) / (2 * h) - dx[idx]) < 2e-3 * max(1.0, abs(dx[idx]))
    for idx in [(0, 0, 0, 0), (3, 2, 2, 1)]:
        conv.weight[idx] += h
        up = loss()
        conv.weight[idx] -= 2 * h
        down = loss()
        conv.weight[idx] += h
        assert abs((up - down) / (2 * h) - dw[idx]) < 2e-3 * max(1.0, abs(dw[idx]))


ACTS = ["relu", "tanh", "sigmoid", "gelu", "swish", "ktanh", "ksigmoid", "kgelu", "kswish", "relu6"]


@pytest.mark.parametrize("act", ACTS)
def test_fused_activation_is_the_activation_of_the_unfused_layer(isa, rng, act):
    """float32: the epilogue applies the same function to the same accumulator, so the fused
    layer gives exactly F.<act> of the plain one, in eval and training mode, and its backward is
    the plain layer's given dY ⊙ act'(·)."""
    from brgemm.nn import functional as F
    case = CASES[1]
    fused, (c, h, w) = make(case, activation=act)
    plain, _ = make(case)
    x = rng.standard_normal((2, c, h, w)).astype(np.float32) * 2
    z = plain(x)
    y = fused(x)
    np.testing.assert_array_equal(y, F.activation(z, act))
    fused.eval()
    np.testing.assert_array_equal(fused(x), y)
    fused.train()
    fused(x)
    g = rng.standard_normal(y.shape).astype(np.float32)
    dz = F.activation_backward(act, g, x=z, y=y)
    np.testing.assert_array_equal(fused.backward(g), plain.backward(dz))
    np.testing.assert_array_equal(fused.weight_grad, plain.weight_grad)
    np.testing.assert_array_equal(fused.bias_grad, plain.bias_grad)


def test_relu_backward_masks_with_the_output(rng):
    conv, (c, h, w) = make(CASES[0], activation="relu")
    ref, _ = make(CASES[0])
    x = rng.standard_normal((2, c, h, w)).astype(np.float32)
    y = conv(x)
    np.testing.assert_array_equal(y, np.maximum(ref(x), 0))
    g = rng.standard_normal(y.shape).astype(np.float32)
    dx = conv.backward(g)
    dx_ref = ref.backward(np.where(y > 0, g, 0).astype(np.float32))
    np.testing.assert_array_equal(dx, dx_ref)
    np.testing.assert_array_equal(conv.weight_grad, ref.weight_grad)
    np.testing.assert_array_equal(conv.bias_grad, ref.bias_grad)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_blocked_in_blocked_out_and_chains(rng, dtype):
    a = Conv2d(3, 20, 3, padding=1, activation="relu", dtype=dtype, seed=3)
    b = Conv2d(20, 40, 3, stride=2, padding=1, dtype=dtype, seed=4)
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    plain = b(a(x))
    xb = layout.to_blocked(x, dtype=a._act_dtype)
    assert xb.shape == (2, 1, 9, 9, 3)  # RGB blocked is NHWC: nothing padded
    yb = b(a(xb))
    assert yb.ndim == 5 and yb.shape[-1] == b.bk
    np.testing.assert_array_equal(layout.from_blocked(yb, 40), plain)
    g = rng.standard_normal(plain.shape).astype(np.float32)
    gx_plain = b.backward(g)
    b(a(xb))
    gx_blocked = b.backward(layout.to_blocked(g))
    np.testing.assert_array_equal(layout.from_blocked(gx_blocked, 20), gx_plain)


def test_layout_round_trips_and_block_sizes(rng):
    assert [layout.block_size(c) for c in (1, 3, 4, 15, 16, 17, 48, 64, 96, 100, 512)] == \
        [1, 3, 4, 15, 16, 32, 16, 64, 32, 16, 64]
    x = rng.standard_normal((2, 21, 3, 4)).astype(np.float32)
    xb = layout.to_blocked(x)
    assert xb.shape == (2, 1, 3, 4, 32)
    np.testing.assert_array_equal(xb[:, 0, :, :, :21], x.transpose(0, 2, 3, 1))
    assert not xb[..., 21:].any()
    np.testing.assert_array_equal(layout.from_blocked(xb, 21), x)
    x16 = layout.to_blocked(x, block=16, dtype=BF16)
    np.testing.assert_array_equal(layout.from_blocked(x16, 21), x.astype(BF16))
    w = rng.standard_normal((70, 21, 3, 2)).astype(np.float32)
    for dt, v in ((np.float32, 1), (BF16, 2), (np.int8, 4)):
        src = (w * 10).astype(np.int8) if dt == np.int8 else w
        wb = layout.to_blocked(src, layout="KCRS", dtype=dt)
        bc, bk = layout.block_size(21), layout.block_size(70)
        assert wb.shape[:4] == (-(-70 // bk), -(-21 // bc), 3, 2)
        # element (k, c, r, s) sits at [k/bk][c/bc][r][s][(c%bc)/v][k%bk][c%v]
        k, c, r, s = 37, 19, 2, 1
        at = wb[k // bk, c // bc, r, s, (c % bc) // v, k % bk] if v > 1 else wb[k // bk, c // bc, r, s, c % bc, k % bk]
        got = at[c % v] if v > 1 else at
        assert got == src.astype(dt)[k, c, r, s]
        np.testing.assert_array_equal(layout.from_blocked(wb, (70, 21), layout="KCRS"), src.astype(dt))
        # An RGB filter: one block of 3 channels, bfloat16 and int8 rows padded to a pair or quad of zeros
        w3 = src[:5, :3]
        wb3 = layout.to_blocked(w3, layout="KCRS", dtype=dt)
        assert wb3.shape == ((1, 1, 3, 2, 3, 5) if v == 1 else (1, 1, 3, 2, -(-3 // v), 5, v))
        if v > 1:
            assert not wb3.reshape(3, 2, -1, 5, v)[:, :, -1, :, 3 % v:].any()
        np.testing.assert_array_equal(layout.from_blocked(wb3, (5, 3), layout="KCRS"), w3.astype(dt))
    with pytest.raises(ValueError, match="multiple of 2"):
        layout.to_blocked(w, layout="KCRS", dtype=BF16, block=(3, 16))


def _nhwc(x):
    """x (N, C, H, W) as an (N, C, H, W) view of NHWC memory (a channels_last tensor's numpy view)."""
    v = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    assert not v.flags.c_contiguous or 1 in (x.shape[1], x.shape[2] * x.shape[3])
    return v


# (x dtype, blocked dtype, quantize): every combination conv_to_blocked takes
NHWC_TYPES = [pytest.param(np.float32, np.float32, False, id="f32-f32"),
              pytest.param(np.float32, BF16, False, id="f32-bf16"),
              pytest.param(BF16, np.float32, False, id="bf16-f32"),
              pytest.param(BF16, BF16, False, id="bf16-bf16"),
              pytest.param(np.uint8, np.uint8, False, id="u8-u8"),
              pytest.param(np.float32, np.uint8, True, id="f32-u8-quantized")]


@pytest.mark.parametrize("xt, bt, quantize", NHWC_TYPES)
@pytest.mark.parametrize("c", [1, 3, 4, 5, 12, 17, 64, 70])
def test_nhwc_memory_blocks_as_nchw_does(rng, c, xt, bt, quantize):
    """An NHWC x goes straight to the blocked layout (no NCHW copy), bit-identical to the NCHW
    path, padded channels zero whatever xb held; and from_blocked writes NHWC memory back."""
    x = rng.standard_normal((3, c, 5, 7)) * 3
    if xt == np.uint8:
        x = rng.integers(0, 256, x.shape)
    elif quantize:  # ties to even at scale 0.5, saturation both ways, NaN → 0
        x.flat[:6] = [0.25, 0.75, -0.25, 300.0, -300.0, np.nan]
    x = x.astype(xt)
    q = {"scale": 0.5, "zero_point": 3} if quantize else {}
    bc = brgemm._core.conv_block(c)
    want = np.full((3, -(-c // bc), 5, 7, bc), 9, bt)
    got = want.copy()
    brgemm._core.conv_to_blocked(x, want, **q)
    brgemm._core.conv_to_blocked(_nhwc(x), got, **q)
    assert want.tobytes() == got.tobytes()
    assert not got[:, -1, ..., c - (-(-c // bc) - 1) * bc:].any()
    if quantize:
        return
    back = _nhwc(np.zeros(x.shape, xt))
    brgemm._core.conv_from_blocked(got, back)
    want_back = np.empty(x.shape, xt)
    brgemm._core.conv_from_blocked(want, want_back)
    assert np.ascontiguousarray(back).tobytes() == want_back.tobytes()
    if xt == bt:
        np.testing.assert_array_equal(layout.to_blocked(_nhwc(x)), layout.to_blocked(x))


def test_nhwc_quantizes_with_the_same_rounding(rng):
    """f32 → u8 from NHWC memory: clip(nearbyint(x / scale) + zero_point), ties to even, NaN → 0."""
    x = np.array([0.25, 0.75, 1.25, -0.25, -0.75, 300.0, -300.0, np.nan], np.float32).reshape(1, 8, 1, 1)
    x = np.tile(x, (2, 1, 3, 2))
    xb = np.empty((2, 1, 3, 2, 8), np.uint8)
    brgemm._core.conv_to_blocked(_nhwc(x), xb, scale=0.5, zero_point=3)
    np.testing.assert_array_equal(xb[1, 0, 2, 1], [3, 5, 5, 3, 1, 255, 0, 0])


def test_nhwc_is_the_only_other_layout(rng):
    """Strides neither NCHW nor NHWC are refused, naming the argument (callers copy those first)."""
    x = rng.standard_normal((2, 5, 4, 6)).astype(np.float32)
    xb = np.empty((2, 1, 4, 6, 8), np.float32)
    for odd in (x[:, :, :, ::-1], np.asfortranarray(x), x.transpose(0, 1, 3, 2).copy().transpose(0, 1, 3, 2),
                np.ascontiguousarray(x.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)):
        with pytest.raises(ValueError, match="x must be C-contiguous .* or an .* view of NHWC memory"):
            brgemm._core.conv_to_blocked(odd, xb)
        with pytest.raises(ValueError, match="out must be C-contiguous .* view of NHWC memory"):
            brgemm._core.conv_from_blocked(xb, odd)
        np.testing.assert_array_equal(layout.to_blocked(odd), layout.to_blocked(odd.copy()))  # copied first
    with pytest.raises(ValueError, match="xb must be C-contiguous"):
        brgemm._core.conv_to_blocked(x, np.empty((2, 1, 4, 6, 16), np.float32)[..., ::2])


def test_weight_writes_in_place_and_assignment_take_effect(rng):
    conv, (c, h, w) = make(CASES[0])
    x = rng.standard_normal((1, c, h, w)).astype(np.float32)
    y0 = conv(x)
    conv.weight[...] *= 2
    conv.bias[...] *= 2
    np.testing.assert_allclose(conv(x), 2 * y0, rtol=1e-6, atol=1e-6)
    conv.weight = np.zeros_like(conv.weight)
    conv.bias = np.ones(conv.out_channels)
    np.testing.assert_array_equal(conv(x), np.ones_like(y0))


def test_gradients_accumulate_until_zero_grad(rng):
    conv, (c, h, w) = make(CASES[1])
    x = rng.standard_normal((2, c, h, w)).astype(np.float32)
    g = rng.standard_normal((2, conv.out_channels) + conv.output_size(h, w)).astype(np.float32)
    conv(x)
    conv.backward(g, input_grad=False)
    once = conv.weight_grad.copy(), conv.bias_grad.copy()
    conv(x)
    assert conv.backward(g, input_grad=False) is None
    np.testing.assert_allclose(conv.weight_grad, 2 * once[0], rtol=1e-6)
    np.testing.assert_allclose(conv.bias_grad, 2 * once[1], rtol=1e-6)
    conv.zero_grad()
    assert not conv.weight_grad.any() and not conv.bias_grad.any()
    conv.zero_grad()
    conv(x)
    conv.backward(g)
    np.testing.assert_array_equal(conv.weight_grad, once[0])


# Weight gradients whose blocks pass 256 KB with the output rows in one part (conv.cpp's pair
# order: a result block × source block pair's taps into scratch, then straight into the
# gradient): (C, K, groups, H, W) of 3 × 3 padded layers.
PAIR_CASES = [(128, 128, 1, 7, 7),    # 36 dWᵀ blocks of 64 × 64 (512 → 512's 7 × 7 in small)
              (64, 160, 1, 5, 6),     # C < K: dW blocks (Xᵀ·dZ), 45 of 64 × 32
              (128, 128, 2, 6, 7)]    # two groups: 18 blocks, each within a group


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", PAIR_CASES, ids=["dwt", "narrow", "groups2"])
def test_weight_gradient_by_block_pairs(isa, rng, case, threads):
    c, k, groups, h, w = case
    conv = Conv2d(c, k, 3, 1, 1, groups=groups, seed=3)
    x = rng.standard_normal((1, c, h, w)).astype(np.float32)
    g = rng.standard_normal((1, k, h, w)).astype(np.float32)
    ref, ref_abs = np.zeros(conv.weight.shape), np.zeros(conv.weight.shape)
    cg, kg = c // groups, k // groups
    for i in range(groups):  # each group's gradient is an ungrouped layer's
        xs, gs = x[:, i * cg:(i + 1) * cg].astype(np.float64), g[:, i * kg:(i + 1) * kg].astype(np.float64)
        ws = conv.weight[i * kg:(i + 1) * kg].astype(np.float64)
        ref[i * kg:(i + 1) * kg] = ref_backward(xs, ws, gs, conv)[1]
        ref_abs[i * kg:(i + 1) * kg] = ref_backward(np.abs(xs), ws, np.abs(gs), conv)[1]
    before = brgemm.get_num_threads()
    try:
        brgemm.set_num_threads(threads)
        conv(x)
        conv.backward(g, input_grad=False)
        once = conv.weight_grad.copy()
        assert_close(once, ref, (h * w + 1) * EPS * ref_abs, "weight grad")
        conv.backward(g, input_grad=False)  # accumulates: the same sum added once more
        np.testing.assert_array_equal(conv.weight_grad, once + once)
    finally:
        brgemm.set_num_threads(before)


# Input gradients of layers with a few input channels and stride classes of ≥ 16 columns
# (conv.cpp's transposed backward data: dXᵀ = Wᵀ·dZᵀ, the vector along pixels).
DATA_T_CASES = [(3, 16, 12, 40, 7, 2, 3, 1),              # the stem's geometry, small
                (5, 24, 5, 33, 3, 1, 1, 1),               # stride 1, K not a multiple of 16
                (4, 70, 6, 20, 1, 1, 0, 1),               # 1 × 1, rows merged; two result blocks
                (3, 8, 9, 37, (3, 5), (2, 1), (1, 0, 2, 3), (1, 2))]  # dilation, uneven padding


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", DATA_T_CASES, ids=["stem", "s1", "1x1", "rect_dil"])
def test_input_gradient_transposed(rng, case, threads):
    conv, (c, h, w) = make(case)
    x = rng.standard_normal((2, c, h, w)).astype(np.float32)
    g = rng.standard_normal((2, conv.out_channels) + conv.output_size(h, w)).astype(np.float32)
    w64 = conv.weight.astype(np.float64)
    dx_ref = ref_backward(x.astype(np.float64), w64, g.astype(np.float64), conv)[0]
    dx_abs = ref_backward(np.abs(x).astype(np.float64), np.abs(w64), np.abs(g).astype(np.float64), conv)[0]
    red = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    before = brgemm.get_num_threads()
    got = {}
    try:
        brgemm.set_num_threads(threads)
        for level in brgemm.available_isas():
            brgemm.set_isa(level)
            conv(x)
            got[level] = conv.backward(g)
            assert_close(got[level], dx_ref, (red + 1) * EPS * dx_abs, f"grad input ({level})")
    finally:
        brgemm.set_num_threads(before)
        restore_isa()
    vector = [level for level in got if level != "scalar"]  # the scalar kernels differ in bits, as elsewhere
    for level in vector:  # the same bits on every vector ISA
        np.testing.assert_array_equal(got[level], got[vector[0]], err_msg=level)
    conv.weight[...] *= 2  # repacked in place: the stacked weights too
    conv(x)
    np.testing.assert_array_equal(conv.backward(g), 2 * got[brgemm.isa()])


def test_no_bias(rng):
    conv = Conv2d(4, 6, 3, padding=1, bias=False, seed=5)
    x = rng.standard_normal((1, 4, 5, 5)).astype(np.float32)
    y = conv(x)
    assert conv.bias is None and conv.bias_grad is None
    np.testing.assert_allclose(y, ref_forward(x.astype(np.float64), conv.weight.astype(np.float64), None, conv),
                               rtol=1e-5, atol=1e-5)
    conv.backward(np.ones_like(y))


def test_same_padding_keeps_the_size(rng):
    conv = Conv2d(3, 3, (3, 4), padding="same", dilation=(1, 2))
    assert conv.padding == (1, 1, 3, 3)
    assert conv(rng.standard_normal((1, 3, 6, 7)).astype(np.float32)).shape == (1, 3, 6, 7)


def test_output_size_has_one_source():
    """The core's output size (layers/conv.h) is what the layers use; the formula torch's fake
    tensors need (brgemm._runners.conv.out_size, symbolic sizes cannot cross into C++) agrees
    with it wherever the kernel fits, and the core refuses a kernel larger than the padded
    input even where C++'s truncating division would give 1 (stride 2, one row short)."""
    from brgemm._runners.conv import ConvGeometry, out_size
    for h in range(1, 9):
        for r, stride, pad, dil in itertools.product((1, 2, 3, 5), (1, 2, 3), (0, 1, 2), (1, 2)):
            g = ConvGeometry.of(1, 1, (r, 1), (stride, 1), (pad, 0), (dil, 1))
            fits = h + 2 * pad >= dil * (r - 1) + 1
            if fits:
                assert g.out_size(h, 1) == out_size(h, 1, g.kernel_size, g.stride, g.padding, g.dilation)
            else:
                with pytest.raises(ValueError, match="larger than the padded input"):
                    g.out_size(h, 1)
    with pytest.raises(ValueError, match="larger than the padded input"):
        Conv2d(1, 1, 3, stride=2).eval()(np.zeros((1, 1, 2, 2), np.float32))
    for r, s, dh, dw in ((3, 3, 1, 1), (4, 2, 1, 3), (1, 5, 2, 1)):
        th, tw = dh * (r - 1), dw * (s - 1)
        assert ConvGeometry.of(1, 1, (r, s), 1, "same", (dh, dw)).padding == (th // 2, th - th // 2, tw // 2,
                                                                               tw - tw // 2)


def test_errors_name_the_argument(rng):
    conv = Conv2d(5, 8, 3, padding=1)
    x = rng.standard_normal((1, 5, 4, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="x has 4 channels"):
        conv(x[:, :4])
    with pytest.raises(ValueError, match="larger than the padded input"):
        Conv2d(5, 8, 7)(x)
    with pytest.raises(ValueError, match="blocks of 5"):
        conv(np.zeros((1, 1, 4, 4, 16), np.float32))   # a 5-channel float32 layer blocks by 5
    with pytest.raises(ValueError, match="blocks of 5"):
        conv(np.zeros((1, 2, 4, 4, 4), np.float32))
    with pytest.raises(TypeError, match="blocked"):
        Conv2d(5, 8, 3, dtype="bfloat16")(layout.to_blocked(x))
    with pytest.raises(TypeError, match="x must have dtype"):
        conv(x.astype(np.float64))
    with pytest.raises(ValueError, match="4-D"):
        conv(x[0])
    with pytest.raises(RuntimeError, match="forward in training mode"):
        Conv2d(5, 8, 3).backward(np.zeros((1, 8, 2, 2), np.float32))
    conv(x)
    with pytest.raises(ValueError, match="grad_out"):
        conv.backward(np.zeros((1, 8, 3, 3), np.float32))
    with pytest.raises(ValueError, match="padding"):
        Conv2d(5, 8, 3, padding=-1)
    with pytest.raises(ValueError, match="padding"):
        Conv2d(5, 8, 3, padding=(1, 2, 3))
    with pytest.raises(ValueError, match="stride 1"):
        Conv2d(5, 8, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="kernel_size"):
        Conv2d(5, 8, 0)
    with pytest.raises(ValueError, match="dtype"):
        Conv2d(5, 8, 3, dtype="float16")
    with pytest.raises(ValueError, match="out must be"):
        conv(x, out=np.empty((1, 8, 4, 4), np.float64))
    with pytest.raises(ValueError, match="weight must have shape"):
        conv.weight = np.zeros((8, 5, 3, 2))


def test_private_driver_refuses_wrong_sizes():
    from brgemm import _core
    cv = _core._Conv2d("float32", 5, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, "none")
    w = np.zeros((8, 5, 3, 3), np.float32)
    cv.refresh(w, None)
    assert (cv.bc, cv.bk) == (5, 8)
    xb = np.zeros((1, 1, 4, 4, 5), np.float32)
    with pytest.raises(ValueError, match="yb must hold"):
        cv.forward(1, 4, 4, xb, np.zeros(10, np.float32), None)
    with pytest.raises(ValueError, match="xb must hold"):
        cv.forward(1, 5, 4, xb, np.zeros(8 * 5 * 4, np.float32), None)
    with pytest.raises(ValueError, match="at least 1"):
        cv.forward(1, 4, 0, xb, np.zeros(8 * 4 * 4, np.float32), None)
    unpadded = _core._Conv2d("float32", 5, 8, 3, 3, 1, 1, 0, 0, 0, 0, 1, 1, "none")
    unpadded.refresh(w, None)
    with pytest.raises(ValueError, match="larger than the padded"):
        unpadded.forward(1, 2, 4, np.zeros(8 * 2 * 4, np.float32), np.zeros(8 * 4, np.float32), None)
    with pytest.raises(ValueError, match="weight must hold"):
        cv.refresh(np.zeros(3, np.float32), None)
    with pytest.raises(ValueError, match="in_channels"):
        _core._Conv2d("float32", 0, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, "none")


@pytest.mark.parametrize("act", ["gelu", "swish", "kgelu"])
def test_bfloat16_training_forward_of_an_activation_that_keeps_its_input(rng, act):
    """bfloat16 training with an activation whose derivative needs its input: the epilogue
    stops at the bias (f32, kept for backward) and the activation follows, rounded to the
    layer's bfloat16 output, exactly as the fused eval-mode epilogue does. (It used to write
    f32 values into the bfloat16 output: twice its size.)"""
    conv = Conv2d(16, 16, 3, padding=1, activation=act, dtype="bfloat16", seed=1)
    x = rng.standard_normal((2, 16, 6, 6)).astype(np.float32)
    conv.eval()
    y_eval = conv(x)
    conv.train()
    y_train = conv(x)
    np.testing.assert_array_equal(np.asarray(y_train, np.float32), np.asarray(y_eval, np.float32))
    conv.backward(np.ones(y_train.shape, np.float32))
