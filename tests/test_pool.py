"""Pooling on the blocked layout (layers/pool, the core's window kernels, brgemm.torch._pool).

Max pooling picks input values, so it is checked exactly: the forward pass against PyTorch's
max_pool2d in float64 on the same values (bit patterns, ±0 included; NaN where PyTorch has NaN),
and the backward pass against PyTorch's autograd routing with integer gradients, whose sums are
exact in float32 and float64 alike, so any gradient sent to another position of a window shows.
Ties (ReLU zeros, small integers, ±0), -inf and NaN windows included. Global average pooling:
float32 within the bound of a sequential float32 sum of hw terms and one division,
(hw + 1)·2⁻²⁴·mean|x|; bfloat16 adds the final rounding, 2⁻⁸ of the result; its backward is
exactly gy / (H·W) in float32. Every ISA (the isa fixture) gives the scalar twin's bits, and the
thread count changes no bit. Shapes: C not a multiple of the block, blocks of 4 to 100 lanes
(every tail of the 8- and 16-lane vectors), odd H and W, kernels 1 to 3 (and rectangular),
strides 1 to 3 (above the kernel too), padding 0 and 1, N = 0, 1, 3.

uint8 (quantized activations, real = scale·(q − zero_point)): max pooling exactly against a numpy
reference and against quantize(max_pool(dequantize(x))); the dequantized mean against float64
within its two roundings, 2·2⁻²⁴·|y| (the sums are exact), and bit for bit against the twin's
formula evaluated in numpy float32. Blocks that are not multiples of 4 too (AVX2's partial words).
"""

import os

import ml_dtypes
import numpy as np
import pytest

import brgemm
from brgemm import _core
from brgemm.layout import block_size
from brgemm.layout import from_blocked as _from_blocked
from brgemm.layout import to_blocked as _to_blocked

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import brgemm.torch  # noqa: E402,F401

BF16 = ml_dtypes.bfloat16
ops = torch.ops.brgemm


