"""brgemm.nn.Linear and MLP: forward, backward and SGD against a float64 numpy reference, against
PyTorch when it is installed, and against themselves (a fused activation must give exactly the
activation of the unfused product); odd sizes, every ISA, parameters written in place, errors.

Tolerances are derived: a product over K terms in float32 is within K·2⁻²³·Σ|a||b| of the exact
one; bfloat16 layers are compared with their inputs rounded to bfloat16 first (what the
kernels multiply), plus one bf16 rounding (2⁻⁸ relative) where the output is bfloat16.
"""

import math

import ml_dtypes
import numpy as np
import pytest

import brgemm
from brgemm.nn import MLP, Linear
from brgemm.nn import functional as F

BF16 = ml_dtypes.bfloat16
SHAPES = [(1, 1, 1), (5, 7, 9), (2, 64, 64), (65, 130, 17), (130, 200, 70)]  # (N, in, out)


def bf16_round(a):
    return np.asarray(a, np.float32).astype(BF16).astype(np.float64)


def operand(a, dtype):
    """What the kernels multiply: the f32 values, or their bf16 roundings."""
    return bf16_round(a) if dtype == "bfloat16" else np.asarray(a, np.float64)


def product_bound(a, b, k):
    return k * 2.0 ** -23 * (np.abs(a) @ np.abs(b)) + 1e-30


def assert_product(got, ref, bound, what, rel_out=0.0):
    got = np.asarray(got, np.float64)
    err = np.abs(got - ref)
    tol = bound + rel_out * np.abs(ref)
    worst = np.unravel_index(np.argmax(err - tol), err.shape)
    assert np.all(err <= tol), f"{what}: error {err[worst]:.3g} > bound {tol[worst]:.3g} at {worst}"


def layer(n_in, n_out, dtype, activation=None, bias=True, seed=0):
    return Linear(n_in, n_out, bias=bias, activation=activation, dtype=dtype, seed=seed)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_linear_forward_backward_match_float64(isa, rng, dtype, shape, bias):
    n, c, k = shape
    lin = layer(c, k, dtype, bias=bias, seed=1)
    x = rng.standard_normal((n, c)).astype(np.float32)
    g = rng.standard_normal((n, k)).astype(np.float32)
    y = lin.forward(x)
    assert y.dtype == (np.float32 if dtype == "float32" else BF16) and y.shape == (n, k)
    xo, wo, go = operand(x, dtype), operand(lin.weight, dtype), operand(g, dtype)
    b = lin.bias.astype(np.float64) if bias else 0.0
    assert_product(y, xo @ wo.T + b, product_bound(xo, wo.T, c + 1) + 2.0 ** -23 * np.abs(b), "y",
                   rel_out=2.0 ** -8 if dtype == "bfloat16" else 0.0)
    gx = lin.backward(g)
    assert gx.dtype == np.float32 and gx.shape == (n, c)
    assert_product(gx, go @ wo, product_bound(go, wo, k), "grad_in")
    assert_product(lin.weight_grad, go.T @ xo, product_bound(go.T, xo, n), "weight_grad")
    if bias:
        g64 = g.astype(np.float64)
        assert_product(lin.bias_grad, g64.sum(0), n * 2.0 ** -23 * np.abs(g64).sum(0), "bias_grad")
    else:
        assert lin.bias is None and lin.bias_grad is None


ACTS = ["relu", "tanh", "sigmoid", "gelu", "swish", "ktanh", "ksigmoid", "kgelu", "kswish", "relu6"]


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", [(5, 7, 9), (65, 130, 17)], ids=lambda s: "x".join(map(str, s)))
def test_fused_activation_is_the_activation_of_the_product(isa, rng, act, shape):
    """float32: the epilogue applies the same function to the same accumulator, so the fused
    layer gives exactly F.<act> of the plain one, forward and backward (the derivative taken
    from the output, or from the pre-activation for gelu/swish and their K-versions)."""
    n, c, k = shape
    fused, plain = layer(c, k, "float32", act, seed=3), layer(c, k, "float32", None, seed=3)
    x = rng.standard_normal((n, c)).astype(np.float32) * 2
    g = rng.standard_normal((n, k)).astype(np.float32)
    z = plain.forward(x)
    y = fused.forward(x)
    np.testing.assert_array_equal(y, F.activation(z, act))
    fused.eval()
    np.testing.assert_array_equal(fused.forward(x), y)  # one fused epilogue in eval mode
    fused.train()
    fused.forward(x)
    dz = F.activation_backward(act, g, x=z, y=y)
    np.testing.assert_array_equal(fused.backward(g), plain.backward(dz))
    np.testing.assert_array_equal(fused.weight_grad, plain.weight_grad)
    np.testing.assert_array_equal(fused.bias_grad, plain.bias_grad)


