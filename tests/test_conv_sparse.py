"""Block-sparse direct convolution (brgemm.nn.Conv2d.packing, layers/conv_plan.h build_pass).

A block-sparse pass lists only the weight blocks (ki × ko channels of one tap) that hold a
nonzero; what it leaves out are products with +0, and the kept ones are summed in the dense
order, so forward and ∂x equal the dense passes bit for bit (acc + a·0 = acc for finite a) on
every ISA, f32 and bf16. The weight gradient is the dense pass's in both.
"""

import numpy as np
import pytest

from brgemm.nn import Conv2d

# (C, K, kernel, stride, padding, H): a 3×3 whose reduction runs in two chunks (C = 128, bf16
# partial sums in a tile), a strided one with border runs, a 1×1 (merged rows), and the stem's
# short block (C = 3: merged column taps, bf16 weights by kernel row).
CASES = [(128, 64, 3, 1, 1, 6), (32, 96, 3, 2, 1, 7), (64, 32, 1, 1, 0, 5), (3, 32, 7, 2, 3, 11)]


def zero_blocks(w, bc, bk, rng, amount):
    """w with a fraction `amount` of its (bk × bc, one tap) blocks zeroed, output block 0 (and
    so its whole batch) among them, and one tap zeroed in every block of another."""
    w = w.copy()
    k, c, r, s = w.shape
    kb, cb = -(-k // bk), -(-c // bc)
    drop = rng.random((kb, cb, r, s)) < amount
    drop[0] = True
    if kb > 1:
        drop[1, :, r // 2, s // 2] = True
    for j, q, t, u in zip(*np.nonzero(drop)):
        w[j * bk:(j + 1) * bk, q * bc:(q + 1) * bc, t, u] = 0
    return w


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_sparse_passes_equal_dense_bit_for_bit(isa, rng, dtype, case):
    c, k, ks, stride, pad, hw = case
    conv = Conv2d(c, k, ks, stride=stride, padding=pad, activation="relu", dtype=dtype, seed=1, algorithm="direct")
    conv.weight = zero_blocks(conv.weight, conv.bc, conv.bk, rng, 0.6)
    conv.bias = rng.standard_normal(k).astype(np.float32)
    x = rng.standard_normal((2, c, hw, hw)).astype(np.float32)
    results = {}
    for packing in ("dense", "sparse"):
        conv.packing = packing
        conv.zero_grad()
        y = conv(x)
        gx = conv.backward(np.cos(y.astype(np.float32)))
        assert conv.block_sparse == (packing == "sparse")
        results[packing] = (np.asarray(y).view(np.uint16 if dtype == "bfloat16" else np.uint32), gx.view(np.uint32),
                            conv.weight_grad.copy())
    for a, b in zip(results["dense"], results["sparse"]):
        np.testing.assert_array_equal(a, b)
    y = results["sparse"][0]
    assert np.asarray(y).any()  # not vacuous: output block 0 (all its blocks zero) is relu(bias)


def test_automatic_packing_follows_the_crossover(rng):
    conv = Conv2d(64, 64, 3, padding=1, seed=0)
    x = rng.standard_normal((1, 64, 4, 4)).astype(np.float32)
    conv(x)
    assert conv.packing == "auto" and not conv.block_sparse and conv.block_density == 1.0
    conv.prune(0.9)
    y = conv(x)
    assert conv.block_sparse and conv.block_density <= Conv2d.sparse_crossover
    conv.packing = "dense"
    np.testing.assert_array_equal(conv(x), y)
    assert not conv.block_sparse
    conv.packing = "auto"
    assert conv.block_sparse
    with pytest.raises(ValueError, match="packing"):
        conv.packing = "csr"
    with pytest.raises(TypeError, match="packing"):
        conv.packing = 1


def test_training_under_a_mask_stays_equal_to_dense(rng):
    """Pruned weights stay zero through SGD, so the sparse tables stay valid; a layer trained
    sparse and one trained dense from the same start stay bit-identical."""
    x = rng.standard_normal((2, 64, 5, 5)).astype(np.float32)
    layers = []
    for packing in ("sparse", "dense"):
        conv = Conv2d(64, 64, 3, padding=1, seed=3, algorithm="direct")
        conv.prune(0.75)
        conv.packing = packing
        for _ in range(3):
            conv.zero_grad()
            y = conv(x)
            conv.backward(y - 1)
            conv.apply_sgd(0.05)
        layers.append((conv.weight, conv(x)))
    np.testing.assert_array_equal(layers[0][0], layers[1][0])
    np.testing.assert_array_equal(layers[0][1], layers[1][1])


@pytest.mark.parametrize("groups", [1, 2])
def test_weight_gradient_skips_blocks_the_mask_prunes_whole(isa, rng, groups):
    """Under a mask, the pruned blocks' gradient is zero (PyTorch's weight · mask) and the kept
    ones' is the unmasked layer's bit for bit; zero blocks without a mask keep their gradient."""
    x = rng.standard_normal((2, 64, 5, 5)).astype(np.float32)
    pruned = Conv2d(64, 64, 3, padding=1, seed=4, groups=groups, algorithm="direct")
    keep = pruned.prune(0.7)
    plain = Conv2d(64, 64, 3, padding=1, seed=4, groups=groups, algorithm="direct")
    plain.weight = pruned.weight          # the same zeros, no mask
    grads = []
    for conv in (pruned, plain):
        conv.zero_grad()
        y = conv(x)
        conv.backward(np.sin(y))
        grads.append(conv.weight_grad.copy())
    assert not keep.all() and not grads[0][~keep].any() and grads[1][~keep].any()
    np.testing.assert_array_equal(grads[0][keep].view(np.uint32), grads[1][keep].view(np.uint32))
