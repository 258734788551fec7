"""Magnitude pruning and block-sparse products (brgemm.nn.Linear.prune, layers/linear.h).

The block-sparse path leaves the pruned blocks out of each batch; what it leaves out are products
with zero, so its sums are those of the dense path bit for bit (acc + a·0 = acc), which the
tests require on every ISA. Against float64 the bound is the float32 one of test_linear.py:
K·2⁻²³·Σ|a||b| (bf16: inputs rounded first, output rounding 2⁻⁸ relative).
"""

import ml_dtypes
import numpy as np
import pytest

from brgemm.nn import Linear

BF16 = ml_dtypes.bfloat16
SHAPES = [(5, 130, 200), (66, 64, 64), (3, 200, 70)]  # (N, in, out): edges in N, C and K


def operand(a, dtype):
    a = np.asarray(a, np.float32)
    return (a.astype(BF16) if dtype == "bfloat16" else a).astype(np.float64)


def bound(a, b, k):
    return k * 2.0 ** -23 * (np.abs(a) @ np.abs(b)) + 1e-30


def pair(shape, dtype, amount, seed=0):
    """A pruned layer packed block-sparse and the same weights packed dense."""
    n, c, k = shape
    sparse = Linear(c, k, activation="relu", dtype=dtype, seed=seed)
    mask = sparse.prune(amount)
    dense = Linear(c, k, activation="relu", dtype=dtype, seed=seed)
    dense.weight = sparse.weight
    dense.packing = "dense"
    sparse.packing = "sparse"
    return sparse, dense, mask


def train_step(layer, x, g):
    y = layer.forward(x)
    gx = layer.backward(g)
    return y.astype(np.float32), gx, layer.weight_grad.copy(), layer.bias_grad.copy()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_block_sparse_equals_dense_bit_for_bit(isa, rng, dtype, shape):
    n, c, k = shape
    sparse, dense, mask = pair(shape, dtype, 0.6)
    x = rng.standard_normal((n, c)).astype(np.float32)
    g = rng.standard_normal((n, k)).astype(np.float32)
    got, ref = train_step(sparse, x, g), train_step(dense, x, g)
    assert sparse.block_sparse and not dense.block_sparse
    for a, b, what in zip(got, ref, ("y", "grad_x", "weight_grad", "bias_grad")):
        np.testing.assert_array_equal(a, b * (mask if what == "weight_grad" else 1), err_msg=what)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_block_sparse_matches_float64(rng, dtype):
    n, c, k = 7, 130, 200
    lin = Linear(c, k, dtype=dtype, seed=3)
    mask = lin.prune(0.75)
    assert lin.sparsity == pytest.approx(1 - mask.mean()) and 0.6 < lin.sparsity < 0.9
    x = rng.standard_normal((n, c)).astype(np.float32)
    g = rng.standard_normal((n, k)).astype(np.float32)
    y = lin.forward(x).astype(np.float64)
    assert lin.block_sparse
    gx = lin.backward(g)
    xo, wo = operand(x, dtype), operand(lin.weight, dtype)
    assert not lin.weight[~mask].any()
    tol_y = bound(xo, wo.T, c + 1) + (2.0 ** -8 * np.abs(xo @ wo.T + lin.bias) if dtype == "bfloat16" else 0)
    assert np.all(np.abs(y - (xo @ wo.T + lin.bias)) <= tol_y)
    go = operand(g, dtype)
    assert np.all(np.abs(gx - go @ wo) <= bound(go, wo, k))
    gw = go.T @ xo
    assert np.all(np.abs(lin.weight_grad - gw * mask) <= bound(go.T, xo, n) * mask)
    assert not lin.weight_grad[~mask].any()   # only the kept blocks have a gradient


def test_mask_holds_through_training(rng):
    """Unstructured pruning (block 1) and block pruning: after SGD steps the pruned weights are
    still exactly zero, the others moved."""
    for block in (1, None):
        lin = Linear(96, 80, activation="relu", seed=5)
        mask = lin.prune(0.5, block=block)
        w0 = lin.weight.copy()
        x = rng.standard_normal((9, 96)).astype(np.float32)
        for _ in range(3):
            lin.zero_grad()
            lin.forward(x)
            lin.backward(rng.standard_normal((9, 80)).astype(np.float32), input_grad=False)
            lin.apply_sgd(0.1)
        assert not lin.weight[~mask].any()
        assert np.all(lin.weight[mask] != w0[mask])
        assert lin.sparsity == pytest.approx(1 - mask.mean()) and (block is None or lin.sparsity == 0.5)


def test_prune_chooses_the_smallest_blocks_and_iterates():
    lin = Linear(128, 128, seed=0)
    w = np.ones((128, 128), np.float32)
    w[:64, :64] = 0.1   # the smallest block
    w[64:, 64:] = 0.2
    lin.weight = w
    mask = lin.prune(0.25)   # 1 of 4 blocks of 64 × 64
    assert not mask[:64, :64].any() and mask[64:, :].all() and mask[:, 64:].all()
    mask = lin.prune(0.5)    # iterative: the pruned block stays, the next smallest joins
    assert not mask[:64, :64].any() and not mask[64:, 64:].any() and mask.sum() == 2 * 64 * 64
    assert lin.sparsity == 0.5
    unstructured = Linear(30, 20, seed=1)
    keep = unstructured.prune(0.3, block=1)
    w = np.abs(unstructured.weight)
    assert keep.sum() == 420 and w[keep].min() > 0
    assert unstructured.mask is not None and Linear(3, 4).mask is None