@pytest.mark.parametrize("act", ["relu", "ktanh", "gelu"])
def test_bfloat16_activation_within_rounding(rng, act):
    n, c, k = 33, 96, 80
    lin = layer(c, k, "bfloat16", act, seed=4)
    x = rng.standard_normal((n, c)).astype(np.float32)
    xo, wo = operand(x, "bfloat16"), operand(lin.weight, "bfloat16")
    z = (xo @ wo.T + lin.bias).astype(np.float32)
    y = lin.forward(x).astype(np.float32)
    ref = F.activation(z, act)
    # the activation's slope is ≤ 1.13, K-TanH steps are ≤ 0.0179 between neighbouring inputs
    tol = 1.13 * product_bound(xo, wo.T, c + 1) + 2.0 ** -8 * np.abs(ref) + (0.018 if act == "ktanh" else 0)
    assert np.all(np.abs(y - ref) <= tol + 1e-6)


try:
    import torch
except ImportError:  # the PyTorch comparisons are skipped, loudly (pytest -ra)
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


@needs_torch
@pytest.mark.parametrize("act", [None, "relu", "tanh", "sigmoid", "gelu"])
def test_mlp_matches_pytorch_autograd(rng, act):
    sizes = [37, 64, 130, 5]
    mlp = MLP(sizes, activation=act, seed=7)
    fns = {None: torch.nn.Identity, "relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid,
           "gelu": torch.nn.GELU}
    mods = []
    for i, lin in enumerate(mlp.layers):
        t = torch.nn.Linear(sizes[i], sizes[i + 1]).double()
        with torch.no_grad():
            t.weight.copy_(torch.from_numpy(lin.weight.astype(np.float64)))
            t.bias.copy_(torch.from_numpy(lin.bias.astype(np.float64)))
        mods += [t] + ([fns[act]()] if i + 1 < len(mlp.layers) else [])
    ref = torch.nn.Sequential(*mods)
    x = rng.standard_normal((70, sizes[0])).astype(np.float32)
    g = rng.standard_normal((70, sizes[-1])).astype(np.float32)
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    yt = ref(xt)
    yt.backward(torch.from_numpy(g.astype(np.float64)))
    y = mlp.forward(x)
    gx = mlp.backward(g)
    tol = 2e-5  # float32 through three layers of ≤ 130 terms of O(1) values
    np.testing.assert_allclose(y, yt.detach().numpy(), atol=tol, rtol=tol)
    np.testing.assert_allclose(gx, xt.grad.numpy(), atol=tol, rtol=tol)
    for lin, t in zip(mlp.layers, [m for m in mods if isinstance(m, torch.nn.Linear)]):
        np.testing.assert_allclose(lin.weight_grad, t.weight.grad.numpy(), atol=1e-4, rtol=tol)
        np.testing.assert_allclose(lin.bias_grad, t.bias.grad.numpy(), atol=1e-4, rtol=tol)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_mlp_is_its_layers_in_turn(isa, rng, dtype):
    """Blocked activations between layers give what the layers give one by one (plain arrays in
    between), bit for bit, forward and backward."""
    mlp = MLP([19, 48, 33, 10], activation="gelu", dtype=dtype, seed=5)
    x = rng.standard_normal((9, 19)).astype(np.float32)
    g = rng.standard_normal((9, 10)).astype(np.float32)
    y = mlp.forward(x)
    gx = mlp.backward(g)
    wgrads = [l.weight_grad.copy() for l in mlp.layers]
    mlp.zero_grad()
    h = x
    for lin in mlp.layers:
        h = lin.forward(h)
    np.testing.assert_array_equal(h, y)
    d = g
    for lin in reversed(mlp.layers):
        d = lin.backward(d)
    np.testing.assert_array_equal(d, gx)
    for lin, w in zip(mlp.layers, wgrads):
        np.testing.assert_array_equal(lin.weight_grad, w)


