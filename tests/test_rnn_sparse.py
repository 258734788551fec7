"""Block-sparse recurrent and input products (brgemm.nn.LSTM/GRU.packing, layers/rnn.h): each
hidden block's W_hh slice (and its columns of W_ihᵀ, when input_size is a multiple of 16) is read
in row blocks, and the BRGEMM lists only those that hold a nonzero. The kept products are summed in the dense call's order, so outputs and final states
equal the dense forward's bit for bit on every ISA (acc + a·0 = acc for finite a)."""

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
                                                    (LSTM, 24, 40, 16, None)])  # 24: the input product dense
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
