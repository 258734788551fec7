"""Grouped and depthwise convolution (``groups``): brgemm.nn.Conv2d forward, backward data,
weight and bias gradients against a float64 numpy reference over group widths 1, 3, 4, 8, 16,
32 and 48, groups 2, 3, 4, 12, 16, 32 and C, strides 1 to 3, padding, dilation and odd sizes, on
every ISA (the ``isa`` fixture) and both dtypes; PyTorch's float64 autograd on the same
weights; the fused activations and residual of the depthwise stencil; blocked chains; int8
grouped inference; torch.ops.brgemm.conv2d with groups (opcheck, modules, convert); errors.

Grouped convolutions are BRGEMMs over a channel split (layers/conv.h), depthwise ones
(groups = C = K) per-channel stencils (layers/depthwise.h, brgemm/depthwise.h); both are
checked the same way.

Tolerances are derived as in tests/test_conv.py: a sum of n float32 products is within
n·2⁻²³·Σ|a||b| of the exact one, in any order (n: the reduction length, C/groups·R·S for the
output, K/groups·R·S for the input gradient, N·OH·OW for the weight and bias gradients; two
more terms for the bias and the residual). bfloat16 layers are compared with what they
multiply rounded to bfloat16 first (x and W forward), plus one bf16 rounding (2⁻⁸ relative) of a
bfloat16 output. The input gradient of a grouped bf16 layer multiplies dZ rounded to bf16 (the
BRGEMM's A) by bf16 W, and its weight gradient that dZ by bf16 x (bf16 products summed in f32);
the depthwise stencil's passes multiply the f32 dZ.
"""

import ml_dtypes
import numpy as np
import pytest

import brgemm
from brgemm import layout
from brgemm.nn import Conv2d, QuantizedConv2d

BF16 = ml_dtypes.bfloat16
EPS = 2.0 ** -23

# (C, K, groups, H, W, kernel, stride, padding, dilation)
CASES = [
    (8, 8, 2, 7, 9, 3, 1, 1, 1),              # width 4, two groups in one 8-channel block
    (12, 24, 4, 9, 7, 3, 2, 1, 1),            # widths 3 → 6, stride 2
    (128, 128, 32, 6, 5, 3, 1, 1, 1),         # ResNeXt's first stage: 32 groups of 4, 64-channel blocks
    (64, 64, 4, 5, 7, 3, 2, 1, 1),            # width 16: a group spans a 16-channel part of a block
    (96, 96, 2, 5, 5, 3, 1, 1, 1),            # width 48: three 16-channel parts, 32-channel blocks
    (64, 128, 2, 5, 6, 1, 1, 0, 1),           # width 32 → 64, 1 × 1 (rows merged)
    (48, 48, 16, 7, 6, 3, 1, 1, 1),           # width 3: groups straddle the compute blocks
    (24, 48, 3, 7, 7, 3, 2, 1, 1),            # width 8 → 16
    (36, 36, 12, 5, 5, 3, 3, 2, 2),           # width 3, stride 3, dilation 2, padded channels
    (32, 64, 32, 5, 5, 3, 1, 1, 1),           # width 1, multiplier 2: a BRGEMM, not the stencil
    (16, 16, 16, 9, 9, 3, 1, 1, 1),           # depthwise, one 16-channel block
    (40, 40, 40, 8, 7, 3, 2, 1, 1),           # depthwise, stride 2, 16-channel blocks, 8 padded
    (3, 3, 3, 6, 5, 5, 1, 2, 1),              # depthwise, 5 × 5, a 4-channel block (masked lanes)
    (96, 96, 96, 7, 7, 3, 2, 1, 1),           # depthwise, MobileNetV2's stride-2 shape, 32-channel blocks
    (64, 64, 64, 11, 10, 7, 2, 3, 1),         # depthwise, 7 × 7, stride 2, 64-channel blocks
    (20, 20, 20, 6, 6, (3, 2), (1, 2), (1, 0, 1, 1), (2, 1)),  # depthwise, rectangular, asymmetric
]
IDS = ["w4", "w3s2", "resnext", "w16s2", "w48", "w32_1x1", "w3_straddle", "w8s2", "w3s3d2", "mult2",
       "dw16", "dw40s2", "dw3_5x5", "dw96s2", "dw64_7x7", "dw_rect"]


