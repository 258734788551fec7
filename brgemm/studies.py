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
- The same on a CNN (Conv2d 1→8 3×3 ReLU, Conv2d 8→16 3×3 stride 2 ReLU, Linear 256→10) trained
  in float32, converted whole by brgemm.quant.quantize_model to 8-bit activations and int8
  weights (8a-8w) and to ternary weights with residual levels (8a-2w: TernaryConv2d /
  TernaryLinear), the levels then lowered on the same model (brgemm.quant.set_residuals): test
  accuracy against residual levels, ternary blocks and the reduction of multiplies against 8a-8w.
"""

import numpy as np

from .demo import load_digits
from .nn import Conv2d, Flatten, Linear, Sequential
from .nn.functional import cross_entropy
from .nn.ternary import TernaryLinear
from .quant import quantize_model, set_residuals, ternarize

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


TERNARY_CNN_EPOCHS, TERNARY_CNN_LR, TERNARY_CNN_BATCH = 30, 0.1, 32


def train_ternary_cnn(epochs=TERNARY_CNN_EPOCHS, seed=0):
    """The digits CNN of the ternary study trained in float32 with brgemm alone; (model in eval
    mode, test accuracy)."""
    xtr, ytr, xte, yte = load_digits()
    model = Sequential(Conv2d(1, 8, 3, padding=1, activation="relu", seed=seed + 1),
                       Conv2d(8, 16, 3, stride=2, padding=1, activation="relu", seed=seed + 2),
                       Flatten(), Linear(256, 10, seed=seed + 3))
    xtr = xtr[:, None]
    order_rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = order_rng.permutation(len(ytr))
        for i in range(0, len(order), TERNARY_CNN_BATCH):
            idx = order[i:i + TERNARY_CNN_BATCH]
            model.zero_grad()
            _, g = cross_entropy(model(np.ascontiguousarray(xtr[idx])), ytr[idx])
            model.backward(g)
            model.apply_sgd(TERNARY_CNN_LR)
    model.eval()
    return model, _top1(model, xte[:, None], yte)


def _top1(model, x, y):
    return float((np.asarray(model(np.ascontiguousarray(x)), np.float32).argmax(axis=1) == y).mean())


def ternary_cnn_table(model, block=16, max_residuals=3, error_target=0.05, calibration=512):
    """The float32 digits CNN ``model`` converted to 8a-8w (int8 weights) and to 8a-2w ternary
    weights with up to ``max_residuals`` residual levels per block (quantize_model; min-max
    calibration on the first ``calibration`` training images), the levels lowered at inference.

    Returns (int8 accuracy, rows): one row per number of residual levels r = 0..max_residuals,
    dict(residuals, accuracy, blocks, reduction): ``blocks`` the ternary blocks the r + 1 levels
    hold over all layers, ``reduction`` the multiplies of 8a-8w (one per weight and output
    position) over those of 8a-2w (one α per ternary block and output position: inside a block
    the ±1 codes only add)."""
    xtr, _, xte, yte = load_digits()
    cal = [np.ascontiguousarray(xtr[i:i + 128, None]) for i in range(0, calibration, 128)]
    q8, _ = quantize_model(model, cal, method="minmax")
    acc8 = _top1(q8, xte[:, None], yte)
    qt, report = quantize_model(model, cal, method="minmax", weights="ternary", block=block,
                                max_residuals=max_residuals, error_target=error_target)
    # output positions of each weighted layer for one image
    positions, x = {}, np.ascontiguousarray(xte[:1, None])
    for i, layer in enumerate(model.layers):
        x = layer(x)
        positions[i] = int(np.prod(x.shape[2:])) if x.ndim == 4 else 1
    dense = sum(positions[r["layer"]] * model.layers[r["layer"]].weight.size for r in report)
    rows = []
    for r in range(max_residuals + 1):
        set_residuals(qt, r)
        blocks = sum(sum(row["blocks"][:r + 1]) for row in report)
        mults = sum(positions[row["layer"]] * sum(row["blocks"][:r + 1]) for row in report)
        rows.append({"residuals": r, "accuracy": _top1(qt, xte[:, None], yte), "blocks": int(blocks),
                     "reduction": dense / mults})
    return acc8, rows


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
    cnn, acc_cnn = train_ternary_cnn()
    acc8, rows = ternary_cnn_table(cnn)
    print(f"digits CNN (conv 1→8, conv 8→16 stride 2, linear 256→10), {TERNARY_CNN_EPOCHS} epochs of SGD "
          f"(lr {TERNARY_CNN_LR}, batch {TERNARY_CNN_BATCH}), whole model converted (min-max calibration):")
    print(f"  float32 {100 * acc_cnn:.2f} %   8a-8w (int8) {100 * acc8:.2f} % ({100 * (acc8 - acc_cnn):+.2f} pp)")
    print("  8a-2w ternary (block 16, error target 0.05), residual levels lowered at inference:")
    print("  | residual levels | test accuracy | vs float32 | ternary blocks | multiplies vs 8a-8w |")
    for row in rows:
        print(f"  | {row['residuals']} | {100 * row['accuracy']:.2f} % | {100 * (row['accuracy'] - acc_cnn):+.2f} pp "
              f"| {row['blocks']} | {row['reduction']:.1f}× fewer |")
    print("  error target (residual blocks only where a block's relative error is above it), all levels:")
    for target in (0.05, 0.2, 0.3, 0.4):
        row = ternary_cnn_table(cnn, error_target=target)[1][-1]
        print(f"  | {target} | {100 * row['accuracy']:.2f} % | {100 * (row['accuracy'] - acc_cnn):+.2f} pp "
              f"| {row['blocks']} | {row['reduction']:.1f}× fewer |")


if __name__ == "__main__":
    main()