def test_packing_is_automatic_by_block_density(rng):
    lin = Linear(256, 256, seed=2)
    x = rng.standard_normal((4, 256)).astype(np.float32)
    lin.forward(x)
    assert lin.packing == "auto" and not lin.block_sparse
    lin.prune(0.5)
    y = lin.forward(x)
    assert lin.block_sparse
    lin.packing = "dense"
    np.testing.assert_array_equal(lin.forward(x), y)
    assert not lin.block_sparse
    lin.packing = "auto"
    lin.weight = np.ones((256, 256))   # every block holds a nonzero again
    lin.forward(x)
    assert not lin.block_sparse


def test_an_output_block_with_no_kept_weights_gives_the_bias(rng):
    lin = Linear(64, 128, seed=4)
    w = lin.weight.copy()
    w[64:] = 0
    lin.weight = w
    x = rng.standard_normal((3, 64)).astype(np.float32)
    y = lin.forward(x)
    assert lin.block_sparse
    np.testing.assert_array_equal(y[:, 64:], np.broadcast_to(lin.bias[64:], (3, 64)))


def test_errors():
    lin = Linear(64, 32)
    for amount in (-0.1, 1.0, 2):
        with pytest.raises(ValueError, match="amount must be in"):
            lin.prune(amount)
    with pytest.raises(TypeError, match="amount"):
        lin.prune("half")
    with pytest.raises(ValueError, match="block .* must divide"):
        lin.prune(0.5, block=(3, 4))
    with pytest.raises(ValueError, match="block must be positive"):
        lin.prune(0.5, block=0)
    with pytest.raises(ValueError, match="packing must be"):
        lin.packing = "csr"


def test_conv2d_prunes_channel_blocks_with_their_taps_and_trains_on(rng):
    from brgemm.nn import Conv2d
    conv = Conv2d(32, 48, 3, padding=1, seed=0)
    mask = conv.prune(0.5)
    assert mask.shape == conv.weight.shape and conv.sparsity == pytest.approx(1 - mask.mean())
    # a block is bk output channels × bc input channels × all 3 × 3 taps
    per_pair = mask.all(axis=(2, 3)) | ~mask.any(axis=(2, 3))
    assert per_pair.all()
    x = rng.standard_normal((2, 32, 6, 6)).astype(np.float32)
    for _ in range(2):
        conv.zero_grad()
        y = conv(x)
        conv.backward(np.ones_like(y))
        conv.apply_sgd(0.1)
    assert not conv.weight[~mask].any() and conv.weight[mask].all()
    unstructured = Conv2d(4, 8, 3, seed=1)
    keep = unstructured.prune(0.8, block=1)
    assert keep.sum() == round(0.2 * keep.size)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_recurrent_weights_prune_and_stay_pruned(rng, cell):
    import brgemm.nn as nn
    rnn = getattr(nn, cell)(20, 24, seed=0)
    masks = rnn.prune(0.6, block=1)
    assert set(masks) == {"weight_ih_l0", "weight_hh_l0"}
    assert rnn.sparsity == pytest.approx(0.6, abs=0.01)
    x = rng.standard_normal((5, 3, 20)).astype(np.float32)
    out, _ = rnn(x)
    rnn.backward(np.ones_like(out))
    rnn.apply_sgd(0.1)
    for name, m in masks.items():
        w = getattr(rnn, name)
        assert not w[~m].any() and w[m].all()
    more = rnn.prune(0.8, block=1)   # iterative: only adds
    assert all((~masks[n] <= ~more[n]).all() for n in masks)
    assert rnn.sparsity == pytest.approx(0.8, abs=0.01)


def test_zero_blocks_without_a_mask_still_learn(rng):
    """Zeros written by hand (no prune) are packed block-sparse like pruned ones, but with no mask
    their weight gradient is the true one, so they train as in the dense layer."""
    w = np.asarray(Linear(128, 128, seed=6).weight)
    w[:64, 64:] = 0
    sparse, dense = Linear(128, 128, seed=6), Linear(128, 128, seed=6)
    sparse.weight = dense.weight = w
    dense.packing = "dense"
    x = rng.standard_normal((4, 128)).astype(np.float32)
    g = rng.standard_normal((4, 128)).astype(np.float32)
    got, ref = train_step(sparse, x, g), train_step(dense, x, g)
    assert sparse.block_sparse and sparse.mask is None
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a, b)
    assert got[2][:64, 64:].any()


def test_mlp_of_pruned_layers_trains_block_sparse(rng):
    """The MLP keeps activations blocked between layers and drives each layer's products itself:
    pruned layers run block-sparse there too, equal to the dense packing bit for bit."""
    from brgemm.nn import MLP
    nets = [MLP([128, 192, 64], seed=7) for _ in range(2)]
    for net in nets:
        net.layers[0].prune(0.5)
        net.layers[1].prune(0.5)
    for layer in nets[1].layers:
        layer.packing = "dense"
    x = rng.standard_normal((6, 128)).astype(np.float32)
    g = rng.standard_normal((6, 64)).astype(np.float32)
    for step in range(2):
        outs = []
        for net in nets:
            net.zero_grad()
            y = net(x)
            outs.append((y, net.backward(g), net.layers[0].weight_grad.copy()))
            net.apply_sgd(0.1)
        for a, b in zip(*outs):
            np.testing.assert_array_equal(a, b)
    assert all(layer.block_sparse for layer in nets[0].layers)
    assert not nets[0].layers[0].weight[~nets[0].layers[0].mask].any()