def bf16_round(a):
    return np.asarray(a, np.float32).astype(BF16).astype(np.float64)


def _taps(x, conv, oh, ow):
    """(r, s, patch): the (N, C, OH, OW) input values tap (r, s) meets, from the padded x."""
    (r_, s_), (sh, sw), (dh, dw), (pt, pb, pl, pr) = conv.kernel_size, conv.stride, conv.dilation, conv.padding
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    for r in range(r_):
        for s in range(s_):
            yield r, s, xp[:, :, r * dh:r * dh + sh * (oh - 1) + 1:sh, s * dw:s * dw + sw * (ow - 1) + 1:sw]


def _grouped(w, g):
    """The dense (K, C, R, S) weight of a grouped (K, C/g, R, S) one: zero between groups."""
    k, cg, r, s = w.shape
    dense = np.zeros((k, cg * g, r, s))
    for i in range(g):
        dense[i * (k // g):(i + 1) * (k // g), i * cg:(i + 1) * cg] = w[i * (k // g):(i + 1) * (k // g)]
    return dense


def ref_forward(x, w, b, conv):
    n, _, h, wd = x.shape
    oh, ow = conv.output_size(h, wd)
    dense = _grouped(w, conv.groups)
    y = np.zeros((n, w.shape[0], oh, ow))
    for r, s, patch in _taps(x, conv, oh, ow):
        y += np.einsum("nchw,kc->nkhw", patch, dense[:, :, r, s])
    return y + (0.0 if b is None else b[None, :, None, None])


def ref_backward(x, w, g, conv):
    """(dx, dw, db) of sum(g · conv(x)) in float64; dw in the grouped (K, C/groups, R, S) shape."""
    n, c, h, wd = x.shape
    oh, ow = g.shape[2:]
    (pt, pb, pl, pr), (sh, sw), (dh, dw_) = conv.padding, conv.stride, conv.dilation
    dense = _grouped(w, conv.groups)
    dxp = np.zeros((n, c, h + pt + pb, wd + pl + pr))
    dwd = np.zeros_like(dense)
    for r, s, patch in _taps(x, conv, oh, ow):
        dxp[:, :, r * dh:r * dh + sh * (oh - 1) + 1:sh, s * dw_:s * dw_ + sw * (ow - 1) + 1:sw] += \
            np.einsum("nkhw,kc->nchw", g, dense[:, :, r, s])
        dwd[:, :, r, s] = np.einsum("nkhw,nchw->kc", g, patch)
    k, cg = w.shape[:2]
    kg = k // conv.groups
    dw = np.stack([dwd[i, (i // kg) * cg:(i // kg + 1) * cg] for i in range(k)])
    return dxp[:, :, pt:pt + h, pl:pl + wd], dw, g.sum(axis=(0, 2, 3))


def assert_close(got, ref, bound, what, rel_out=0.0):
    got = np.asarray(got, np.float64)
    err = np.abs(got - ref)
    tol = bound + rel_out * np.abs(ref) + 1e-30
    worst = np.unravel_index(np.argmax(err - tol), err.shape)
    assert np.all(err <= tol), f"{what}: error {err[worst]:.3g} > bound {tol[worst]:.3g} at {worst}"


def make(case, dtype="float32", activation=None, bias=True, seed=1):
    c, k, g, h, w, ks, st, pad, dil = case
    conv = Conv2d(c, k, ks, st, pad, dil, bias=bias, activation=activation, dtype=dtype, seed=seed, groups=g)
    return conv, (c, h, w)


def depthwise(conv):
    return conv.groups == conv.in_channels == conv.out_channels and conv.groups > 1


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_grouped_conv_matches_float64(isa, rng, case, dtype):
    conv, (c, h, w) = make(case, dtype)
    assert conv.weight.shape == (conv.out_channels, c // conv.groups, *conv.kernel_size)
    n = 2
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    y = conv.forward(x)
    oh, ow = conv.output_size(h, w)
    assert y.shape == (n, conv.out_channels, oh, ow)
    bf = dtype == "bfloat16"
    rnd = bf16_round if bf else (lambda a: np.asarray(a, np.float64))
    xo, wo, b = rnd(x), rnd(conv.weight), conv.bias.astype(np.float64)
    red = (c // conv.groups) * conv.kernel_size[0] * conv.kernel_size[1]
    bound = (red + 2) * EPS * ref_forward(np.abs(xo), np.abs(wo), np.abs(b), conv)
    assert_close(y, ref_forward(xo, wo, b, conv), bound, "forward", 2.0 ** -8 if bf else 0.0)

    g = rng.standard_normal(y.shape).astype(np.float32)
    dx = conv.backward(g)
    assert dx.dtype == np.float32 and dx.shape == x.shape
    g64 = g.astype(np.float64)
    gd = g64 if depthwise(conv) else rnd(g)   # what backward data multiplies (module docstring)
    dx_ref, _, _ = ref_backward(xo, wo, gd, conv)
    dx_abs, _, _ = ref_backward(np.abs(xo), np.abs(wo), np.abs(gd), conv)
    red_x = (conv.out_channels // conv.groups) * conv.kernel_size[0] * conv.kernel_size[1]
    assert_close(dx, dx_ref, (red_x + 1) * EPS * dx_abs, "grad input")
    _, _, db_ref = ref_backward(xo, wo, g64, conv)
    _, _, db_abs = ref_backward(np.abs(xo), np.abs(wo), np.abs(g64), conv)
    _, dw_ref, _ = ref_backward(xo, wo, gd, conv)   # the weight gradient's dZ: gd, as backward data's
    _, dw_abs, _ = ref_backward(np.abs(xo), np.abs(wo), np.abs(gd), conv)
    pixels = n * oh * ow
    assert_close(conv.weight_grad, dw_ref, (pixels + 1) * EPS * dw_abs, "weight grad")
    assert_close(conv.bias_grad, db_ref, (pixels + 1) * EPS * db_abs, "bias grad")


@pytest.mark.parametrize("case", [CASES[1], CASES[2], CASES[11], CASES[15]], ids=["w3s2", "resnext", "dw40s2", "dw_rect"])
def test_grouped_conv_matches_torch_autograd(rng, case):
    torch = pytest.importorskip("torch")
    conv, (c, h, w) = make(case, activation="relu")
    x = rng.standard_normal((3, c, h, w)).astype(np.float32)
    y = conv(x)
    pt, pb, pl, pr = conv.padding
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    wt = torch.tensor(conv.weight, dtype=torch.float64, requires_grad=True)
    bt = torch.tensor(conv.bias, dtype=torch.float64, requires_grad=True)
    yt = torch.relu(torch.nn.functional.conv2d(torch.nn.functional.pad(xt, (pl, pr, pt, pb)), wt, bt,
                                               stride=conv.stride, dilation=conv.dilation, groups=conv.groups))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-5, atol=1e-5)
    g = rng.standard_normal(y.shape).astype(np.float32)
    yt.backward(torch.tensor(g * (y > 0), dtype=torch.float64))  # the ReLU's mask from our output
    dx = conv.backward(g)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(conv.weight_grad, wt.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(conv.bias_grad, bt.grad.numpy(), rtol=1e-4, atol=1e-4)


ACTS = ["relu", "tanh", "sigmoid", "gelu", "swish", "ktanh", "ksigmoid", "kgelu", "kswish", "relu6"]


@pytest.mark.parametrize("act", ACTS)
def test_depthwise_fused_activation_is_the_activation_of_the_unfused_layer(isa, rng, act):
    """The stencil applies the same function to the same sums, so the fused layer gives
    exactly F.<act> of the plain one, in eval and training mode (where the activations that
    need their input keep the f32 sum), and its backward is the plain layer's given dY ⊙ act'."""
    from brgemm.nn import functional as F
    case = CASES[11]
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


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("groups", [4, 16])
def test_blocked_chains_through_grouped_layers(rng, dtype, groups):
    """A grouped layer keeps the layout of its channel count (conv_block), so blocked arrays
    pass between it and ungrouped layers as they are."""
    a = Conv2d(3, 16, 3, padding=1, activation="relu", dtype=dtype, seed=3)
    b = Conv2d(16, 16, 3, stride=2, padding=1, dtype=dtype, seed=4, groups=groups)
    c = Conv2d(16, 24, 1, dtype=dtype, seed=5)
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    plain = c(b(a(x)))
    xb = layout.to_blocked(x, dtype=a._act_dtype)
    yb = c(b(a(xb)))
    assert yb.ndim == 5
    np.testing.assert_array_equal(layout.from_blocked(yb, 24), plain)
    g = rng.standard_normal(plain.shape).astype(np.float32)
    gx_plain = b.backward(c.backward(g))
    c(b(a(xb)))
    gx_blocked = b.backward(c.backward(layout.to_blocked(g)))
    np.testing.assert_array_equal(layout.from_blocked(gx_blocked, 16), gx_plain)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_depthwise_residual_joins_before_the_activation(isa, rng, dtype):
    """The stencil's residual (the epilogue's add of the BRGEMM paths): act(conv + b + add)."""
    from brgemm import _core
    c, h = 40, 7
    cv = _core._Conv2d(dtype, c, c, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, "relu", groups=c)
    plain = _core._Conv2d(dtype, c, c, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, "none", groups=c)
    w = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    for layer in (cv, plain):
        layer.refresh(w, b)
    dt = np.float32 if dtype == "float32" else BF16
    shape = (2, -(-c // cv.bc), h, h, cv.bc)
    xb = rng.standard_normal(shape).astype(dt)
    add = rng.standard_normal(shape).astype(dt)
    y, z = np.empty(shape, dt), np.empty(shape, dt)
    cv.forward(2, h, h, xb, y, None, add)
    plain.forward(2, h, h, xb, z, None)
    ref = np.maximum(z.astype(np.float64) + add.astype(np.float64), 0)
    tol = 2.0 ** -8 if dtype == "bfloat16" else 2.0 ** -22
    np.testing.assert_allclose(y.astype(np.float64), ref, rtol=tol * 2, atol=tol * 4)


@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[7], CASES[9], CASES[10]],
                         ids=["w4", "resnext", "w8s2", "mult2", "dw16"])
def test_grouped_int8_forward_is_exact_before_its_epilogue(isa, rng, case):
    """int8 inference falls out of the channel split: the int32 sums are exact, so the float32
    output is the float64 reference within the epilogue's few roundings."""
    c, k, g, h, w, ks, st, pad, dil = case
    q = QuantizedConv2d(c, k, ks, st, pad, dil, groups=g, input_scale=0.05, input_zero_point=7,
                        out_dtype="float32", seed=2)
    xq = rng.integers(0, 256, (2, c, h, w)).astype(np.uint8)
    y = q(xq)
    ref_conv = Conv2d(c, k, ks, st, pad, dil, groups=g)
    wr = q.weight.astype(np.float64) * q.weight_scale.astype(np.float64)[:, None, None, None]
    ref = ref_forward((xq.astype(np.float64) - 7) * 0.05, wr, q.bias.astype(np.float64), ref_conv)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="in_channels .6. must be divisible by groups .4."):
        Conv2d(6, 8, 3, groups=4)
    with pytest.raises(ValueError, match="out_channels .6. must be divisible by groups .4."):
        Conv2d(8, 6, 3, groups=4)
    with pytest.raises(ValueError, match="groups"):
        Conv2d(8, 8, 3, groups=0)
    with pytest.raises(ValueError, match="groups"):
        QuantizedConv2d(8, 6, 3, groups=4)
    conv = Conv2d(8, 8, 3, groups=4)
    with pytest.raises(ValueError, match=r"weight must have shape \(8, 2, 3, 3\)"):
        conv.weight = np.zeros((8, 8, 3, 3))
    from brgemm import _core
    with pytest.raises(ValueError, match="in_channels .8. must be divisible by groups .3."):
        _core._Conv2d("float32", 8, 9, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, "none", groups=3)
    cv = _core._Conv2d("float32", 8, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, "none", groups=8)
    with pytest.raises(ValueError, match="weight must hold"):
        cv.refresh(np.zeros((8, 8, 3, 3), np.float32), None)


# --- torch ------------------------------------------------------------------------------------------

def test_torch_operator_with_groups_passes_opcheck():
    torch = pytest.importorskip("torch")
    import brgemm.torch  # noqa: F401  (registers the operators)
    ops = torch.ops.brgemm
    torch.manual_seed(0)
    for x, w, b, stride, groups, act, blocked in [
            (torch.randn(2, 8, 7, 7), torch.randn(16, 2, 3, 3), torch.randn(16), [1, 1], 4, "relu", False),
            (torch.randn(2, 12, 6, 5), torch.randn(12, 1, 3, 3), None, [2, 2], 12, "none", True),
            (torch.randn(1, 16, 5, 5, dtype=torch.bfloat16), torch.randn(16, 1, 3, 3), torch.randn(16), [1, 1], 16,
             "relu", False)]:
        args = (x.requires_grad_(), w.requires_grad_(), None if b is None else b.requires_grad_(), stride,
                [1, 1, 1, 1], [1, 1], groups, act, blocked, None)
        torch.library.opcheck(ops.conv2d.default, args)
        y = ops.conv2d(*args)
        torch.library.opcheck(ops.conv2d_backward.default,
                              (torch.randn_like(y, dtype=torch.float32), x.detach(), w.detach(),
                               None if b is None else b.detach(), y.detach(), stride,
                               [1, 1, 1, 1], [1, 1], act, True, groups))


@pytest.mark.parametrize("groups", [2, 8, 16])
def test_torch_module_matches_torch_in_float64(groups):
    torch = pytest.importorskip("torch")
    import brgemm.torch as bt
    torch.manual_seed(1)
    m = torch.nn.Conv2d(16, 16, 3, 2, 1, groups=groups)
    fast = bt.Conv2d.from_torch(m)
    ref = torch.nn.Conv2d(16, 16, 3, 2, 1, groups=groups).double()
    ref.load_state_dict(m.state_dict())
    x = torch.randn(2, 16, 9, 8, dtype=torch.float64)
    xf = x.float().requires_grad_()
    xd = x.clone().requires_grad_()
    y, yr = fast(xf), ref(xd)
    torch.testing.assert_close(y.double(), yr, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(yr)
    y.backward(g.float())
    yr.backward(g)
    torch.testing.assert_close(xf.grad.double(), xd.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(m.weight.grad.double(), ref.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(m.bias.grad.double(), ref.bias.grad, rtol=1e-4, atol=1e-4)


def test_convert_swaps_grouped_and_depthwise_convolutions():
    torch = pytest.importorskip("torch")
    import brgemm.torch as bt
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(32, 32, 3, padding=1, groups=32), torch.nn.ReLU(),
                                torch.nn.Conv2d(32, 64, 3, stride=2, padding=1, groups=4)).eval()
    x = torch.randn(2, 3, 10, 10)
    with torch.no_grad():
        want = model(x)
        report = bt.convert(model)
        assert [s[0] for s in report.swapped] == ["0", "2", "4"]
        torch.testing.assert_close(model(x), want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="groups"):
        torch.ops.brgemm.conv2d(torch.randn(1, 6, 5, 5), torch.randn(8, 2, 3, 3), None, [1, 1], [0, 0], [1, 1], 4)
    with pytest.raises(ValueError, match="out_channels .6. must be divisible by groups .4."):
        torch.ops.brgemm.conv2d(torch.randn(1, 8, 5, 5), torch.randn(6, 2, 3, 3), None, [1, 1], [0, 0], [1, 1], 4)


def test_convert_fuses_relu6_into_a_mobilenet_block():
    """MobileNetV2's inverted residual without BatchNorm: 1 × 1 expand → ReLU6 → depthwise 3 × 3
    → ReLU6 → 1 × 1 project. Both ReLU6 go into the epilogue and the stencil; outputs and
    gradients match PyTorch's (float32, values pushed past 6 so that the clip matters)."""
    torch = pytest.importorskip("torch")
    import copy

    import brgemm.torch as bt
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 48, 1), torch.nn.ReLU6(),
                                torch.nn.Conv2d(48, 48, 3, stride=2, padding=1, groups=48), torch.nn.ReLU6(),
                                torch.nn.Conv2d(48, 16, 1))
    with torch.no_grad():
        for m in model[::2]:
            m.weight.mul_(6.0)
    ref = copy.deepcopy(model)
    report = bt.convert(model)
    assert [f[0] for f in report.fused] == ["1", "3"]
    assert model[0].activation == model[2].activation == "relu6"
    x = torch.randn(2, 8, 9, 9)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    y, yr = model(xa), ref(xb)
    assert (ref[1](ref[0](x)) >= 6).any()   # the clip is exercised
    torch.testing.assert_close(y, yr, rtol=1e-4, atol=1e-4)
    g = torch.randn_like(y)
    y.backward(g)
    yr.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-4)
    for a, b in zip(model[::2], ref[::2]):
        torch.testing.assert_close(a.weight.grad, b.weight.grad, rtol=1e-4, atol=1e-3)