def test_finite_differences(rng):
    """The gradients of loss = Σ y·g in float64 arithmetic on the layer's own forward."""
    mlp = MLP([4, 6, 3], activation="tanh", seed=9)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    g = rng.standard_normal((3, 3)).astype(np.float32)
    mlp.forward(x)
    gx = mlp.backward(g)
    h = 1e-2

    def loss(xv):
        return float(np.sum(mlp.forward(xv.astype(np.float32)).astype(np.float64) * g))

    for idx in [(0, 0), (1, 2), (2, 3)]:
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        assert abs((loss(xp) - loss(xm)) / (2 * h) - gx[idx]) < 2e-3
    w = mlp.layers[0].weight
    for idx in [(0, 0), (5, 3)]:
        w0 = w[idx]
        w[idx] = w0 + h
        lp = loss(x)
        w[idx] = w0 - h
        lm = loss(x)
        w[idx] = w0
        assert abs((lp - lm) / (2 * h) - mlp.layers[0].weight_grad[idx]) < 2e-3


def test_gradients_accumulate_until_zero_grad(rng):
    lin = layer(20, 30, "float32", "relu")
    x = rng.standard_normal((8, 20)).astype(np.float32)
    g = rng.standard_normal((8, 30)).astype(np.float32)
    lin.forward(x)
    lin.backward(g)
    once_w, once_b = lin.weight_grad.copy(), lin.bias_grad.copy()
    lin.forward(x)
    lin.backward(g)
    np.testing.assert_allclose(lin.weight_grad, 2 * once_w, rtol=1e-6, atol=1e-6)
    lin.zero_grad()
    assert not lin.weight_grad.any() and not lin.bias_grad.any()  # reading materialises the zeros
    lin.forward(x)
    lin.backward(g)
    np.testing.assert_array_equal(lin.weight_grad, once_w)
    lin.zero_grad()
    lin.forward(x)
    lin.backward(g)  # written over without being read in between
    np.testing.assert_array_equal(lin.weight_grad, once_w)
    np.testing.assert_array_equal(lin.bias_grad, once_b)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_parameters_written_in_place_take_effect(rng, dtype):
    lin = layer(70, 66, dtype)
    x = rng.standard_normal((4, 70)).astype(np.float32)
    y0 = lin.forward(x).astype(np.float32)
    lin.weight[3, 65 % 70] += 1.0
    lin.bias[:] = 0
    y1 = lin.forward(x).astype(np.float32)
    ref = operand(x, dtype) @ operand(lin.weight, dtype).T
    assert_product(y1, ref, product_bound(operand(x, dtype), operand(lin.weight, dtype).T, 71), "y",
                   rel_out=2.0 ** -8 if dtype == "bfloat16" else 0.0)
    assert not np.array_equal(y0, y1)
    lin.weight = np.zeros((66, 70))
    assert not lin.forward(x).astype(np.float32).any()
    with pytest.raises(ValueError, match="weight must have shape"):
        lin.weight = np.zeros((70, 66))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_sgd_step(rng, dtype):
    lin = layer(40, 24, dtype)
    x = rng.standard_normal((6, 40)).astype(np.float32)
    lin.forward(x)
    lin.backward(rng.standard_normal((6, 24)).astype(np.float32))
    w, b = lin.weight.copy(), lin.bias.copy()
    lin.apply_sgd(0.125)
    np.testing.assert_array_equal(lin.weight, w - np.float32(0.125) * lin.weight_grad)
    np.testing.assert_array_equal(lin.bias, b - np.float32(0.125) * lin.bias_grad)
    # the products use the new weights
    y = lin.forward(x).astype(np.float32)
    ref = operand(x, dtype) @ operand(lin.weight, dtype).T + lin.bias
    assert_product(y, ref, product_bound(operand(x, dtype), operand(lin.weight, dtype).T, 41) + 1e-6, "y",
                   rel_out=2.0 ** -8 if dtype == "bfloat16" else 0.0)


