"""Linear(dtype="dfp16"): forward, input gradient and weight gradient each one DFP-16 product
(brgemm.dfp.matmul), checked against the same products computed from the DFP-16 operands in
float64 (the rounding of each operand to its shared exponent is the only approximation besides
float32 sums) and against float32 within the DFP-16 bound; gradient accumulation and zero_grad;
SGD on the float32 master weights; a small problem trained to the float32 layer's loss."""

import numpy as np
import pytest

from brgemm import dfp
from brgemm.nn import MLP, Linear


def as_float(t):
    return t.mantissa.astype(np.float64) * 2.0 ** t.exponent


def dfp_product(a, b):
    """a @ b from the DFP-16 roundings of float32 a and b, in float64."""
    return as_float(dfp.to_dfp16(np.ascontiguousarray(a, np.float32))) @ \
        as_float(dfp.to_dfp16(np.ascontiguousarray(b, np.float32)))


def close(got, want, k, scale):
    """float32 chunk sums and their adds: K·eps relative to Σ|a||b| (bounded here by scale)."""
    assert np.all(np.abs(got - want) <= 4 * k * np.finfo(np.float32).eps * scale + 1e-30)


@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("n, cin, cout", [(1, 3, 2), (8, 64, 33), (17, 130, 70)])
def test_forward_backward_weight_grad(isa, activation, n, cin, cout, rng):
    layer = Linear(cin, cout, activation=activation, dtype="dfp16", seed=3)
    x = rng.standard_normal((n, cin), dtype=np.float32)
    w, b = layer.weight.copy(), layer.bias.copy()
    y = layer(x)
    z = dfp_product(x, w.T) + b
    want = np.maximum(z, 0) if activation == "relu" else z
    scale = np.abs(x).astype(np.float64) @ np.abs(w.T) + np.abs(b)
    close(y, want, cin, scale)
    # against float32: both operands within half a step of their shared exponent
    ref = x.astype(np.float64) @ w.T + b
    ref = np.maximum(ref, 0) if activation == "relu" else ref
    assert np.abs(y - ref).max() <= 2 ** -13 * (np.abs(x).max() * np.abs(w).sum(1).max() + 1)

    gy = rng.standard_normal((n, cout), dtype=np.float32)
    gx = layer.backward(gy)
    dz = np.where(y > 0, gy, 0).astype(np.float32) if activation == "relu" else gy
    close(gx, dfp_product(dz, w), cout, np.abs(dz).astype(np.float64) @ np.abs(w))
    close(layer.weight_grad, dfp_product(dz.T, x), n, np.abs(dz.T).astype(np.float64) @ np.abs(x))
    assert np.allclose(layer.bias_grad, dz.sum(0), rtol=1e-5, atol=1e-6)

    # a second backward accumulates; zero_grad then starts again
    wg = layer.weight_grad.copy()
    layer.backward(gy, input_grad=False)
    close(layer.weight_grad, 2 * wg, n, 2 * np.abs(dz.T).astype(np.float64) @ np.abs(x))
    layer.zero_grad()
    layer.backward(gy, input_grad=False)
    close(layer.weight_grad, wg, n, np.abs(dz.T).astype(np.float64) @ np.abs(x))


def test_sgd_on_float32_master_weights(rng):
    layer = Linear(16, 4, dtype="dfp16", seed=1)
    x = rng.standard_normal((8, 16), dtype=np.float32)
    layer(x)
    layer.backward(np.ones((8, 4), np.float32), input_grad=False)
    w0, g = layer.weight.copy(), layer.weight_grad.copy()
    layer.apply_sgd(1e-7)  # far below one DFP-16 step of w: the master copy still moves
    assert layer.weight.dtype == np.float32
    assert np.array_equal(layer.weight, w0 - np.float32(1e-7) * g)


def test_trains_like_float32(rng):
    """A two-layer regression fitted in DFP-16 reaches the float32 layers' loss (within 2 %)."""
    x = rng.standard_normal((256, 20), dtype=np.float32)
    target = x @ (rng.standard_normal((20, 5)).astype(np.float32) / 4)
    losses = {}
    for dtype in ("float32", "dfp16"):
        l1, l2 = Linear(20, 32, activation="relu", dtype=dtype, seed=5), Linear(32, 5, dtype=dtype, seed=6)
        for _ in range(200):
            y = l2(l1(x))
            g = (2 / y.size * (y - target)).astype(np.float32)
            l1.backward(l2.backward(g), input_grad=False)
            for l in (l1, l2):
                l.apply_sgd(0.5)
                l.zero_grad()
        losses[dtype] = float(np.mean((l2(l1(x)) - target) ** 2))
    assert losses["float32"] < 0.02 * float(np.mean(target ** 2))  # it did learn
    assert abs(losses["dfp16"] - losses["float32"]) <= 0.02 * losses["float32"] + 1e-4, losses


def test_errors(rng):
    with pytest.raises(ValueError, match="activation must be None or 'relu' for dtype='dfp16'"):
        Linear(4, 4, activation="gelu", dtype="dfp16")
    with pytest.raises(ValueError, match="MLP keeps float32 or bfloat16"):
        MLP([4, 4, 4], dtype="dfp16")
    layer = Linear(4, 3, dtype="dfp16")
    with pytest.raises(RuntimeError, match="backward needs a forward"):
        layer.backward(np.ones((2, 3), np.float32))
    with pytest.raises(TypeError, match="x must have dtype float32 for dtype='dfp16'"):
        layer(np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"x must have shape \(N, 4\)"):
        layer(np.ones((2, 5), np.float32))
    layer.eval()
    layer(np.ones((2, 4), np.float32))
    with pytest.raises(RuntimeError, match="backward needs a forward"):
        layer.backward(np.ones((2, 3), np.float32))
