"""brgemm.nn.Sequential, Flatten, functional.cross_entropy and apply_sgd: enough to train a
small model with brgemm alone (the digits study in test_quant.py trains one)."""

import numpy as np
import pytest

from brgemm.nn import GRU, Conv2d, Flatten, Linear, Sequential, functional


def test_cross_entropy_value_and_gradient(rng):
    z = rng.standard_normal((5, 7)) * 3
    y = rng.integers(0, 7, 5)
    loss, g = functional.cross_entropy(z, y)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert loss == pytest.approx(-np.log(p[np.arange(5), y]).mean(), rel=1e-12)
    eps = 1e-6
    for idx in [(0, 0), (3, 5)]:
        zp, zm = z.copy(), z.copy()
        zp[idx] += eps
        zm[idx] -= eps
        fd = (functional.cross_entropy(zp, y)[0] - functional.cross_entropy(zm, y)[0]) / (2 * eps)
        assert g[idx] == pytest.approx(fd, abs=1e-6)
    big, _ = functional.cross_entropy(np.array([[1000.0, 0.0]]), np.array([1]))
    assert big == pytest.approx(1000.0)            # no overflow
    with pytest.raises(ValueError, match="labels must be in"):
        functional.cross_entropy(z, np.full(5, 7))


def test_sequential_backward_and_sgd_match_the_layers(rng):
    conv, lin = Conv2d(2, 3, 3, padding=1, seed=1), Linear(3 * 16, 4, seed=2)
    model = Sequential(conv, Flatten(), lin)
    x = rng.standard_normal((2, 2, 4, 4)).astype(np.float32)
    g = rng.standard_normal((2, 4)).astype(np.float32)
    y = model(x)
    np.testing.assert_array_equal(y, lin(conv(x).reshape(2, -1)))
    model.zero_grad()
    model(x)
    dx = model.backward(g, input_grad=True)
    assert dx.shape == x.shape
    w0 = conv.weight.copy()
    grad = conv.weight_grad.copy()
    model.apply_sgd(0.5)
    np.testing.assert_allclose(conv.weight, w0 - np.float32(0.5) * grad, rtol=1e-6)
    assert not np.array_equal(model(x), y)          # the next forward sees the new weights
    assert len(model) == 3 and isinstance(model[1], Flatten)
    with pytest.raises(TypeError, match="has no forward"):
        Sequential(object())


def test_rnn_apply_sgd(rng):
    m = GRU(3, 5, seed=0)
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    m(x)
    m.backward(np.ones((4, 2, 5), np.float32))
    w, g = m.weight_hh_l0.copy(), m.weight_hh_l0_grad.copy()
    m.apply_sgd(0.1)
    np.testing.assert_allclose(m.weight_hh_l0, w - np.float32(0.1) * g, rtol=1e-6)
    with pytest.raises(ValueError, match="lr must be finite"):
        m.apply_sgd(float("nan"))
