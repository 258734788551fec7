"""Studies on scikit-learn's digits (no download): the MLP and CNN of tests/test_quant.py, trained in
float32 with brgemm alone, then (1) pruned iteratively to 50, 70, 80, 90 and 95 % with 10 epochs of
retraining after each step (Han et al. 2015), and (2) with 4-bit shared weights whose centroids are
fine-tuned for 5 epochs by the gradients summed per cluster (Deep Compression). At 80 % and at 4
bits the top-1 must be within 0.5 points of float32 (360 test images: at most one image lost).

The layers (64 × 64 and smaller) are each a single 64 × 64 kernel block, so pruning is
unstructured here (block=1); run with -s to see the accuracy-against-sparsity curve.
"""

import numpy as np
import pytest

from brgemm.nn import functional as F
from brgemm.quant import centroid_gradients, share_weights

from test_quant import _digits, _models, _train

MODELS = {name: (shape, make) for name, shape, make in _models()}
SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95)


def _top1(model, x, y, test, shape):
    return float((model.eval()(x[test].reshape((-1,) + shape)).argmax(1) == y[test]).mean())


def _weighted(model):
    return [layer for layer in model.layers if hasattr(layer, "prune")]


@pytest.fixture(scope="module")
def digits():
    return _digits()


@pytest.mark.parametrize("name", list(MODELS))
def test_pruned_to_80_percent_with_retraining_keeps_top1(digits, name):
    x, y, train, test = digits
    shape, make = MODELS[name]
    model = _train(make("float32"), x, y, train, shape)
    fp32 = _top1(model, x, y, test, shape)
    curve = {}
    for sparsity in SPARSITIES:
        for layer in _weighted(model):
            layer.prune(sparsity, block=1)
        pruned = _top1(model, x, y, test, shape)
        _train(model.train(), x, y, train, shape, epochs=10, lr=0.05)
        curve[sparsity] = (pruned, _top1(model, x, y, test, shape))
        for layer in _weighted(model):   # the masks held through the retraining
            assert not layer.weight[~layer.mask].any()
            assert layer.sparsity == pytest.approx(sparsity, abs=0.01)
    print(f"\ndigits {name}: float32 top-1 {fp32:.4f}; sparsity: (pruned, retrained) "
          + ", ".join(f"{s:.0%}: ({a:.4f}, {b:.4f})" for s, (a, b) in curve.items()))
    assert curve[0.8][1] >= fp32 - 0.005
    assert curve[0.8][0] < curve[0.8][1]   # retraining recovers what pruning cost


@pytest.mark.parametrize("name", list(MODELS))
def test_4bit_shared_weights_with_centroid_fine_tuning_keep_top1(digits, name):
    x, y, train, test = digits
    shape, make = MODELS[name]
    model = _train(make("float32"), x, y, train, shape)
    fp32 = _top1(model, x, y, test, shape)
    layers, books = _weighted(model), []
    for layer in layers:
        codebook, idx = share_weights(layer.weight, 4)
        layer.weight = codebook[idx]
        books.append((codebook, idx))
    shared = _top1(model, x, y, test, shape)
    model.train()
    for epoch in range(5):
        order = np.random.default_rng(100 + epoch).permutation(train)
        for i in range(0, len(order), 32):
            b = order[i:i + 32]
            model.zero_grad()
            _, g = F.cross_entropy(model(x[b].reshape((-1,) + shape)), y[b])
            model.backward(g)
            for layer, (codebook, idx) in zip(layers, books):
                codebook -= np.float32(0.01) * centroid_gradients(idx, layer.weight_grad, 4)
            model.apply_sgd(0.05)   # the biases; the weights are the codebooks' again below
            for layer, (codebook, idx) in zip(layers, books):
                layer.weight = codebook[idx]
    tuned = _top1(model, x, y, test, shape)
    for layer, (codebook, idx) in zip(layers, books):
        assert len(np.unique(layer.weight)) <= 16
    print(f"\ndigits {name}: float32 top-1 {fp32:.4f}, 4-bit shared {shared:.4f}, centroids fine-tuned {tuned:.4f}")
    assert tuned >= fp32 - 0.005