def to_blocked(x, block=None, dtype=None):
    """brgemm.layout.to_blocked, and the empty blocked array of an empty x (which it refuses)."""
    if x.size:
        return _to_blocked(x, block=block, dtype=dtype)
    bc = block or block_size(x.shape[1])
    n, c, h, w = x.shape
    return np.zeros((n, -(-c // bc), h, w, bc), dtype or x.dtype)


def from_blocked(xb, c):
    if xb.size:
        return _from_blocked(xb, c)
    return np.zeros((xb.shape[0], c, xb.shape[2], xb.shape[3]), xb.dtype)

# (N, C, H, W, kernel, stride, padding, block or None for block_size(C))
MAX_CASES = [
    (1, 3, 7, 9, 3, 2, 1, None),
    (3, 5, 5, 5, 2, 1, 1, None),            # k = 2, p = 1: one more output than input rows
    (1, 17, 11, 6, 3, 3, 1, None),
    (0, 16, 6, 6, 3, 2, 1, None),           # no images
    (2, 40, 9, 13, 1, 1, 0, None),          # 1 × 1
    (2, 70, 8, 7, 3, 1, 0, None),
    (1, 64, 15, 15, 3, 2, 1, 64),           # ResNet's pool, small
    (2, 20, 7, 5, 2, 3, 0, 16),             # stride above the kernel: rows and columns no window reads
    (1, 12, 4, 9, (3, 2), (1, 3), (1, 0), 12),
    (1, 33, 3, 3, 3, 1, 1, 32),
    (3, 9, 1, 1, 1, 1, 0, 4),               # 1 × 1 image
    (1, 7, 10, 3, 3, 2, 0, 8),              # kernel as wide as the image
    (2, 80, 5, 6, 3, 2, 1, 80),             # a block of 64 + 16 lanes
    (1, 36, 6, 5, 2, 2, 0, 36),             # 32 + 4 lanes
    (1, 100, 5, 5, 3, 1, 1, 100),
    (1, 6, 7, 40, 3, 2, 1, 24),             # a row longer than one tile of outputs
    (2, 8, 9, 9, 3, 3, 1, 8),
]
CASE_IDS = ["n{}c{}h{}w{}k{}s{}p{}b{}".format(*c) for c in MAX_CASES]


def _pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


def _fill(rng, shape, kind):
    """Values with many ties (ReLU of small integers, ±0) or special values, or random ones."""
    if kind == "random":
        return rng.standard_normal(shape).astype(np.float32)
    if kind == "ties":
        x = np.maximum(rng.integers(-2, 3, shape), 0).astype(np.float32)
        return np.where(rng.random(shape) < 0.2, np.float32(-0.0), x)
    x = rng.integers(-3, 4, shape).astype(np.float32)  # "special": NaN, ±inf among small integers
    u = rng.random(shape)
    x[u < 0.03] = np.nan
    x[(u >= 0.03) & (u < 0.08)] = -np.inf
    x[(u >= 0.08) & (u < 0.1)] = np.inf
    return x


def _blocked(x, block, dtype=np.float32):
    return to_blocked(x.astype(dtype), block=block or block_size(x.shape[1]))


def _ref_max(x, k, s, p, gy=None):
    """PyTorch's max_pool2d in float64: (output, ∂x for gy or None)."""
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_(gy is not None)
    y = F.max_pool2d(xt, _pair(k), _pair(s), _pair(p))
    if gy is None:
        return y.detach().numpy(), None
    y.backward(torch.from_numpy(gy.astype(np.float64)))
    return y.detach().numpy(), xt.grad.numpy()


def _assert_same_values(got, ref):
    """Same NaN positions, and the same bits (±0 included) elsewhere."""
    got = np.asarray(got, np.float32)
    ref = np.asarray(ref).astype(np.float32)
    nan = np.isnan(ref)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint32), ref[~nan].view(np.uint32))


# --- max pooling against PyTorch -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["random", "ties", "special"])
@pytest.mark.parametrize("case", MAX_CASES, ids=CASE_IDS)
def test_max_pool_matches_pytorch(isa, case, kind, rng):
    n, c, h, w, k, s, p, block = case
    x = _fill(rng, (n, c, h, w), kind)
    y_ref, _ = _ref_max(x, k, s, p)
    gy = rng.integers(-4, 5, y_ref.shape).astype(np.float32)  # integers: the sums are exact
    _, gx_ref = _ref_max(x, k, s, p, gy)
    for dtype in (np.float32, BF16):
        xv = x.astype(dtype)  # bf16: the reference sees the same (rounded) values
        if dtype is BF16:
            y_ref, gx_ref = _ref_max(xv.astype(np.float32), k, s, p, gy)
        xb = _blocked(xv, block, dtype)
        yb = _core.max_pool2d_blocked(xb, list(_pair(k)), list(_pair(s)), list(_pair(p)))
        assert yb.dtype == xb.dtype and yb.shape[:2] == xb.shape[:2] and yb.shape[4] == xb.shape[4]
        _assert_same_values(from_blocked(yb, c), y_ref)
        assert not yb.astype(np.float32)[from_blocked_mask(yb.shape, c)].any(), "padded channels must stay 0"
        gyb = to_blocked(gy, block=xb.shape[4])
        gxb = _core.max_pool2d_blocked_backward(gyb, xb, list(_pair(k)), list(_pair(s)), list(_pair(p)))
        assert gxb.dtype == np.float32 and gxb.shape == xb.shape
        np.testing.assert_array_equal(from_blocked(gxb, c), gx_ref.astype(np.float32))
        assert not gxb[from_blocked_mask(gxb.shape, c)].any()


def from_blocked_mask(shape, c):
    """True at the padded channels of a blocked shape."""
    n, cb, h, w, bc = shape
    ch = np.arange(cb)[:, None] * bc + np.arange(bc)[None, :]
    return np.broadcast_to((ch >= c)[None, :, None, None, :], shape)


def test_resnet_max_pool_shape(rng):
    x = np.maximum(rng.standard_normal((2, 64, 112, 112)).astype(np.float32), 0)
    y_ref, _ = _ref_max(x, 3, 2, 1)
    yb = _core.max_pool2d_blocked(to_blocked(x), 3, 2, 1)
    assert yb.shape == (2, 1, 56, 56, 64)
    _assert_same_values(from_blocked(yb, 64), y_ref)


def test_zero_padding_is_never_picked():
    # all values negative: a zero from the padding would win if it were read
    x = -np.arange(1, 2 * 8 * 5 * 5 + 1, dtype=np.float32).reshape(2, 8, 5, 5)
    yb = _core.max_pool2d_blocked(to_blocked(x), 3, 1, 1)
    assert (from_blocked(yb, 8) < 0).all()
    _assert_same_values(from_blocked(yb, 8), _ref_max(x, 3, 1, 1)[0])


def test_nan_windows_route_to_the_last_nan():
    # one window: values 1, NaN, 5, NaN → PyTorch outputs NaN and routes to the last NaN
    x = np.array([1, np.nan, 5, np.nan], np.float32).reshape(1, 1, 2, 2)
    xb = to_blocked(x, block=16)
    assert np.isnan(from_blocked(_core.max_pool2d_blocked(xb, 2, 2, 0), 1)).all()
    gx = from_blocked(_core.max_pool2d_blocked_backward(np.ones((1, 1, 1, 1, 16), np.float32), xb, 2, 2, 0), 1)
    np.testing.assert_array_equal(gx.ravel(), [0, 0, 0, 1])
    _, ref = _ref_max(x, 2, 2, 0, np.ones((1, 1, 1, 1), np.float32))
    np.testing.assert_array_equal(gx, ref)


def test_all_minus_inf_window_routes_to_its_first_position():
    x = np.full((1, 1, 3, 3), -np.inf, np.float32)
    xb = to_blocked(x, block=4)
    gx = from_blocked(_core.max_pool2d_blocked_backward(np.ones((1, 1, 2, 2, 4), np.float32), xb, 2, 1, 0), 1)
    _, ref = _ref_max(x, 2, 1, 0, np.ones((1, 1, 2, 2), np.float32))
    np.testing.assert_array_equal(gx, ref)


# --- global average pooling --------------------------------------------------------------------

AVG_CASES = [(1, 3, 7, 7, None), (3, 70, 5, 3, None), (0, 16, 4, 4, None), (2, 2048, 7, 7, None),
             (1, 100, 1, 1, 100), (2, 36, 3, 5, 36), (1, 12, 56, 56, 12), (2, 20, 9, 2, 8)]


def _avg_bound(x, bf16):
    """|y − mean| for a float32 sequential sum of hw terms and one division (and a bf16 rounding)."""
    hw = x.shape[2] * x.shape[3]
    f32 = (hw + 1) * 2.0 ** -24 * np.abs(x.astype(np.float64)).mean(axis=(2, 3))
    if not bf16:
        return f32
    return f32 + 2.0 ** -8 * (np.abs(x.astype(np.float64).mean(axis=(2, 3))) + f32)


@pytest.mark.parametrize("case", AVG_CASES, ids=["n{}c{}h{}w{}b{}".format(*c) for c in AVG_CASES])
def test_global_avg_pool_matches_pytorch(isa, case, rng):
    n, c, h, w, block = case
    x = (rng.standard_normal((n, c, h, w)) * 4 + 1).astype(np.float32)
    for dtype in (np.float32, BF16):
        xv = x.astype(dtype).astype(np.float32)
        ref = F.adaptive_avg_pool2d(torch.from_numpy(xv.astype(np.float64)), 1).reshape(n, c).numpy()
        xb = _blocked(xv, block, dtype)
        y = _core.global_avg_pool_blocked(xb, c)
        assert y.dtype == xb.dtype and y.shape == (n, c)
        err = np.abs(y.astype(np.float64) - ref)
        assert (err <= _avg_bound(xv, dtype is BF16)).all(), f"{dtype}: error {err.max() if err.size else 0}"
        gy = rng.standard_normal((n, c)).astype(np.float32)
        gxb = _core.global_avg_pool_blocked_backward(gy, xb.shape)
        assert gxb.dtype == np.float32 and gxb.shape == xb.shape
        want = np.broadcast_to((gy / np.float32(h * w))[:, :, None, None], (n, c, h, w))
        np.testing.assert_array_equal(from_blocked(gxb, c), want)
        assert not gxb[from_blocked_mask(gxb.shape, c)].any()


def test_global_avg_pool_backward_matches_pytorch_autograd(rng):
    x = rng.standard_normal((2, 9, 5, 3))
    xt = torch.from_numpy(x).requires_grad_()
    gy = rng.standard_normal((2, 9)).astype(np.float32)
    F.adaptive_avg_pool2d(xt, 1).reshape(2, 9).backward(torch.from_numpy(gy.astype(np.float64)))
    gxb = _core.global_avg_pool_blocked_backward(gy, (2, 3, 5, 3, 4))
    np.testing.assert_allclose(from_blocked(gxb, 9), xt.grad.numpy(), rtol=2.0 ** -23, atol=0)


# --- every ISA and thread count gives the same bits ----------------------------------------------


def _all_outputs(xf, xh, k, s, p, gy, gyc, c):
    out = [_core.max_pool2d_blocked(xf, k, s, p), _core.max_pool2d_blocked(xh, k, s, p),
           _core.max_pool2d_blocked_backward(gy, xf, k, s, p), _core.max_pool2d_blocked_backward(gy, xh, k, s, p),
           _core.global_avg_pool_blocked(xf, c), _core.global_avg_pool_blocked(xh, c),
           _core.global_avg_pool_blocked_backward(gyc, xf.shape)]
    return [np.ascontiguousarray(o).view(np.uint8) for o in out]


@pytest.mark.parametrize("block", [4, 12, 16, 36, 64, 80])
def test_every_isa_gives_the_scalar_bits(isa, block, rng):
    n, c, h, w = 2, block * 2 - 1, 9, 11
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    x[rng.random(x.shape) < 0.2] = 0.0
    x[rng.random(x.shape) < 0.1] = -0.0
    xs = x.copy()
    u = rng.random(x.shape)
    xs[u < 0.02] = np.nan
    # NaNs with other payloads: the maximum copies the bits of the NaN it picks
    xs.view(np.uint32)[u > 0.99] = 0x7FC01234
    xs.view(np.uint32)[(u > 0.985) & (u <= 0.99)] = 0xFF800001  # a signalling one
    for values, avg in ((x, True), (xs, False)):
        xf = to_blocked(values, block=block)
        with np.errstate(invalid="ignore"):  # NaN payloads cast to bfloat16
            xh = to_blocked(values.astype(BF16), block=block)
        for k, s, p in ((3, 2, 1), (2, 1, 1), (3, 1, 0)):
            oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
            gy = rng.standard_normal((n, xf.shape[1], oh, ow, block)).astype(np.float32)
            gyc = rng.standard_normal((n, c)).astype(np.float32)
            brgemm.set_isa("scalar")
            want = _all_outputs(xf, xh, k, s, p, gy, gyc, c)
            brgemm.set_isa(isa)
            got = _all_outputs(xf, xh, k, s, p, gy, gyc, c)
            names = ["max f32", "max bf16", "max backward f32", "max backward bf16", "avg f32", "avg bf16",
                     "avg backward"]
            for name, a, b in zip(names, got, want):
                if avg or not name.startswith("avg"):  # sums of NaNs: their payload is the hardware's
                    assert np.array_equal(a, b), f"{isa}: {name} differs from the scalar twin (k={k}, s={s}, p={p})"


def test_thread_count_changes_no_bit(threads_restored, rng):
    x = rng.standard_normal((5, 40, 33, 31)).astype(np.float32)
    xb = to_blocked(x)
    gy = rng.standard_normal((5, xb.shape[1], 17, 16, xb.shape[4])).astype(np.float32)
    runs = []
    for t in (1, 2, 3):
        brgemm.set_num_threads(t)
        runs.append([_core.max_pool2d_blocked(xb, 3, 2, 1), _core.max_pool2d_blocked_backward(gy, xb, 3, 2, 1),
                     _core.global_avg_pool_blocked(xb, 40)])
    for r in runs[1:]:
        for a, b in zip(r, runs[0]):
            np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


def test_out_arrays_are_filled(rng):
    x = to_blocked(rng.standard_normal((2, 16, 6, 6)).astype(np.float32))
    y = np.full((2, 1, 3, 3, 16), np.nan, np.float32)
    assert _core.max_pool2d_blocked(x, 3, 2, 1, out=y) is y
    np.testing.assert_array_equal(y, _core.max_pool2d_blocked(x, 3, 2, 1))
    gx = np.full(x.shape, np.nan, np.float32)  # every element written, those no window reads too
    _core.max_pool2d_blocked_backward(np.ones((2, 1, 2, 2, 16), np.float32), x, 2, 3, 0, out=gx)
    assert not np.isnan(gx).any()
    m = np.empty((2, 16), np.float32)
    assert _core.global_avg_pool_blocked(x, 16, out=m) is m


# --- uint8 (quantized) max pooling and dequantized mean --------------------------------------------

U8 = np.uint8


def _fill_u8(rng, shape, kind):
    if kind == "random":
        return rng.integers(0, 256, shape, dtype=U8)
    if kind == "ties":  # a few small values, zero most often (a ReLU's zero point)
        return np.maximum(rng.integers(-3, 3, shape), 0).astype(U8)
    return rng.choice(np.array([0, 255], U8), shape)  # "extremes"


def _ref_max_u8(x, k, s, p):
    """max_pool2d of (N, C, H, W) integers in numpy: padding is -1, below every uint8, so never picked."""
    (kh, kw), (sh, sw), (ph, pw) = _pair(k), _pair(s), _pair(p)
    n, c, h, w = x.shape
    xp = np.full((n, c, h + 2 * ph, w + 2 * pw), -1, np.int16)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    y = np.full((n, c, oh, ow), -1, np.int16)
    for i in range(kh):
        for j in range(kw):
            y = np.maximum(y, xp[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw])
    assert (y >= 0).all() or y.size == 0, "every window holds an input value"
    return y.astype(U8)


@pytest.mark.parametrize("kind", ["random", "ties", "extremes"])
@pytest.mark.parametrize("case", MAX_CASES, ids=CASE_IDS)
def test_u8_max_pool_matches_numpy(isa, case, kind, rng):
    n, c, h, w, k, s, p, block = case
    x = _fill_u8(rng, (n, c, h, w), kind)
    xb = to_blocked(x, block=block or block_size(c))
    yb = _core.max_pool2d_blocked(xb, list(_pair(k)), list(_pair(s)), list(_pair(p)))
    assert yb.dtype == U8 and yb.shape[:2] == xb.shape[:2] and yb.shape[4] == xb.shape[4]
    np.testing.assert_array_equal(from_blocked(yb, c), _ref_max_u8(x, k, s, p))
    assert not yb[from_blocked_mask(yb.shape, c)].any(), "padded channels must stay 0"


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")  # deprecated, still the peer to compare with
@pytest.mark.parametrize("scale, zero_point", [(0.05, 0), (0.0173, 128), (2.5, 255), (1e-3, 37)])
def test_torch_u8_max_pool_is_the_quantized_max_pool(scale, zero_point, rng):
    """quantize(max_pool(dequantize(x))) with the input's qparams, in float64 through PyTorch."""
    x = rng.integers(0, 256, (2, 40, 13, 11), dtype=U8)
    xb = torch.from_numpy(to_blocked(x, block=16))
    y = ops.max_pool2d_blocked(xb, [3, 3], [2, 2], [1, 1])
    assert y.dtype == torch.uint8 and not y.requires_grad
    real = scale * (torch.from_numpy(x).double() - zero_point)
    want = torch.clamp(torch.round(F.max_pool2d(real, 3, 2, 1) / scale) + zero_point, 0, 255).to(torch.uint8)
    np.testing.assert_array_equal(from_blocked(y.numpy(), 40), want.numpy())
    if not hasattr(torch, "quantize_per_tensor"):
        return
    # PyTorch's own quantized max pooling agrees
    q = torch.quantize_per_tensor(real.float(), scale, zero_point, torch.quint8)
    np.testing.assert_array_equal(from_blocked(y.numpy(), 40), F.max_pool2d(q, 3, 2, 1).int_repr().numpy())


def test_u8_max_pool_resnet_shape(rng):
    x = rng.integers(0, 256, (2, 64, 112, 112), dtype=U8)
    yb = _core.max_pool2d_blocked(to_blocked(x, block=64), 3, 2, 1)
    assert yb.shape == (2, 1, 56, 56, 64)
    np.testing.assert_array_equal(from_blocked(yb, 64), _ref_max_u8(x, 3, 2, 1))


def _twin_mean_u8(x, scale, zero_point):
    """The kernels' formula in numpy float32: exact sums, one division, one product."""
    count = x.shape[2] * x.shape[3]
    d = (x.astype(np.int64).sum(axis=(2, 3)) - count * zero_point).astype(np.float32)
    return np.float32(scale) * (d / np.float32(count))


def _mean_u8_bound(ref):
    """|y − ref| after two float32 roundings (relative 2⁻²⁴ each), plus a subnormal's half ulp each."""
    return (2 * 2.0 ** -24 + 2.0 ** -48) * np.abs(ref) + 2.0 ** -149


@pytest.mark.parametrize("scale, zero_point", [(1.0, 0), (0.0173, 128), (3.1e-3, 255), (7.5, 3), (1e-40, 200)])
@pytest.mark.parametrize("case", AVG_CASES, ids=["n{}c{}h{}w{}b{}".format(*c) for c in AVG_CASES])
def test_u8_global_avg_pool(isa, case, scale, zero_point, rng):
    n, c, h, w, block = case
    x = rng.integers(0, 256, (n, c, h, w), dtype=U8)
    xb = to_blocked(x, block=block or block_size(c))
    y = _core.global_avg_pool_blocked(xb, c, scale, zero_point)
    assert y.dtype == np.float32 and y.shape == (n, c)
    ref = np.float64(np.float32(scale)) * (x.astype(np.float64).mean(axis=(2, 3)) - zero_point)
    err = np.abs(y.astype(np.float64) - ref)
    assert (err <= _mean_u8_bound(ref)).all(), f"error {err.max() if err.size else 0}"
    np.testing.assert_array_equal(y.view(np.uint32), _twin_mean_u8(x, scale, zero_point).view(np.uint32))
    if scale == 1.0 and zero_point == 0:  # the defaults: plain means
        np.testing.assert_array_equal(_core.global_avg_pool_blocked(xb, c).view(np.uint32), y.view(np.uint32))


def test_u8_mean_of_the_largest_count_is_exact():
    # H·W·255 = 2^24 − 1: the sum and its conversion still exact, one more position is refused
    x = np.full((1, 1, 3, 21931, 4), 255, U8)
    y = _core.global_avg_pool_blocked(x, 4, 1.0, 0)
    np.testing.assert_array_equal(y, np.full((1, 4), 255, np.float32))
    y = _core.global_avg_pool_blocked(x, 3, 0.5, 255)
    np.testing.assert_array_equal(y, np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="input has H·W = 65794"):
        _core.global_avg_pool_blocked(np.zeros((1, 1, 2, 32897, 4), U8), 4)


@pytest.mark.parametrize("block", [1, 3, 4, 5, 12, 16, 31, 33, 36, 64, 66, 80, 129, 300])
def test_every_isa_gives_the_scalar_bits_u8(isa, block, rng):
    n, h, w = 2, 9, 11
    xb = rng.integers(0, 256, (n, 2, h, w, block), dtype=U8)
    xb[rng.random(xb.shape) < 0.3] = 0
    c = block + 1 if block > 1 else 2
    for k, s, p in ((3, 2, 1), (2, 1, 1), (3, 1, 0), ((1, 3), (2, 1), (0, 1))):
        brgemm.set_isa("scalar")
        want = [_core.max_pool2d_blocked(xb, k, s, p), _core.global_avg_pool_blocked(xb, c, 0.0371, 131)]
        brgemm.set_isa(isa)
        # outputs pre-filled with junk: every element written, nothing past the end (guard bands)
        ym = np.full((n + 1,) + want[0].shape[1:], 0xA5, U8)
        ya = np.full((n + 1, c), np.nan, np.float32)
        _core.max_pool2d_blocked(xb, k, s, p, out=ym[:n])
        _core.global_avg_pool_blocked(xb, c, 0.0371, 131, out=ya[:n])
        np.testing.assert_array_equal(ym[:n], want[0], err_msg=f"{isa}: max u8 (k={k}, s={s}, p={p})")
        np.testing.assert_array_equal(ya[:n].view(np.uint32), want[1].view(np.uint32), err_msg=f"{isa}: mean u8")
        assert (ym[n] == 0xA5).all() and np.isnan(ya[n]).all(), f"{isa}: wrote past the output"


def test_u8_thread_count_changes_no_bit(threads_restored, rng):
    xb = rng.integers(0, 256, (5, 3, 33, 31, 16), dtype=U8)
    runs = []
    for t in (1, 2, 3):
        brgemm.set_num_threads(t)
        runs.append([_core.max_pool2d_blocked(xb, 3, 2, 1), _core.global_avg_pool_blocked(xb, 40, 0.01, 9)])
    for r in runs[1:]:
        for a, b in zip(r, runs[0]):
            np.testing.assert_array_equal(a, b)


def test_torch_u8_global_avg_pool(rng):
    x = rng.integers(0, 256, (3, 21, 5, 7), dtype=U8)
    xb = torch.from_numpy(to_blocked(x, block=8))
    y = ops.global_avg_pool_blocked_u8(xb, 21, 0.02, 100)
    assert y.dtype == torch.float32 and y.shape == (3, 21) and not y.requires_grad
    np.testing.assert_array_equal(y.numpy().view(np.uint32), _twin_mean_u8(x, 0.02, 100).view(np.uint32))
    # PyTorch's average of the same dequantized values (float64), within the two roundings
    ref = F.adaptive_avg_pool2d(0.02 * (torch.from_numpy(x).double() - 100), 1).reshape(3, 21).numpy()
    assert (np.abs(y.numpy() - ref) <= _mean_u8_bound(ref) + 1e-9 * np.abs(ref)).all()


def test_torch_u8_ops_on_no_images():
    xb = torch.zeros(0, 2, 5, 5, 16, dtype=torch.uint8)
    assert ops.max_pool2d_blocked(xb, [3, 3], [2, 2], [1, 1]).shape == (0, 2, 3, 3, 16)
    assert ops.global_avg_pool_blocked_u8(xb, 20, 0.5, 0).shape == (0, 20)


# --- the PyTorch operators -----------------------------------------------------------------------


def _blocked_tensor(x, dtype=torch.float32, block=None):
    xb = torch.from_numpy(to_blocked(x.astype(np.float32), block=block or block_size(x.shape[1])))
    return xb.to(dtype).requires_grad_()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_torch_max_pool_autograd(dtype, rng):
    x = np.maximum(rng.integers(-3, 4, (3, 21, 9, 8)), 0).astype(np.float32)  # many ties
    xb = _blocked_tensor(x, dtype)
    y = ops.max_pool2d_blocked(xb, [3, 3], [2, 2], [1, 1])
    assert y.dtype == dtype and y.shape == (3, xb.shape[1], 5, 4, xb.shape[4])
    gy = rng.integers(-4, 5, (3, 21, 5, 4)).astype(np.float32)
    y_ref, gx_ref = _ref_max(x, 3, 2, 1, gy)
    _assert_same_values(from_blocked(y.detach().float().numpy(), 21), y_ref)
    gyb = torch.from_numpy(to_blocked(gy, block=xb.shape[4])).to(dtype)
    y.backward(gyb)
    assert xb.grad.dtype == dtype
    np.testing.assert_array_equal(from_blocked(xb.grad.float().numpy(), 21), gx_ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_torch_global_avg_pool_autograd(dtype, rng):
    x = rng.standard_normal((2, 21, 5, 7)).astype(np.float32)
    xb = _blocked_tensor(x, dtype)
    y = ops.global_avg_pool_blocked(xb, 21)
    assert y.dtype == dtype and y.shape == (2, 21)
    xv = xb.detach().float().numpy()
    ref = F.adaptive_avg_pool2d(torch.from_numpy(from_blocked(xv, 21).astype(np.float64)), 1).reshape(2, 21)
    err = (y.detach().double() - ref).abs().numpy()
    assert (err <= _avg_bound(from_blocked(xv, 21), dtype == torch.bfloat16)).all()
    gy = torch.randn(2, 21)
    y.backward(gy.to(dtype))
    assert xb.grad.dtype == dtype
    want = (gy.to(dtype).float() / 35).to(dtype).float()
    got = torch.from_numpy(from_blocked(xb.grad.float().numpy(), 21))
    torch.testing.assert_close(got, want[:, :, None, None].expand(2, 21, 5, 7), rtol=0, atol=0)


def test_torch_ops_on_no_images():
    xb = torch.zeros(0, 2, 5, 5, 16, requires_grad=True)
    y = ops.max_pool2d_blocked(xb, [3, 3], [2, 2], [1, 1])
    assert y.shape == (0, 2, 3, 3, 16)
    m = ops.global_avg_pool_blocked(xb, 20)
    assert m.shape == (0, 20)
    (y.sum() + m.sum()).backward()
    assert xb.grad.shape == xb.shape


OPCHECK = {
    "max_pool2d_blocked": [(_blocked_tensor(np.random.default_rng(1).standard_normal((2, 5, 9, 7))), [3, 3], [2, 2],
                            [1, 1]),
                           (_blocked_tensor(np.random.default_rng(2).standard_normal((1, 20, 6, 5)), torch.bfloat16),
                            [2, 3], [1, 2], [1, 0])],
    "global_avg_pool_blocked": [(_blocked_tensor(np.random.default_rng(3).standard_normal((3, 17, 4, 5))), 17),
                                (_blocked_tensor(np.random.default_rng(4).standard_normal((2, 6, 3, 3)),
                                                 torch.bfloat16), 6)],
    "global_avg_pool_blocked_u8": [(torch.randint(0, 256, (2, 2, 4, 3, 12), dtype=torch.uint8), 20, 0.03, 128)],
}
OPCHECK["max_pool2d_blocked"].append((torch.randint(0, 256, (2, 3, 7, 9, 8), dtype=torch.uint8), [3, 3], [2, 2],
                                      [1, 1]))


@pytest.mark.parametrize("name,case", [(n, i) for n, cases in OPCHECK.items() for i in range(len(cases))])
def test_opcheck(name, case):
    result = torch.library.opcheck(getattr(ops, name).default, OPCHECK[name][case])
    assert all(v == "SUCCESS" for v in result.values()), result


def test_opcheck_backward_operators():
    xb = _blocked_tensor(np.random.default_rng(5).standard_normal((2, 5, 9, 7))).detach()
    y = ops.max_pool2d_blocked(xb, [3, 3], [2, 2], [1, 1])
    torch.library.opcheck(ops.max_pool2d_blocked_backward.default, (torch.randn_like(y), xb, [3, 3], [2, 2], [1, 1]))
    torch.library.opcheck(ops.global_avg_pool_blocked_backward.default, (torch.randn(2, 5), list(xb.shape)))


@pytest.mark.skipif(bool(os.environ.get("BRGEMM_SANITIZED")),
                    reason="torch.compile is tested on the plain build, not under ASan")
def test_torch_compile(rng):
    def head(t):
        return ops.global_avg_pool_blocked(ops.max_pool2d_blocked(t, [3, 3], [2, 2], [1, 1]).relu(), 21)

    x = rng.standard_normal((2, 21, 12, 10)).astype(np.float32)
    eager_in, compiled_in = _blocked_tensor(x), _blocked_tensor(x)
    compiled = torch.compile(head, fullgraph=True)
    gy = torch.randn(2, 21)
    y_eager, y_compiled = head(eager_in), compiled(compiled_in)
    torch.testing.assert_close(y_compiled, y_eager, rtol=0, atol=0)
    y_eager.backward(gy)
    y_compiled.backward(gy)
    torch.testing.assert_close(compiled_in.grad, eager_in.grad, rtol=0, atol=0)


# --- bad arguments -------------------------------------------------------------------------------


def _good():
    return np.zeros((2, 1, 6, 6, 16), np.float32)


def _good_u8():
    return np.zeros((2, 1, 6, 6, 16), np.uint8)


@pytest.mark.parametrize("call, error, words", [
    (lambda: _core.max_pool2d_blocked(np.zeros((2, 1, 6, 6, 16)), 3, 2, 1), TypeError, "input"),
    (lambda: _core.max_pool2d_blocked(np.zeros((2, 6, 6, 16), np.float32), 3, 2, 1), ValueError, "input"),
    (lambda: _core.max_pool2d_blocked(_good()[:, :, :, ::2], 3, 2, 1), ValueError, "input must be C-contiguous"),
    (lambda: _core.max_pool2d_blocked([[1.0]], 3, 2, 1), TypeError, "input"),
    (lambda: _core.max_pool2d_blocked(_good(), 0, 2, 0), ValueError, "kernel_size"),
    (lambda: _core.max_pool2d_blocked(_good(), [3, 3, 3], 2, 0), ValueError, "kernel_size"),
    (lambda: _core.max_pool2d_blocked(_good(), "3", 2, 0), TypeError, "kernel_size"),
    (lambda: _core.max_pool2d_blocked(_good(), 9, 1, 1), ValueError, "kernel_size (9, 9) is larger than the padded"),
    (lambda: _core.max_pool2d_blocked(_good(), 3, 0, 1), ValueError, "stride"),
    (lambda: _core.max_pool2d_blocked(_good(), 3, 2, -1), ValueError, "padding"),
    (lambda: _core.max_pool2d_blocked(_good(), 3, 2, 2), ValueError, "padding must be at most half of kernel_size"),
    (lambda: _core.max_pool2d_blocked(_good(), 2 ** 63 - 1, 1, 2 ** 62), ValueError, "kernel_size"),
    (lambda: _core.max_pool2d_blocked(_good(), 2 ** 64, 1, 0), ValueError, "kernel_size"),
    (lambda: _core.max_pool2d_blocked(_good(), [2 ** 16, 2 ** 16], 1, 0), ValueError, "kernel_size .* too large"),
    (lambda: _core.max_pool2d_blocked(np.zeros((1, 1, 0, 4, 4), np.float32), 1, 1, 0), ValueError, "input"),
    (lambda: _core.max_pool2d_blocked(_good(), 3, 2, 1, out=np.zeros((2, 1, 3, 3, 16))), TypeError, "out"),
    (lambda: _core.max_pool2d_blocked(_good(), 3, 2, 1, out=np.zeros((2, 1, 3, 4, 16), np.float32)), ValueError,
     "out"),
    (lambda: _core.max_pool2d_blocked_backward(np.zeros((2, 1, 3, 4, 16), np.float32), _good(), 3, 2, 1), ValueError,
     "grad_output"),
    (lambda: _core.max_pool2d_blocked_backward(np.zeros((2, 1, 3, 3, 16)), _good(), 3, 2, 1), TypeError,
     "grad_output"),
    (lambda: _core.global_avg_pool_blocked(_good(), 17), ValueError, "channels"),
    (lambda: _core.global_avg_pool_blocked(_good(), 0), ValueError, "channels"),
    (lambda: _core.global_avg_pool_blocked(_good(), 2.0), TypeError, "channels"),
    (lambda: _core.global_avg_pool_blocked(np.zeros((2, 1, 0, 3, 4), np.float32), 4), ValueError, "input"),
    (lambda: _core.global_avg_pool_blocked_backward(np.zeros((2, 16), np.float32), (2, 1, 6, 6)), ValueError,
     "input_shape"),
    (lambda: _core.global_avg_pool_blocked_backward(np.zeros((2, 16), np.float32), (2, 1, 2 ** 62, 4, 16)),
     ValueError, "input_shape"),
    (lambda: _core.global_avg_pool_blocked_backward(np.zeros((2, 16), np.float32), (3, 1, 6, 6, 16)), ValueError,
     "grad_output"),
    (lambda: _core.global_avg_pool_blocked_backward(np.zeros((2, 17), np.float32), (2, 1, 6, 6, 16)), ValueError,
     "channels"),
    (lambda: _core.global_avg_pool_blocked_backward(np.zeros((2, 16)), (2, 1, 6, 6, 16)), TypeError,
     "grad_output"),
    # uint8
    (lambda: _core.max_pool2d_blocked(_good_u8().astype(np.int8), 3, 2, 1), TypeError, "input"),
    (lambda: _core.max_pool2d_blocked(_good_u8()[:, :, :, ::2], 3, 2, 1), ValueError, "input must be C-contiguous"),
    (lambda: _core.max_pool2d_blocked(_good_u8(), 3, 2, 1, out=np.zeros((2, 1, 3, 3, 16), np.float32)), TypeError,
     "out must have dtype uint8"),
    (lambda: _core.max_pool2d_blocked_backward(np.zeros((2, 1, 3, 3, 16), np.float32), _good_u8(), 3, 2, 1),
     TypeError, "input"),
    (lambda: _core.global_avg_pool_blocked(_good_u8(), 16, 1.0, 256), ValueError, "zero_point must be in"),
    (lambda: _core.global_avg_pool_blocked(_good_u8(), 16, 1.0, -1), ValueError, "zero_point must be in"),
    (lambda: _core.global_avg_pool_blocked(_good_u8(), 16, 1.0, 2 ** 64), ValueError, "zero_point"),
    (lambda: _core.global_avg_pool_blocked(_good_u8(), 16, 1.0, 3.0), TypeError, "zero_point"),
    (lambda: _core.global_avg_pool_blocked(_good_u8(), 16, 0.0, 0), ValueError, "scale must be positive"),
    (lambda: _core.global_avg_pool_blocked(_good_u8(), 16, -0.5, 0), ValueError, "scale must be positive"),
    (lambda: _core.global_avg_pool_blocked(_good_u8(), 16, float("nan"), 0), ValueError, "scale"),
    (lambda: _core.global_avg_pool_blocked(_good_u8(), 16, float("inf"), 0), ValueError, "scale"),
    (lambda: _core.global_avg_pool_blocked(_good_u8(), 16, 1e39, 0), ValueError, "scale .* as a float32"),
    (lambda: _core.global_avg_pool_blocked(_good_u8(), 16, 1e-50, 0), ValueError, "scale .* as a float32"),
    (lambda: _core.global_avg_pool_blocked(_good_u8(), 16, "0.5", 0), TypeError, "scale must be a real number"),
    (lambda: _core.global_avg_pool_blocked(_good_u8(), 16, 1 + 2j, 0), TypeError, "scale must be a real number"),
    (lambda: _core.global_avg_pool_blocked(_good(), 16, 0.5, 0), ValueError, "scale and zero_point"),
    (lambda: _core.global_avg_pool_blocked(_good(), 16, 1.0, 3), ValueError, "scale and zero_point"),
    (lambda: _core.global_avg_pool_blocked(_good_u8(), 16, out=np.zeros((2, 16), np.uint8)), TypeError,
     "out must have dtype float32"),
    (lambda: _core.global_avg_pool_blocked(np.zeros((1, 1, 300, 300, 4), np.uint8), 4), ValueError,
     "input has H·W = 90000 .* at most 65793"),
])
def test_bad_arguments_name_the_argument(call, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_out_must_not_alias_the_input():
    x = np.zeros((1, 1, 3, 3, 16), np.float32)
    with pytest.raises(ValueError, match="out"):
        _core.max_pool2d_blocked(x, 1, 1, 0, out=x)


@pytest.mark.parametrize("call, error, words", [
    (lambda: ops.max_pool2d_blocked(torch.zeros(2, 16, 6, 6), [3, 3], [2, 2], [1, 1]), ValueError, "input"),
    (lambda: ops.max_pool2d_blocked(torch.zeros(2, 1, 6, 6, 16, dtype=torch.float64), [3, 3], [2, 2], [1, 1]),
     TypeError, "input"),
    (lambda: ops.max_pool2d_blocked(torch.zeros(2, 1, 6, 6, 16), [3, 3], [2, 2], [2, 2]), ValueError, "padding"),
    (lambda: ops.max_pool2d_blocked(torch.zeros(2, 1, 6, 6, 16), [7, 7], [1, 1], [0, 0]), ValueError, "kernel_size"),
    (lambda: ops.global_avg_pool_blocked(torch.zeros(2, 1, 6, 6, 16), 17), ValueError, "channels"),
    (lambda: ops.global_avg_pool_blocked(torch.zeros(2, 1, 6, 6, 16, dtype=torch.int32), 16), TypeError, "input"),
    (lambda: ops.max_pool2d_blocked(torch.zeros(2, 1, 6, 6, 16, dtype=torch.int8), [3, 3], [2, 2], [1, 1]),
     TypeError, "input"),
    (lambda: ops.global_avg_pool_blocked(torch.zeros(2, 1, 6, 6, 16, dtype=torch.uint8), 16), TypeError, "input"),
    (lambda: ops.global_avg_pool_blocked_u8(torch.zeros(2, 1, 6, 6, 16), 16, 1.0, 0), TypeError, "input"),
    (lambda: ops.global_avg_pool_blocked_u8(torch.zeros(2, 6, 6, 16, dtype=torch.uint8), 16, 1.0, 0), ValueError,
     "input"),
    (lambda: ops.global_avg_pool_blocked_u8(torch.zeros(2, 1, 6, 6, 16, dtype=torch.uint8), 17, 1.0, 0), ValueError,
     "channels"),
    (lambda: ops.global_avg_pool_blocked_u8(torch.zeros(2, 1, 6, 6, 16, dtype=torch.uint8), 16, 0.0, 0), ValueError,
     "scale"),
    (lambda: ops.global_avg_pool_blocked_u8(torch.zeros(2, 1, 6, 6, 16, dtype=torch.uint8), 16, 1.0, 256),
     ValueError, "zero_point"),
])
def test_torch_ops_bad_arguments(call, error, words):
    with pytest.raises(error, match=words):
        call()


def test_torch_ops_take_non_contiguous_tensors(rng):
    x = torch.from_numpy(to_blocked(rng.standard_normal((2, 16, 6, 8)).astype(np.float32)))
    strided = x[:, :, :, ::2]
    torch.testing.assert_close(ops.max_pool2d_blocked(strided, [3, 3], [2, 2], [1, 1]),
                               ops.max_pool2d_blocked(strided.contiguous(), [3, 3], [2, 2], [1, 1]), rtol=0, atol=0)
