"""Winograd F(2×2, 3×3), F(4×4, 3×3) and F(6×6, 3×3) convolution (layers/winograd.cpp, brgemm.nn.Conv2d
algorithm="winograd"): forward and backward data against float64 references (a direct
convolution, and the same Winograd algorithm in float64 for the error bound), the direct layer,
odd sizes and paddings, channels that are not a multiple of the block, bias / activation /
residual, every ISA, and every ISA giving the scalar twin's bits.

The tolerance is derived, not tuned. The float32 algorithm computes, per output and tile,
  y = Aᵀ [ Σ_c (G g_c Gᵀ) ⊙ (Bᵀ d_c B) ] A
with: the filter transform in float64 rounded once (≤ eps·|G||g||Gᵀ|); the input transform as two
passes of sums of at most a = m + 2 terms, each term a product by a constant (≤ 2a·eps relative
to |Bᵀ||d||B|, first order); the BRGEMM's sum over C channels (≤ C·eps·Σ|U||V|); the output
transform as two passes of at most a terms (≤ 2a·eps relative to |Aᵀ||M||A|). Errors pass
through the later linear maps with at most their coefficients' magnitudes, so to first order
  |y − y_exact| ≤ (C + 4a + 1)·eps · W_abs,
  W_abs = Aᵀ_abs [ Σ_c (G_abs |g_c| G_absᵀ) ⊙ (Bᵀ_abs |d_c| B_abs) ] A_abs,
i.e. the same algorithm in float64 on |x|, |w| with every matrix entry replaced by its
magnitude (computed exactly below, per output). eps = 2⁻²³ (twice float32's unit roundoff)
covers the second-order terms. Bias and residual add two more roundings of the result. W_abs
grows with the transforms' coefficients (F(4×4)'s 4, 5, 8 against F(2×2)'s ±1): that is the
Winograd error growth, and it is why the bound is per algorithm and not the direct one's.
"""

import numpy as np
import pytest

import brgemm
from brgemm import _core
from brgemm.nn import Conv2d

EPS = 2.0 ** -23

BT = {2: np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64),
      4: np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                   [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64)}
G = {2: np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]),
     4: np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])}
BT[6] = np.array([[1, 0, -21 / 4, 0, 21 / 4, 0, -1, 0], [0, 1, 1, -17 / 4, -17 / 4, 1, 1, 0],
                  [0, -1, 1, 17 / 4, -17 / 4, -1, 1, 0], [0, 1 / 2, 1 / 4, -5 / 2, -5 / 4, 2, 1, 0],
                  [0, -1 / 2, 1 / 4, 5 / 2, -5 / 4, -2, 1, 0], [0, 2, 4, -5 / 2, -5, 1 / 2, 1, 0],
                  [0, -2, 4, 5 / 2, -5, -1 / 2, 1, 0], [0, -1, 0, 21 / 4, 0, -21 / 4, 0, 1]])
G[6] = np.array([[1, 0, 0], [-2 / 9, -2 / 9, -2 / 9], [-2 / 9, 2 / 9, -2 / 9], [1 / 90, 1 / 45, 2 / 45],
                 [1 / 90, -1 / 45, 2 / 45], [32 / 45, 16 / 45, 8 / 45], [32 / 45, -16 / 45, 8 / 45], [0, 0, 1]])
AT = {2: np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64),
      4: np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], np.float64),
      6: np.array([[1, 1, 1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 1 / 2, -1 / 2, 0], [0, 1, 1, 4, 4, 1 / 4, 1 / 4, 0],
                   [0, 1, -1, 8, -8, 1 / 8, -1 / 8, 0], [0, 1, 1, 16, 16, 1 / 16, 1 / 16, 0],
                   [0, 1, -1, 32, -32, 1 / 32, -1 / 32, 1]])}