def test_stochastic_rounding_is_unbiased():
    """Weights 1 + 2⁻¹⁰ lie between the bf16 values 1 and 1 + 2⁻⁷: rounding to nearest always
    gives 1 (the update is lost); stochastic rounding gives 1 + 2⁻⁷ one time in eight."""
    lin = Linear(64, 64, bias=False, dtype="bfloat16", seed=0)
    eye = np.eye(64, dtype=np.float32)
    lin.weight[:] = 1 + 2.0 ** -10
    assert np.all(lin.forward(eye).astype(np.float32) == 1.0)
    lin.zero_grad()
    ups = []
    for _ in range(8):
        lin.apply_sgd(0.0, stochastic_rounding=True)
        y = lin.forward(eye).astype(np.float32)
        assert set(np.unique(y)) <= {1.0, 1 + 2.0 ** -7}
        ups.append(np.mean(y > 1))
    assert 0.11 < np.mean(ups) < 0.14  # 32768 draws: 1/8 ± 0.002 (one σ)
    assert len(set(ups)) > 1  # a new draw at every step
    with pytest.raises(ValueError, match="bfloat16"):
        Linear(4, 4).apply_sgd(0.1, stochastic_rounding=True)


def test_bf16_inputs_and_outputs(rng):
    lin = layer(48, 16, "bfloat16")
    x = rng.standard_normal((5, 48)).astype(np.float32)
    np.testing.assert_array_equal(lin.forward(x), lin.forward(x.astype(BF16)))
    out = np.empty((5, 16), BF16)
    assert lin.forward(x, out=out) is out
    f32 = layer(48, 16, "float32")
    np.testing.assert_array_equal(f32.forward(x.astype(BF16)), f32.forward(bf16_round(x).astype(np.float32)))


def test_errors():
    lin = layer(8, 4, "float32")
    with pytest.raises(ValueError, match=r"x must have shape \(N, 8\)"):
        lin.forward(np.zeros((3, 7), np.float32))
    with pytest.raises(ValueError, match="x must have shape"):
        lin.forward(np.zeros(8, np.float32))
    with pytest.raises(TypeError, match="x must have dtype float32 or bfloat16"):
        lin.forward(np.zeros((3, 8), np.float64))
    with pytest.raises(TypeError, match="x must be a numpy array"):
        lin.forward([[0.0] * 8])
    with pytest.raises(RuntimeError, match="backward needs a forward"):
        layer(8, 4, "float32").backward(np.zeros((3, 4), np.float32))
    lin.forward(np.zeros((3, 8), np.float32))
    with pytest.raises(RuntimeError, match="same batch size"):
        lin.backward(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"grad_out must have shape \(N, 4\)"):
        lin.backward(np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="out must be a float32 array of shape"):
        lin.forward(np.zeros((3, 8), np.float32), out=np.empty((3, 5), np.float32))
    with pytest.raises(ValueError, match="activation must be one of"):
        Linear(3, 3, activation="softplus")
    with pytest.raises(ValueError, match="dtype must be"):
        Linear(3, 3, dtype="float16")
    with pytest.raises(ValueError, match="in_features must be at least 1"):
        Linear(0, 3)
    with pytest.raises(TypeError, match="out_features must be an integer"):
        Linear(3, 2.5)
    with pytest.raises(ValueError, match="sizes must name at least"):
        MLP([4])
    with pytest.raises(ValueError, match="lr must be finite"):
        lin.apply_sgd(float("nan"))
    lin.eval()
    lin.forward(np.zeros((3, 8), np.float32))
    with pytest.raises(RuntimeError, match="training mode"):
        lin.backward(np.zeros((3, 4), np.float32))
    lin.weight = lin.weight[:, ::-1]  # a strided view is copied, never read out of place
    assert lin.weight.flags.c_contiguous


def test_core_checks_its_arrays():
    """The private driver refuses arrays of the wrong size instead of reading past them."""
    fc = brgemm._core._Linear("float32", 8, 4, "none")
    w = np.zeros((4, 8), np.float32)
    fc.refresh(w, None)
    with pytest.raises(ValueError, match="xb must hold"):
        fc.forward(3, 4, np.zeros(10, np.float32), np.zeros(4 * 16, np.float32), None)
    with pytest.raises(ValueError, match="weight must hold"):
        fc.refresh(np.zeros((4, 7), np.float32), None)
    with pytest.raises(ValueError, match="bn must be even"):
        fc.forward(3, 3, np.zeros(48, np.float32), np.zeros(48, np.float32), None)
