"""brgemm.nn.SharedLinear: a Linear stored as shared weights (codebook + b-bit indices) whose
product widens the indices in registers. The product is the float32 one of the decoded weight;
the codebook kernels sum in their own order, so the bound is the float32 GEMM's
k·2⁻²³·Σ|x||w| (test_linear.py)."""

import numpy as np
import pytest

from brgemm.nn import Linear, SharedLinear


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("n", [1, 5])
def test_shared_linear_is_the_product_of_the_decoded_weight(isa, rng, bits, n):
    lin = Linear(96, 70, seed=1, activation="relu")
    layer = SharedLinear.from_linear(lin, bits)
    w = layer.decoded_weight()
    assert w.shape == (70, 96) and len(np.unique(w)) <= 2 ** bits
    x = rng.standard_normal((n, 96)).astype(np.float32)
    ref = x.astype(np.float64) @ w.T.astype(np.float64) + lin.bias
    y = layer(x)
    bound = 96 * 2.0 ** -23 * (np.abs(x) @ np.abs(w).T + np.abs(lin.bias)) + 1e-30
    assert np.all(np.abs(y - np.maximum(ref, 0)) <= bound)
    out = np.empty((n, 70), np.float32)
    assert layer(x, out=out) is out and np.array_equal(out, y)
    assert np.array_equal(layer(x[0]), y[0])   # a GEMV on a vector


def test_shared_linear_checks_its_arguments(rng):
    cb = np.linspace(-1, 1, 16, dtype=np.float32)
    idx = rng.integers(0, 16, (8, 32), dtype=np.uint8)
    layer = SharedLinear(cb, idx, bias=np.zeros(8, np.float32))
    assert layer.bits == 4 and layer.nbytes == layer.shared.nbytes + 8 * 4
    with pytest.raises(ValueError, match="indices"):
        SharedLinear(cb, idx + 16)
    with pytest.raises(ValueError, match="bias"):
        SharedLinear(cb, idx, bias=np.zeros(9, np.float32))
    with pytest.raises(ValueError, match="activation"):
        SharedLinear(cb, idx, activation="gelu")
    with pytest.raises(TypeError, match="x"):
        layer(np.zeros((2, 32)))
    with pytest.raises(ValueError, match="x"):
        layer(np.zeros((2, 31), np.float32))
    with pytest.raises(ValueError, match="out"):
        layer(np.zeros((2, 32), np.float32), out=np.zeros((2, 9), np.float32))
