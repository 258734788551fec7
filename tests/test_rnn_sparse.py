"""Block-sparse recurrent and input products (brgemm.nn.LSTM/GRU.packing, layers/rnn.h): each
hidden block's W_hh slice (and its columns of W_ihᵀ, when input_size is a multiple of 16) is read
in row blocks, and the BRGEMM lists only those that hold a nonzero; backward data reads the same
blocks by column block. The kept products are summed in the dense call's order, so outputs,
final states and every gradient equal the dense layer's bit for bit on every ISA (acc + a·0 = acc
for finite a). Under a pruning mask the weight gradients are zero where it prunes and computed
only on the blocks it keeps, each block one call over all rows in the dense product's order."""

import numpy as np
import pytest

from brgemm.nn import GRU, LSTM


def zero_rows(w_hh, hidden, gates, rng, kb, amount):
    """W_hh (G·H, H) (or W_ih (G·H, I)) with, for a fraction `amount` of (16-unit hidden block, kb inputs) pairs,
    every gate's rows of that block zeroed over those inputs (one row block of the slice), hidden
    block 0 zeroed whole."""
    w = w_hh.copy()
    blocks, per = -(-hidden // 16), -(-w.shape[1] // kb)
    drop = rng.random((blocks, per)) < amount
    drop[0] = True
    for b, q in zip(*np.nonzero(drop)):
        for g in range(gates):
            w[g * hidden + 16 * b:g * hidden + min(16 * b + 16, hidden), q * kb:(q + 1) * kb] = 0
    return w


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("cell,inp,hidden,kb,kbx", [(LSTM, 64, 128, 64, 64), (GRU, 48, 80, 16, 16),
                                                    (LSTM, 24, 40, 16, None),  # 24: the input product dense
                                                    (GRU, 1088, 48, 16, 64)])  # input_size past gemm's K chunk
def test_sparse_products_equal_dense_bit_for_bit(isa, rng, dtype, cell, inp, hidden, kb, kbx):
    layer = cell(inp, hidden, dtype=dtype, seed=2)
    layer.weight_hh_l0 = zero_rows(layer.weight_hh_l0, hidden, layer._gates, rng, kb, 0.6)
    if kbx:
        layer.weight_ih_l0 = zero_rows(layer.weight_ih_l0, hidden, layer._gates, rng, kbx, 0.6)
    x = rng.standard_normal((5, 3, inp)).astype(np.float32)
    if dtype == "bfloat16":
        import ml_dtypes
        x = x.astype(ml_dtypes.bfloat16)
    out = {}
    for packing in ("dense", "sparse"):
        layer.packing = packing
        y, state = layer(x)
        assert layer.block_sparse == [packing == "sparse"]
        h = state[0] if isinstance(state, tuple) else state
        out[packing] = (np.asarray(y, np.float32).copy(), h.copy())
    for a, b in zip(out["dense"], out["sparse"]):
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


def test_automatic_packing_and_errors(rng):
    lstm = LSTM(16, 128, seed=0)
    x = rng.standard_normal((3, 2, 16)).astype(np.float32)
    lstm(x)
    assert lstm.packing == "auto" and lstm.block_sparse == [False]
    lstm.weight_hh_l0 = zero_rows(lstm.weight_hh_l0, 128, 4, rng, 64, 0.5)
    lstm(x)
    assert lstm.block_sparse == [True]
    with pytest.raises(ValueError, match="packing"):
        lstm.packing = "bsr"
    with pytest.raises(TypeError, match="packing"):
        lstm.packing = None


def run_step(layer, x, dy, lengths):
    """One training step from zeroed gradients: every output and gradient, as float32 copies."""
    layer.zero_grad()
    y, state = layer(x, lengths=lengths)
    dx, dstate = layer.backward(dy, state)
    states = state if isinstance(state, tuple) else (state,)
    dstates = dstate if isinstance(dstate, tuple) else (dstate,)
    out = {"y": y, "dx": dx}
    out.update({f"state{i}": s for i, s in enumerate(states)})
    out.update({f"dstate{i}": s for i, s in enumerate(dstates)})
    out.update({n: getattr(layer, n + "_grad") for n in layer._names_all})
    return {k: np.asarray(v, np.float32).copy() for k, v in out.items()}


def assert_bits_equal(a, b, what):
    assert a.shape == b.shape, what
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32), err_msg=what)


CASES = [(LSTM, 64, 128, 64, 64, False, None), (GRU, 48, 80, 16, 16, True, [5, 4, 2]),
         (LSTM, 32, 40, 16, 32, True, [5, 5, 1]),  # a reverse LSTM over ragged rows: its own input product
         (GRU, 24, 40, 16, None, False, None),     # 24: dx stays dense
         (GRU, 32, 192, 64, 32, False, None)]      # G·H = 576: dx in gemm's K chunks of 512, split inside blocks


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("cell,inp,hidden,kb,kbx,bidirectional,lengths", CASES)
def test_sparse_backward_equals_dense_bit_for_bit(isa, rng, dtype, cell, inp, hidden, kb, kbx, bidirectional, lengths):
    layer = cell(inp, hidden, dtype=dtype, seed=3, bidirectional=bidirectional)
    zeroed = {}
    for sfx in ["_l0"] + (["_l0_reverse"] if bidirectional else []):
        for name, width in [("weight_hh", kb), ("weight_ih", kbx)]:
            if width:
                w = zero_rows(getattr(layer, name + sfx), hidden, layer._gates, rng, width, 0.6)
                setattr(layer, name + sfx, w)
                zeroed[name + sfx] = w == 0
    x = rng.standard_normal((5, 3, inp)).astype(np.float32)
    if dtype == "bfloat16":
        import ml_dtypes
        x = x.astype(ml_dtypes.bfloat16)
    dy = rng.standard_normal((5, 3, layer._dirs * hidden)).astype(np.float32)
    ln = None if lengths is None else np.array(lengths)
    out = {}
    for packing in ("dense", "sparse"):
        layer.packing = packing
        out[packing] = run_step(layer, x, dy, ln)
        assert layer.block_sparse == [packing == "sparse"] * layer._dirs
    for key in out["dense"]:
        assert_bits_equal(out["dense"][key], out["sparse"][key], key)
    for name, zero in zeroed.items():  # no mask: zero weights still learn (nothing skips their gradient)
        assert np.count_nonzero(out["sparse"][name][zero]) > zero.sum() // 2, name


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("cell,inp,hidden,layers,bidirectional,lengths,n", [
    (LSTM, 64, 128, 1, True, [6, 6, 3], 3), (GRU, 100, 80, 2, False, None, 3), (LSTM, 24, 130, 1, False, [6, 4, 4], 3),
    (LSTM, 64, 144, 1, False, None, 90)])   # T·N = 540, G·H = 576: gemm's K chunks of 512 in dW and dx
