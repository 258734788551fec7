"""Plans: the layer drivers set up their kernels once per call shape and reuse them.

A plan holds kernels dispatched under the ISA that was active when it was built. After
``set_isa`` the same layer object must run the new level's kernels, not the plan it kept:
its result is compared bit for bit with a layer built fresh under that level (and, where the
two levels round differently, shown to differ from the first level's result, so that the
comparison sees which kernels ran). Shapes that come back (another batch size, then the first
again) must give the first result again.
"""

import numpy as np
import pytest

import brgemm
from brgemm.nn import GRU, LSTM, Conv2d, Linear
from brgemm.testing import bits
from conftest import restore_isa


def _best_and_scalar():
    levels = brgemm.available_isas()
    if len(levels) < 2:
        pytest.skip(f"only {levels[0]} here: no second ISA level to switch to")
    return levels[-1], "scalar"


def _layers():
    """name -> (make a layer, run it once on fixed inputs)."""
    rng = np.random.default_rng(11)
    x_conv = rng.standard_normal((2, 20, 9, 9)).astype(np.float32)
    x_fc = rng.standard_normal((33, 70)).astype(np.float32)
    x_rnn = rng.standard_normal((5, 6, 24)).astype(np.float32)
    a_gemm = rng.standard_normal((70, 300)).astype(np.float32)
    b_gemm = rng.standard_normal((300, 90)).astype(np.float32)
    return {
        "conv": (lambda: Conv2d(20, 24, 3, padding=1, activation="relu", seed=1), lambda m: m(x_conv)),
        "conv_backward": (lambda: Conv2d(20, 24, 3, padding=1, seed=1),
                          lambda m: (m(x_conv), m.backward(np.ones((2, 24, 9, 9), np.float32)))[1]),
        "linear": (lambda: Linear(70, 50, activation="relu", seed=2), lambda m: m(x_fc)),
        "lstm": (lambda: LSTM(24, 20, seed=3), lambda m: m(x_rnn)[0]),
        "gru": (lambda: GRU(24, 20, seed=4), lambda m: m(x_rnn)[0]),
        "gemm": (lambda: None, lambda m: brgemm.gemm(a_gemm, b_gemm)),
    }


@pytest.mark.parametrize("name", list(_layers()))
def test_set_isa_between_calls_rebuilds_the_plan(name):
    best, low = _best_and_scalar()
    make, run = _layers()[name]
    try:
        brgemm.set_isa(best)
        layer = make()
        first = bits(run(layer))
        brgemm.set_isa(low)
        switched = bits(run(layer))
        fresh = bits(run(make()))
        brgemm.set_isa(best)
        back = bits(run(layer))
    finally:
        restore_isa()
    assert np.array_equal(switched, fresh), f"{name}: after set_isa({low!r}) the layer kept its old plan"
    assert np.array_equal(back, first), f"{name}: back on {best} the result changed"


def test_the_levels_round_differently_here():
    """What makes the test above see the kernels: scalar and the best level give different bits
    for a conv and an LSTM (else that test could not tell their plans apart)."""
    best, low = _best_and_scalar()
    layers = _layers()
    try:
        got = {}
        for level in (best, low):
            brgemm.set_isa(level)
            got[level] = [bits(layers[n][1](layers[n][0]())) for n in ("conv", "lstm")]
    finally:
        restore_isa()
    for a, b in zip(got[best], got[low]):
        assert not np.array_equal(a, b)


def test_a_shape_that_comes_back_gives_its_result_again():
    rng = np.random.default_rng(5)
    conv = Conv2d(20, 24, 3, padding=1, seed=1)
    fc = Linear(70, 50, seed=2)
    xs = [rng.standard_normal((n, 20, h, h)).astype(np.float32) for n, h in ((2, 9), (3, 7), (1, 12), (2, 5), (4, 6))]
    fs = [rng.standard_normal((n, 70)).astype(np.float32) for n in (33, 7, 64, 1, 130)]
    first_conv, first_fc = bits(conv(xs[0])), bits(fc(fs[0]))
    for x, f in zip(xs[1:], fs[1:]):  # more shapes than a layer keeps plans for
        conv(x)
        fc(f)
    assert np.array_equal(bits(conv(xs[0])), first_conv)
    assert np.array_equal(bits(fc(fs[0])), first_fc)