# (C, K, H, W, padding (top, bottom, left, right))
CASES = [
    (3, 5, 5, 5, (1, 1, 1, 1)),       # C, K < a block, 5 × 5
    (17, 17, 7, 9, (0, 0, 0, 0)),     # one lane past a block, no padding, 5 × 7 out
    (40, 24, 13, 14, (2, 2, 2, 2)),   # padding 2, 17 × 18 out
    (16, 33, 17, 5, (1, 2, 0, 1)),    # asymmetric padding, K one past two blocks
    (20, 16, 9, 13, (2, 0, 1, 2)),    # asymmetric, padding 2 on one side
    (64, 40, 14, 14, (1, 1, 1, 1)),   # a ResNet-like 64-wide block
    (8, 6, 6, 5, (3, 0, 0, 3)),       # padding 3: backward data's 2 − p is −1 (its patches start inside)
    (5, 6, 1, 2, (1, 1, 1, 1)),       # a 1 × 2 image: one partial tile
    (256, 256, 8, 8, (1, 1, 1, 1)),   # large filters, few tiles: at F(6×6) (16.8 MB of them) the
                                      # threads share each tile group
]
IDS = ["c3k5", "c17", "c40p2", "asym", "asym2", "c64", "p3", "1x2", "shared"]


def conv64(x, w, pad, oh, ow):
    """The direct convolution in float64 (x padded by pad; negative padding crops)."""
    pt, pb, pl, pr = pad
    n, c, h, wd = x.shape
    xp = np.zeros((n, c, oh + 2, ow + 2))
    r0, c0 = max(0, -pt), max(0, -pl)
    hh, ww = min(h - r0, oh + 2 - max(0, pt)), min(wd - c0, ow + 2 - max(0, pl))
    xp[:, :, max(0, pt):max(0, pt) + hh, max(0, pl):max(0, pl) + ww] = x[:, :, r0:r0 + hh, c0:c0 + ww]
    y = np.zeros((n, w.shape[0], oh, ow))
    for r in range(3):
        for s in range(3):
            y += np.einsum("nchw,kc->nkhw", xp[:, :, r:r + oh, s:s + ow], w[:, :, r, s])
    return y