def test_pruned_gradients_zero_and_kept_ones_exact(isa, rng, dtype, cell, inp, hidden, layers, bidirectional,
                                                   lengths, n):
    """Under prune()'s masks, in either packing: the weight gradients are the unpruned layer's
    (same weights, no mask, dense) times the mask, bit for bit; everything else equals it."""
    layer = cell(inp, hidden, layers, dtype=dtype, seed=4, bidirectional=bidirectional)
    masks = layer.prune(0.75)
    ref = cell(inp, hidden, layers, dtype=dtype, seed=4, bidirectional=bidirectional)
    for name, value in layer.parameters().items():
        setattr(ref, name, value)
    ref.packing = "dense"
    x = rng.standard_normal((6, n, inp)).astype(np.float32)
    if dtype == "bfloat16":
        import ml_dtypes
        x = x.astype(ml_dtypes.bfloat16)
    dy = rng.standard_normal((6, n, layer._dirs * hidden)).astype(np.float32)
    ln = None if lengths is None else np.array(lengths)
    want = run_step(ref, x, dy, ln)
    for name, keep in masks.items():
        assert np.count_nonzero(want[name][~keep]) > 0   # the mask changes something
        want[name] = np.where(keep, want[name], np.float32(0))
    for packing in ("dense", "sparse"):
        layer.packing = packing
        got = run_step(layer, x, dy, ln)
        assert [d.rnn.gradient_sparse for d in layer._drivers] == [packing == "sparse"] * len(layer._drivers)
        for key in want:
            assert_bits_equal(want[key], got[key], f"{packing} {key}")
        for name, keep in masks.items():
            assert not np.any(got[name][~keep].view(np.uint32)), name   # +0.0 exactly


def test_pruned_gradients_accumulate_and_automatic_policy(rng):
    lstm = LSTM(64, 128, seed=5)
    x = rng.standard_normal((4, 2, 64)).astype(np.float32)
    dy = rng.standard_normal((4, 2, 128)).astype(np.float32)
    masks = lstm.prune(0.0)   # a mask that prunes nothing: dense weight gradient
    assert [d.rnn.gradient_sparse for d in lstm._drivers] == [False]
    masks = lstm.prune(0.9)
    assert lstm.packing == "auto" and [d.rnn.gradient_sparse for d in lstm._drivers] == [True]
    once = run_step(lstm, x, dy, None)
    y, state = lstm(x)
    lstm.backward(dy, state)   # without zero_grad: adds
    for name, keep in masks.items():
        g = getattr(lstm, name + "_grad")
        assert not np.any(g[~keep])
        np.testing.assert_array_equal(g[keep], once[name][keep] + once[name][keep])
    lstm.packing = "dense"
    assert [d.rnn.gradient_sparse for d in lstm._drivers] == [False]
    with pytest.raises(ValueError, match="mask_hh"):
        lstm._drivers[0].rnn.set_mask(None, np.ones(7, np.uint8))


@pytest.mark.parametrize("cell,hidden", [(LSTM, 130), (GRU, 96)])
def test_prune_gates_blocks(rng, cell, hidden):
    """block="gates": whole (16 units × every gate, 64 inputs) blocks, the ones the products skip."""
    layer = cell(64, hidden, seed=6)
    masks = layer.prune(0.75, block="gates")
    g, hp = layer._gates, -(-hidden // 16) * 16
    for name, keep in masks.items():
        cols = keep.shape[1]
        kept, pruned = np.zeros((g, hp, cols + -cols % 64), bool), np.zeros((g, hp, cols + -cols % 64), bool)
        kept[:, :hidden, :cols] = keep.reshape(g, hidden, cols)
        pruned[:, :hidden, :cols] = ~keep.reshape(g, hidden, cols)
        per_block = lambda a: a.reshape(g, hp // 16, 16, -1, 64).any(axis=(0, 2, 4))  # noqa: E731
        assert not np.any(per_block(kept) & per_block(pruned)), name   # each block kept or pruned whole
        assert abs(1 - keep.mean() - 0.75) < 0.1, name
    x = rng.standard_normal((3, 2, 64)).astype(np.float32)
    layer(x)
    assert layer.block_sparse == [True]
    more = layer.prune(0.9, block="gates")   # iterative: only adds
    assert all(not np.any(more[n][~masks[n]]) for n in masks)
    with pytest.raises(ValueError, match="block"):
        layer.prune(0.5, block="units")
