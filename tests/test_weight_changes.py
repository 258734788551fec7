"""How brgemm.nn layers see changes of their own parameter arrays (nn/_parameters.OwnedArrays):
a forward that follows no read of the attributes, while nothing outside the layer references
the arrays, skips the comparison with what was packed; every write is still seen, whichever way
it reaches the array (the attribute, a reference or a view kept across forwards, a torch tensor
sharing the memory, assignment, the layer's own SGD step)."""

import numpy as np
import pytest

import brgemm.nn as bn


def _linear(dtype):
    def make(rng):
        layer = bn.Linear(40, 70, dtype=dtype, seed=1)
        return layer, rng.standard_normal((5, 40)).astype(np.float32), "weight"
    return make


def _mlp(rng):
    mlp = bn.MLP([40, 70, 30], seed=1)
    return mlp.layers[1], rng.standard_normal((5, 40)).astype(np.float32), "weight", mlp


def _conv(rng):
    return bn.Conv2d(5, 20, 3, padding=1, seed=1), rng.standard_normal((2, 5, 6, 7)).astype(np.float32), "weight"


def _lstm(rng):
    return bn.LSTM(6, 20, seed=1), rng.standard_normal((3, 2, 6)).astype(np.float32), "weight_hh_l0"


def _qlinear(rng):
    q = bn.QuantizedLinear(40, 70, input_scale=0.05, input_zero_point=3, seed=1)
    return q, rng.integers(0, 256, (5, 40), dtype=np.uint8), "weight"


def _qconv(rng):
    q = bn.QuantizedConv2d(8, 20, 3, padding=1, input_scale=0.05, input_zero_point=3, seed=1)
    return q, rng.integers(0, 256, (2, 8, 6, 7), dtype=np.uint8), "weight"


LAYERS = {"linear_f32": _linear("float32"), "linear_bf16": _linear("bfloat16"), "mlp": _mlp, "conv": _conv,
          "lstm": _lstm, "qlinear": _qlinear, "qconv": _qconv}


def _setup(name, rng):
    made = LAYERS[name](rng)
    layer, x, attr = made[:3]
    model = made[3] if len(made) > 3 else layer
    for m in (model,):
        if hasattr(m, "eval"):
            m.eval()

    def run():
        y = model(x)
        return (y[0] if isinstance(y, tuple) else y).astype(np.float64)
    return layer, attr, run


def _bump(a):
    """A change every output shows: each element moved (int8: its lowest bit flipped)."""
    if a.dtype == np.int8:
        a ^= 1
    else:
        a += 0.25


def _fresh_output(layer, attr, run):
    """The output of a layer whose arrays equal the current ones, packed from scratch."""
    current = getattr(layer, attr).copy()
    setattr(layer, attr, current)   # assignment: a new array, so the next forward compares and packs
    return run()


def _skips(layer):
    """Whether the next forward would skip the comparison."""
    key = tuple(layer._quantization()) if isinstance(layer, bn.QuantizedConv2d) else ()
    return layer._runner.weights.current(layer._owned.token(), key)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_unread_arrays_skip_the_comparison(name, rng):
    layer, attr, run = _setup(name, rng)
    run()
    if name == "lstm":
        assert all(d.weights.current(layer._owned.token()) for d in layer._drivers)
    else:
        assert _skips(layer)
    getattr(layer, attr)             # a read may lead to a write: the next forward compares
    if name != "lstm":
        assert not _skips(layer)
    run()
    if name != "lstm":
        assert _skips(layer)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_writes_through_kept_references_are_seen(name, rng):
    layer, attr, run = _setup(name, rng)
    before = run()
    kept = getattr(layer, attr)      # kept across forwards
    view = kept[1:]                  # a view, also kept
    run()
    run()
    _bump(kept)
    after = run()
    assert not np.array_equal(after, before)
    np.testing.assert_array_equal(after, _fresh_output(layer, attr, run))
    kept = getattr(layer, attr)      # (the layer's new array)
    view = kept[1:]
    run()
    del kept                         # only the view is left
    run()
    _bump(view)
    after2 = run()
    assert not np.array_equal(after2, after)
    np.testing.assert_array_equal(after2, _fresh_output(layer, attr, run))


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_writes_through_the_attribute_are_seen(name, rng):
    layer, attr, run = _setup(name, rng)
    before = run()
    run()
    _bump(getattr(layer, attr))      # the reference dies with the statement
    after = run()
    assert not np.array_equal(after, before)
    np.testing.assert_array_equal(after, _fresh_output(layer, attr, run))


def test_writes_through_a_torch_tensor_sharing_the_memory_are_seen(rng):
    torch = pytest.importorskip("torch")
    layer, attr, run = _setup("linear_f32", rng)
    shared = torch.from_numpy(layer.weight)   # holds the array: every forward compares
    before = run()
    run()
    shared[0, 0] += 1.0
    after = run()
    assert not np.array_equal(after, before)
    np.testing.assert_array_equal(after, _fresh_output(layer, attr, run))


def test_assignment_copies(rng):
    layer, attr, run = _setup("qlinear", rng)
    w = layer.weight.copy()
    layer.weight = w
    run()
    w[0, 0] = -w[0, 0] if w[0, 0] else 5   # the caller's array is not the layer's
    assert not np.shares_memory(w, layer.weight)


def test_sgd_steps_are_seen(rng):
    conv = bn.Conv2d(5, 8, 3, padding=1, seed=1)
    x = rng.standard_normal((2, 5, 6, 6)).astype(np.float32)
    y0 = conv(x)
    conv.backward(np.ones_like(y0))
    conv.apply_sgd(0.5)
    y1 = conv(x)
    assert not np.array_equal(y0, y1)
    conv.weight = conv.weight.copy()
    np.testing.assert_array_equal(y1, conv(x))
