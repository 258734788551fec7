"""Low-precision studies on scikit-learn's digits (shipped with scikit-learn; no download):
`python -m brgemm.studies`.

- DFP-16 training (Das et al., ICLR 2018): the same small CNN (two 3×3 convolutions with ReLU,
  1 → 16 → 32 channels, the second of stride 2, then a linear classifier: brgemm.nn.Conv2d and
  brgemm.nn.Linear, SGD) and the same two-layer MLP (64 → 128 ReLU → 10) trained from the same
  initial weights in float32 and in dtype="dfp16".
- Ternary residual weights (Kundu et al., SysML 2018): the float32 network's weights ternarized
  per block (brgemm.quant.ternarize) and evaluated with 0, 1, 2, ... residual levels on the
  ternary product (brgemm.nn.TernaryLinear: u8 activations × 2-bit weights, 8a-2w), against
  float32's accuracy.
"""

import numpy as np

from .demo import load_digits
from .nn import Conv2d, Linear
from .nn.functional import cross_entropy
from .nn.ternary import TernaryLinear
from .quant import ternarize

HIDDEN, EPOCHS, BATCH, LR = 128, 40, 64, 0.2
CNN_EPOCHS, CNN_LR = 20, 0.1


def _data():
    xtr, ytr, xte, yte = load_digits()
    return xtr.reshape(len(xtr), -1), ytr, xte.reshape(len(xte), -1), yte


def train(dtype, epochs=EPOCHS, seed=0):
    """The two layers trained in ``dtype`` from seed's initial weights; (layers, test accuracy)."""
    xtr, ytr, xte, yte = _data()
    layers = [Linear(64, HIDDEN, activation="relu", dtype=dtype, seed=seed),
              Linear(HIDDEN, 10, dtype=dtype, seed=seed + 1)]
    order_rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = order_rng.permutation(len(ytr))
        for i in range(0, len(order) - BATCH + 1, BATCH):
            idx = order[i:i + BATCH]
            h = layers[0](np.ascontiguousarray(xtr[idx]))
            _, g = cross_entropy(layers[1](h), ytr[idx])
            layers[0].backward(layers[1].backward(g), input_grad=False)
            for layer in layers:
                layer.apply_sgd(LR)
                layer.zero_grad()
    return layers, accuracy(layers, xte, yte)


def _cnn_forward(layers, x):
    h = layers[1](layers[0](x))
    return h, layers[2](h.reshape(len(h), -1))


def train_cnn(dtype, epochs=CNN_EPOCHS, seed=0):
    """The CNN trained in ``dtype`` from seed's initial weights; (layers, test accuracy)."""
    xtr, ytr, xte, yte = load_digits()
    xtr, xte = xtr[:, None], xte[:, None]  # (N, 1, 8, 8)
    layers = [Conv2d(1, 16, 3, padding=1, activation="relu", dtype=dtype, seed=seed),
              Conv2d(16, 32, 3, stride=2, padding=1, activation="relu", dtype=dtype, seed=seed + 1),
              Linear(32 * 4 * 4, 10, dtype=dtype, seed=seed + 2)]
    order_rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = order_rng.permutation(len(ytr))
        for i in range(0, len(order) - BATCH + 1, BATCH):
            idx = order[i:i + BATCH]
            h, out = _cnn_forward(layers, np.ascontiguousarray(xtr[idx]))
            _, g = cross_entropy(out, ytr[idx])
            g = layers[1].backward(np.ascontiguousarray(layers[2].backward(g).reshape(h.shape)))
            layers[0].backward(g, input_grad=False)
            for layer in layers:
                layer.apply_sgd(CNN_LR)
                layer.zero_grad()
    for layer in layers:
        layer.eval()
    _, out = _cnn_forward(layers, np.ascontiguousarray(xte))
    for layer in layers:
        layer.train()
    return layers, float((out.argmax(axis=1) == yte).mean())


def accuracy(layers, x, y):
    for layer in layers:
        layer.eval()
    out = layers[1](layers[0](np.ascontiguousarray(x)))
    for layer in layers:
        layer.train()
    return float((out.argmax(axis=1) == y).mean())


def _u8_scale(x):
    """8-bit activations: x ≥ 0 (ReLU outputs, pixels) on 0..255 with the batch's max as full scale."""
    return max(float(x.max()), 1e-12) / 255.0


def ternary_table(layers, block=16, max_residuals=3, error_target=0.0):
    """Test accuracy of the float32 ``layers`` with ternary residual weights and 8-bit activations
    (8a-2w: brgemm.nn.TernaryLinear, the ternary product on u8 activations) for each number of
    residual levels, lowered at inference on the same layers: [(residuals, accuracy, blocks per level)]."""
    _, _, xte, yte = _data()
    ts = [ternarize(layer.weight, block=block, max_residuals=max_residuals, error_target=error_target)
          for layer in layers]
    tl = [TernaryLinear(t, layer.bias, act) for t, layer, act in zip(ts, layers, ("relu", None))]
    rows = []
    for r in range(max_residuals + 1):
        h = np.ascontiguousarray(xte, np.float32)
        for layer in tl:
            layer.residuals, layer.input_scale = r, _u8_scale(h)
            h = layer(h)
        rows.append((r, float((h.argmax(axis=1) == yte).mean()), [int(t.blocks_per_level()[:r + 1].sum())
                                                                  for t in ts]))
    return rows


def main():
    _, cnn32 = train_cnn("float32")
    _, cnn16 = train_cnn("dfp16")
    print(f"digits, CNN (3x3 1->16, 3x3/2 16->32, linear), {CNN_EPOCHS} epochs of SGD (lr {CNN_LR}, batch {BATCH}), "
          "same initial weights:")
    print(f"  float32 {100 * cnn32:.2f} %   dfp16 {100 * cnn16:.2f} %   difference {100 * (cnn16 - cnn32):+.2f} pp")
    f32, acc32 = train("float32")
    _, acc16 = train("dfp16")
    print(f"digits, {HIDDEN}-unit MLP, {EPOCHS} epochs of SGD (lr {LR}, batch {BATCH}), same initial weights:")
    print(f"  float32 {100 * acc32:.2f} %   dfp16 {100 * acc16:.2f} %   difference {100 * (acc16 - acc32):+.2f} pp")
    print("ternary residual weights (8-bit activations), float32 network above:")
    for r, acc, blocks in ternary_table(f32):
        print(f"  residual levels {r}: {100 * acc:.2f} % ({100 * (acc - acc32):+.2f} pp; ternary blocks {blocks})")


if __name__ == "__main__":
    main()