def winograd64(x, w, m, pad, oh, ow, absolute=False):
    """F(m×m, 3×3) in float64, tiles as the layer cuts them; absolute: every matrix entry by its
    magnitude (with |x|, |w|: W_abs of the module docstring)."""
    a = m + 2
    bt, g, at = (np.abs(t) if absolute else t for t in (BT[m], G[m], AT[m]))
    pt, _, pl, _ = pad
    n, c, h, wd = x.shape
    th, tw = -(-oh // m), -(-ow // m)
    xp = np.zeros((n, c, th * m + 2, tw * m + 2))
    for i in range(th * m + 2):  # input row i − pt, column j − pl
        if 0 <= i - pt < h:
            lo, hi = max(0, pl), min(tw * m + 2, wd + pl)
            if lo < hi:
                xp[:, :, i, lo:hi] = x[:, :, i - pt, lo - pl:hi - pl]
    rows = (np.arange(th) * m)[:, None] + np.arange(a)
    cols = (np.arange(tw) * m)[:, None] + np.arange(a)
    d = xp[:, :, rows[:, None, :, None], cols[None, :, None, :]]  # (n, c, th, tw, a, a)
    v = np.einsum("ik,nctukl,jl->nctuij", bt, d, bt)
    u = np.einsum("ir,kcrs,js->kcij", g, w, g)
    mm = np.einsum("kcij,nctuij->nktuij", u, v)
    y = np.einsum("pi,nktuij,qj->nktupq", at, mm, at)
    return y.transpose(0, 1, 2, 4, 3, 5).reshape(n, w.shape[0], th * m, tw * m)[:, :, :oh, :ow]


def bound(x, w, m, pad, oh, ow, extra=0.0):
    c = x.shape[1]
    return (c + 4 * (m + 2) + 1) * EPS * winograd64(np.abs(x), np.abs(w), m, pad, oh, ow, absolute=True) + extra


def assert_within(got, ref, tol, what):
    err = np.abs(np.asarray(got, np.float64) - ref)
    worst = np.unravel_index(np.argmax(err - tol), err.shape)
    assert np.all(err <= tol), f"{what}: error {err[worst]:.3g} > bound {tol[worst]:.3g} at {worst}"


def out_size(h, w, pad):
    return h + pad[0] + pad[1] - 2, w + pad[2] + pad[3] - 2


def test_winograd64_is_the_convolution(rng):
    """The float64 reference of the bound is itself exact (up to float64 rounding)."""
    x = rng.standard_normal((2, 5, 9, 7))
    w = rng.standard_normal((3, 5, 3, 3))
    for pad in [(1, 1, 1, 1), (0, 2, 2, 0), (-1, 2, 1, -1)]:
        oh, ow = out_size(9, 7, pad)
        for m in (2, 4, 6):
            np.testing.assert_allclose(winograd64(x, w, m, pad, oh, ow), conv64(x, w, pad, oh, ow), atol=1e-10)


@pytest.mark.parametrize("lanes", [4, 12, 16, 24, 64])
@pytest.mark.parametrize("act", ["none", "relu", "relu6"])
@pytest.mark.parametrize("m", [2, 4, 6])
def test_transforms_twin_bits(rng, m, act, lanes):
    """The transforms alone: every ISA gives the scalar twin's bits (whole vectors and the lanes
    past them), NaN stays NaN through the activation, and the values are the float64 ones
    within the transforms' own bound (2a·eps relative to the absolute-matrix sums)."""
    a = m + 2
    d = rng.standard_normal((a, a, lanes)).astype(np.float32) * 10
    mx = rng.standard_normal((a, a, lanes)).astype(np.float32) * 10
    mx[0, 0, 1] = np.nan
    bias = rng.standard_normal(lanes).astype(np.float32)
    outs = {lv: _core._winograd_transforms(lv, m, d, mx, bias, act) for lv in brgemm.available_isas()}
    for lv, (v, y) in outs.items():
        assert np.array_equal(v.view(np.uint32), outs["scalar"][0].view(np.uint32)), f"{lv}: input transform"
        assert np.array_equal(y.view(np.uint32), outs["scalar"][1].view(np.uint32)), f"{lv}: output transform"
    v, y = outs["scalar"]
    bt, at = BT[m], AT[m]
    d64, m64 = d.astype(np.float64), np.nan_to_num(mx.astype(np.float64), nan=0.0)
    v_ref = np.einsum("ik,klc,jl->ijc", bt, d64, bt)
    v_abs = np.einsum("ik,klc,jl->ijc", np.abs(bt), np.abs(d64), np.abs(bt))
    assert_within(v, v_ref, 2 * a * EPS * v_abs, "input transform")
    y_pre = np.einsum("pi,ijc,qj->pqc", at, m64, at) + bias
    y_abs = np.einsum("pi,ijc,qj->pqc", np.abs(at), np.abs(m64), np.abs(at)) + np.abs(bias)
    # M's NaN reaches the outputs whose rows and columns of Aᵀ use point 0 (the transforms skip
    # zero coefficients: no 0·NaN).
    finite = np.ones(y.shape, bool)
    finite[:, :, 1] = ~np.outer(at[:, 0] != 0, at[:, 0] != 0)
    assert np.all(np.isnan(y[~finite])), "NaN stays NaN"
    act_f = {"none": lambda t: t, "relu": lambda t: np.maximum(t, 0), "relu6": lambda t: np.clip(t, 0, 6)}[act]
    tol = (2 * a + 1) * EPS * y_abs
    assert_within(np.where(finite, y, 0), np.where(finite, act_f(y_pre), 0), np.where(finite, tol, 0),
                  "output transform")


@pytest.mark.parametrize("m", [2, 4, 6])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_and_backward_data(isa, rng, case, m):
    c, k, h, w, pad = case
    conv = Conv2d(c, k, 3, padding=pad, algorithm=f"winograd{m}", seed=3)
    direct = Conv2d(c, k, 3, padding=pad, seed=3)
    x = rng.standard_normal((2, c, h, w)).astype(np.float32)
    y = conv(x)
    assert conv.algorithm_used == f"winograd F({m}x{m},3x3)"
    oh, ow = out_size(h, w, pad)
    assert y.shape == (2, k, oh, ow)
    x64, w64, b64 = x.astype(np.float64), conv.weight.astype(np.float64), conv.bias.astype(np.float64)
    ref = conv64(x64, w64, pad, oh, ow) + b64[None, :, None, None]
    tol = bound(x64, w64, m, pad, oh, ow, 2 * EPS * (np.abs(ref) + np.abs(b64)[None, :, None, None]))
    assert_within(y, ref, tol, "forward")
    # The direct layer is within the same bound plus its own (9C·eps·Σ|x||w|).
    yd = direct(x)
    tol_d = tol + (9 * c + 2) * EPS * (conv64(np.abs(x64), np.abs(w64), pad, oh, ow) + np.abs(b64)[None, :, None, None])
    assert_within(y, yd.astype(np.float64), tol_d, "forward vs direct")

    # Backward data: the forward pass of ∂y with the filters flipped and swapped, padding 2 − p.
    gy = rng.standard_normal(y.shape).astype(np.float32)
    dx = conv.backward(gy)
    dxd = direct.backward(gy)
    wf = w64[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
    bpad = tuple(2 - p for p in pad)
    g64 = gy.astype(np.float64)
    ref_dx = conv64(g64, wf, bpad, h, w)
    assert_within(dx, ref_dx, bound(g64, wf, m, bpad, h, w), "grad input")
    # The weight gradient is the direct one's, bit for bit.
    np.testing.assert_array_equal(conv.weight_grad, direct.weight_grad)
    np.testing.assert_array_equal(conv.bias_grad, direct.bias_grad)
    tol_dx = bound(g64, wf, m, bpad, h, w) + (9 * k + 1) * EPS * conv64(np.abs(g64), np.abs(wf), bpad, h, w)
    assert_within(dx, dxd.astype(np.float64), tol_dx, "grad input vs direct")


def run_core(isa_name, c, k, h, w, pad, m, act, x, wt, b, add, keep_z):
    """Forward (and backward data) of a _core layer under isa_name; returns the blocked arrays."""
    brgemm.set_isa(isa_name)
    try:
        cv = _core._Conv2d("float32", c, k, 3, 3, 1, 1, *pad, 1, 1, act)
        cv.set_algorithm(f"winograd{m}")
        cv.refresh(wt, b)
        n = x.shape[0]
        oh, ow = out_size(h, w, pad)
        xb = np.zeros((n, -(-c // cv.bc), h, w, cv.bc), np.float32)
        _core.conv_to_blocked(x, xb)
        yb = np.full((n, -(-k // cv.bk), oh, ow, cv.bk), np.nan, np.float32)
        zb = np.full_like(yb, np.nan) if keep_z else None
        cv.forward(n, h, w, xb, yb, zb, add)
        gx = np.full_like(xb, np.nan)
        gy = np.cos(np.arange(yb.size, dtype=np.float32)).reshape(yb.shape)
        wg = np.zeros_like(wt)
        cv.backward(n, h, w, gy, yb, zb, xb, gx, wg, None, False)
        return yb, zb, gx
    finally:
        brgemm.set_isa(None)


@pytest.mark.parametrize("m", [2, 4, 6])
@pytest.mark.parametrize("act", ["none", "relu", "relu6"])
def test_epilogue_residual_and_isas_agree_bitwise(rng, m, act):
    """Bias, residual and activation fused into the output transform (z: the pre-activation),
    and every ISA of this machine gives the scalar twin's bits, forward and backward data."""
    c, k, h, w, pad = 19, 20, 11, 10, (1, 2, 2, 0)
    oh, ow = out_size(h, w, pad)
    x = rng.standard_normal((2, c, h, w)).astype(np.float32) * 3
    wt = rng.standard_normal((k, c, 3, 3)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    bk = _core.conv_block(k)
    res = rng.standard_normal((2, k, oh, ow)).astype(np.float32) * 4
    add = np.zeros((2, -(-k // bk), oh, ow, bk), np.float32)
    _core.conv_to_blocked(res, add)
    got = {}
    for level in brgemm.available_isas():
        got[level] = run_core(level, c, k, h, w, pad, m, act, x, wt, b, add, True)
    # The BRGEMM's products differ between the scalar kernel (multiply, then add) and the FMA
    # ones; the FMA levels sum in the same order, so they agree to the bit.
    fma = [lv for lv in got if lv != "scalar"]
    for level in fma[1:]:
        for i, what in enumerate(("y", "z", "grad input")):
            a, r = got[level][i], got[fma[0]][i]
            assert np.array_equal(a.view(np.uint32), r.view(np.uint32)), f"{level} {what} differs from {fma[0]}'s bits"
    ref_isa = "scalar"
    yb, zb, _ = got[ref_isa]
    y = np.zeros((2, k, oh, ow), np.float32)
    z = np.zeros_like(y)
    _core.conv_from_blocked(yb, y)
    _core.conv_from_blocked(zb, z)
    x64, w64 = x.astype(np.float64), wt.astype(np.float64)
    ref_z = conv64(x64, w64, pad, oh, ow) + b[None, :, None, None] + res
    tol = bound(x64, w64, m, pad, oh, ow, 3 * EPS * (np.abs(ref_z) + np.abs(b)[None, :, None, None] + np.abs(res)))
    assert_within(z, ref_z, tol, "pre-activation")
    act_f = {"none": lambda v: v, "relu": lambda v: np.maximum(v, 0), "relu6": lambda v: np.clip(v, 0, 6)}[act]
    np.testing.assert_array_equal(y, act_f(z))  # the activation of the stored z, exactly
    # Padded output lanes stay zero (bias and filters are zero there; the residual's are zero).
    if k % bk:
        assert not np.any(yb[:, -1, :, :, k % bk:])


def test_isas_agree_on_the_numpy_layer(rng):
    """Conv2d(algorithm="winograd"): the same bits forward and backward on every FMA ISA."""
    x = rng.standard_normal((1, 32, 13, 13)).astype(np.float32)
    gy = rng.standard_normal((1, 48, 13, 13)).astype(np.float32)
    outs = []
    for level in brgemm.available_isas():
        if level == "scalar":
            continue
        brgemm.set_isa(level)
        try:
            conv = Conv2d(32, 48, 3, padding=1, activation="relu", algorithm="winograd", seed=5)
            outs.append((level, conv(x), conv.backward(gy)))
        finally:
            brgemm.set_isa(None)
    for level, y, dx in outs[1:]:
        assert np.array_equal(y.view(np.uint32), outs[0][1].view(np.uint32)), level
        assert np.array_equal(dx.view(np.uint32), outs[0][2].view(np.uint32)), level


def test_weights_written_in_place_are_repacked(rng):
    conv = Conv2d(16, 16, 3, padding=1, algorithm="winograd", seed=1)
    direct = Conv2d(16, 16, 3, padding=1, seed=1)
    x = rng.standard_normal((1, 16, 8, 8)).astype(np.float32)
    conv(x)
    for layer in (conv, direct):
        layer.weight[3, 2, 1, 0] += 5.0
        layer.bias[7] = -2.0
    np.testing.assert_allclose(conv(x), direct(x), rtol=0, atol=1e-4)


def test_auto_follows_the_cost_model(rng):
    """layers/winograd.h's model: F(4×4) on larger outputs, F(2×2) on small ones, direct when
    the transforms (few channels) or the transformed filters (many channels, few tiles) cost
    more than the multiplies saved, and for layers Winograd does not apply to."""
    def used(c, k, n, h, **kw):
        conv = Conv2d(c, k, 3, padding=1, algorithm="auto", seed=1, **kw)
        assert conv.algorithm_used is None
        conv(rng.standard_normal((n, c, h, h)).astype(np.float32))
        return conv.algorithm_used
    assert used(64, 64, 1, 16) == "winograd F(4x4,3x3)"
    assert used(64, 64, 16, 6) == "winograd F(2x2,3x3)"
    assert used(64, 64, 2, 1) == "direct"            # one output pixel: nothing to save
    assert used(3, 32, 1, 16) == "direct"            # few channels: the transforms cost more
    assert used(512, 512, 1, 7) == "direct"          # 38 MB of F(4×4) filters for 4 tiles
    assert used(512, 512, 16, 7) == "winograd F(4x4,3x3)"
    assert used(32, 32, 1, 16, stride=2) == "direct"  # auto never refuses a layer
    assert used(32, 32, 1, 16, activation="tanh") == "direct"
    # The choice is per call shape.
    conv = Conv2d(64, 64, 3, padding=1, algorithm="auto")
    conv(rng.standard_normal((1, 64, 16, 16)).astype(np.float32))
    assert conv.algorithm_used == "winograd F(4x4,3x3)"
    conv(rng.standard_normal((1, 64, 1, 1)).astype(np.float32))
    assert conv.algorithm_used == "direct"


@pytest.mark.parametrize("kwargs, reason", [
    (dict(stride=2), "stride"), (dict(kernel_size=5), "3x3"), (dict(dilation=2), "dilation"),
    (dict(groups=2), "groups"), (dict(dtype="bfloat16"), "bfloat16"), (dict(activation="tanh"), "activation"),
])
def test_unsupported_layers_raise(kwargs, reason):
    args = dict(in_channels=8, out_channels=8, kernel_size=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=rf"algorithm='winograd'.*{reason}"):
        Conv2d(**args, algorithm="winograd")


def test_int8_has_no_winograd():
    from brgemm.nn import QuantizedConv2d
    with pytest.raises(ValueError, match=r"algorithm='winograd'.*int8"):
        QuantizedConv2d(8, 8, 3, algorithm="winograd")
    QuantizedConv2d(8, 8, 3, algorithm="auto")


def test_bad_algorithm_names():
    with pytest.raises(ValueError, match="algorithm must be"):
        Conv2d(8, 8, 3, algorithm="fast")
    with pytest.raises(TypeError, match="algorithm must be a string"):
        Conv2d(8, 8, 3, algorithm=4)


def test_digits_cnn_trained_with_winograd_matches_direct():
    """Issue 21's study: the digits CNN (two stride-1 3×3 convolutions) trained from the same
    initial weights with Winograd layers (forward and input gradient; "winograd" lets the layer
    pick the tile for 8×8 images) and with direct ones reaches the same held-out top-1 within
    0.5 percentage points."""
    from test_quant import _digits, _train
    from brgemm.nn import Flatten, Linear, Sequential
    x, y, train, test = _digits()
    acc = {}
    for algorithm in ("direct", "winograd"):
        model = Sequential(Conv2d(1, 8, 3, padding=1, activation="relu", seed=1, algorithm=algorithm),
                           Conv2d(8, 16, 3, padding=1, activation="relu", seed=2, algorithm=algorithm),
                           Flatten(), Linear(16 * 64, 10, seed=3))
        _train(model, x, y, train, (1, 8, 8), epochs=10)
        out = np.asarray(model(x[test].reshape(-1, 1, 8, 8)), np.float32)
        acc[algorithm] = float((out.argmax(1) == y[test]).mean())
        if algorithm == "winograd":
            assert all(layer.algorithm_used.startswith("winograd") for layer in model.layers[:2])
    print(f"digits CNN top-1: direct {acc['direct']:.4f}, winograd {acc['winograd']:.4f}")
    assert acc["direct"] > 0.95
    assert acc["winograd"] >= acc["direct"] - 0.005
