"""brgemm.torch.convert(model, dtype="dfp16"): the swapped Conv2d and Linear layers train in
DFP-16 (brgemm/torch/_dfp.py on brgemm.nn's dfp16 runners). A converted convolution against
PyTorch's float32 one within the roundings of its operands to their shared exponents (the bound
of tests/test_dfp_conv.py: half a step 2^(e−1) per value, plus float32 additions), forward and
weight gradient; a small converted CNN trains with torch.optim like its float32 copy."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import brgemm.torch as bt  # noqa: E402
from test_dfp_conv import EPS32, conv_grads_ref, conv_ref, rounded  # noqa: E402


def test_converted_conv_within_dfp16_bound(rng):
    torch.manual_seed(0)
    ref = torch.nn.Conv2d(24, 40, 3, stride=1, padding=1)
    model = torch.nn.Sequential(copy.deepcopy(ref))
    report = bt.convert(model, dtype="dfp16")
    conv = model[0]
    assert isinstance(conv, bt.Conv2d) and conv.compute_dtype == "dfp16" and report.swapped
    x = torch.from_numpy(rng.standard_normal((2, 24, 9, 9), dtype=np.float32))
    y = conv(x)
    y32 = ref(x)
    e = conv._dfp[1].cv.exponents
    w = ref.weight.detach().numpy()
    geo = (1, 1), (1, 1, 1, 1), (1, 1)
    xn = x.numpy()
    wr = rounded(w, e["weight"])
    mag = conv_ref(np.abs(rounded(xn, e["x"])), np.abs(wr), *geo) + np.abs(ref.bias.detach().numpy())[None, :, None,
                                                                                                      None]
    step = (2.0 ** (e["weight"] - 1) * conv_ref(np.abs(xn), np.ones_like(w), *geo)
            + 2.0 ** (e["x"] - 1) * conv_ref(np.ones_like(xn), np.abs(wr), *geo))
    bound = step + 2 * (24 * 9 + 2) * EPS32 * mag
    assert np.all(np.abs(y.detach().numpy() - y32.detach().numpy()) <= bound)

    gy = torch.from_numpy(rng.standard_normal(tuple(y.shape), dtype=np.float32))
    y.backward(gy)
    y32.backward(gy)
    e = conv._dfp[1].cv.exponents
    g = gy.numpy()
    # ∂W = Σ_pixels ∂y·x: each product off by at most |∂y|·2^(ex−1) + 2^(ez−1)·|x̂|
    _, a = conv_grads_ref(np.ones_like(xn), w, np.abs(g), *geo)
    _, b = conv_grads_ref(np.abs(rounded(xn, e["x"])), w, np.ones_like(g), *geo)
    _, mag_w = conv_grads_ref(np.abs(rounded(xn, e["x"])), w, np.abs(rounded(g, e["grad"])), *geo)
    bound_w = 2.0 ** (e["x"] - 1) * a + 2.0 ** (e["grad"] - 1) * b + 2 * (2 * 9 + 8) * EPS32 * mag_w
    assert np.all(np.abs(conv.weight.grad.numpy() - ref.weight.grad.numpy()) <= bound_w)
    assert np.allclose(conv.bias.grad.numpy(), ref.bias.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_converted_cnn_trains(rng):
    """The converted CNN's loss falls as its float32 copy's does, and ends within 5 % of it (as
    the Linear study: DFP-16's ~2^−12 relative products change a few SGD steps' rounding only)."""
    torch.manual_seed(1)
    f32 = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(16 * 4 * 4, 5))
    d16 = copy.deepcopy(f32)
    report = bt.convert(d16, dtype="dfp16")
    assert [s[2] for s in report.swapped] == ["brgemm.torch.Conv2d"] * 2 + ["brgemm.torch.Linear"]
    assert d16[0].activation == "relu" and d16[0].compute_dtype == "dfp16"
    x = torch.from_numpy(rng.standard_normal((32, 3, 8, 8), dtype=np.float32))
    target = torch.from_numpy(rng.integers(0, 5, 32))
    losses = {}
    for name, model in (("float32", f32), ("dfp16", d16)):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        curve = []
        for _ in range(30):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), target)
            loss.backward()
            opt.step()
            curve.append(float(loss.detach()))
        losses[name] = curve
    assert losses["dfp16"][-1] < 0.7 * losses["dfp16"][0], losses["dfp16"]
    assert abs(losses["dfp16"][-1] - losses["float32"][-1]) <= 0.05 * losses["float32"][-1], losses


def test_errors():
    with pytest.raises(ValueError, match="dtype"):
        bt.convert(torch.nn.Conv2d(2, 2, 1), dtype="dfp8")
    conv = bt.Conv2d(4, 4, 3, compute_dtype="dfp16")
    with pytest.raises(ValueError, match="input must be"):
        conv(torch.ones(4, 5, 5))
    y = conv(torch.ones(1, 4, 5, 5, requires_grad=True))
    conv(torch.ones(1, 4, 5, 5))  # a second forward before the first's backward
    with pytest.raises(RuntimeError, match="backward"):
        y.sum().backward()
    with pytest.raises(ValueError, match="groups=1"):
        bt.Conv2d(4, 4, 3, groups=2, compute_dtype="dfp16")
    lstm = torch.nn.Sequential(torch.nn.LSTM(3, 4))
    bt.convert(lstm, dtype="dfp16")  # swapped, in float32
    assert lstm[0].compute_dtype is None
