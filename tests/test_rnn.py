"""brgemm.nn.LSTM / GRU: forward outputs, final states and every gradient against a float64
numpy step loop and PyTorch's modules with copied weights (autograd in float64), over odd sizes
(I ≠ H, H not a multiple of 16, N = 1, T = 1), stacked and bidirectional layers and variable
lengths; finite differences; bf16; K-TanH gates; every ISA; parameters; errors;
bucket_by_length.

Tolerances: each step's products are float32 sums of at most K = max(I, 2H) terms (relative
error ≤ K·2⁻²⁴ of Σ|w||v|, below 1e-5 for these sizes and weights of 1/√H), and the gates'
polynomial exp is within 2e-7 of the true sigmoid / tanh; over at most 6 steps, through gates
whose derivatives are ≤ 1, the outputs stay within 2e-5 (absolute and relative, the 'F32' bound
below), the gradients within 5e-5 (two passes).
"""

import brgemm
import ml_dtypes
import numpy as np
import pytest

from brgemm.nn import GRU, LSTM, bucket_by_length
from conftest import restore_isa

BF16 = ml_dtypes.bfloat16
F32 = 2e-5
F32_GRAD = 5e-5

# (I, H, layers, bidirectional, N, T, lengths)
CASES = [
    (5, 7, 1, False, 3, 4, None),             # tiny, H below one block
    (13, 20, 2, True, 5, 6, [6, 5, 5, 3, 1]),  # stacked, both directions, ragged lengths
    (8, 33, 1, False, 1, 1, None),             # N = 1, T = 1, H past two blocks
    (24, 16, 1, True, 2, 5, [5, 2]),           # reverse direction with lengths
]
IDS = ["tiny", "stacked_bidir_ragged", "n1_t1", "bidir_ragged"]


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def ref_forward(m, x, lengths=None, state=None):
    """float64 step loop over m's parameters: (y, h_T, c_T) as PyTorch defines them."""
    t, n, _ = x.shape
    h_, dirs, lstm = m.hidden_size, 2 if m.bidirectional else 1, isinstance(m, LSTM)
    lens = np.full(n, t) if lengths is None else np.asarray(lengths)
    inp = x.astype(np.float64)
    hT = np.zeros((m.num_layers * dirs, n, h_))
    cT = np.zeros_like(hT)
    for k in range(m.num_layers):
        y = np.zeros((t, n, dirs * h_))
        for d in range(dirs):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            wi, wh = (getattr(m, f"weight_{s}{sfx}").astype(np.float64) for s in ("ih", "hh"))
            bi, bh = ((getattr(m, f"bias_{s}{sfx}").astype(np.float64) for s in ("ih", "hh")) if m.bias
                      else (np.zeros(wi.shape[0]), np.zeros(wi.shape[0])))
            idx = k * dirs + d
            for i in range(n):
                h = np.zeros(h_) if state is None else np.asarray(state[0] if lstm else state)[idx, i].astype(np.float64)
                c = np.zeros(h_) if state is None or not lstm else np.asarray(state[1])[idx, i].astype(np.float64)
                steps = range(lens[i] - 1, -1, -1) if d else range(lens[i])
                for s in steps:
                    gx, gh = wi @ inp[s, i] + bi, wh @ h + bh
                    if lstm:
                        ig, fg, gg, og = np.split(gx + gh, 4)
                        c = sigmoid(fg) * c + sigmoid(ig) * np.tanh(gg)
                        h = sigmoid(og) * np.tanh(c)
                    else:
                        r = sigmoid(gx[:h_] + gh[:h_])
                        z = sigmoid(gx[h_:2 * h_] + gh[h_:2 * h_])
                        nn_ = np.tanh(gx[2 * h_:] + r * gh[2 * h_:])
                        h = (1 - z) * nn_ + z * h
                    y[s, i, d * h_:(d + 1) * h_] = h
                hT[idx, i], cT[idx, i] = h, c
        inp = y
    return inp, hT, cT


def assert_close(got, ref, tol, what):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    err = np.abs(got - ref) - tol * (1 + np.abs(ref))
    assert err.max() <= 0, f"{what}: max excess {err.max():.3g} at {np.unravel_index(np.argmax(err), err.shape)}"


def make(cls, case, seed=1, **kw):
    i_, h_, layers, bidir, n, t, lengths = case
    m = cls(i_, h_, layers, bidirectional=bidir, seed=seed, **kw)
    x = np.random.default_rng(seed).standard_normal((t, n, i_)).astype(np.float32)
    return m, x, lengths


@pytest.mark.parametrize("cls", [LSTM, GRU])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_matches_float64_step_loop(isa, cls, case):
    m, x, lengths = make(cls, case)
    y, st = m(x, lengths=lengths)
    ry, rh, rc = ref_forward(m, x, lengths)
    assert y.dtype == np.float32 and y.shape == ry.shape
    assert_close(y, ry, F32, "y")
    assert_close(st[0] if cls is LSTM else st, rh, F32, "h_T")
    if cls is LSTM:
        assert_close(st[1], rc, F32, "c_T")
    if lengths is not None:  # outputs past each sequence's end are zero
        for i, ln in enumerate(lengths):
            assert not y[ln:, i].any()


def _torch_module(torch, m):
    cls = torch.nn.LSTM if isinstance(m, LSTM) else torch.nn.GRU
    t = cls(m.input_size, m.hidden_size, m.num_layers, bias=m.bias, bidirectional=m.bidirectional).double()
    names = [name for name, _ in t.named_parameters()]
    assert names == list(m.parameters()), "PyTorch's parameter names and order"
    with torch.no_grad():
        for name, p in t.named_parameters():
            p.copy_(torch.from_numpy(getattr(m, name).astype(np.float64)))
    return t


@pytest.mark.parametrize("cls", [LSTM, GRU])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_and_gradients_match_torch(rng, cls, case):
    torch = pytest.importorskip("torch")
    m, x, lengths = make(cls, case)
    i_, h_, layers, bidir, n, t, _ = case
    ld = layers * (2 if bidir else 1)
    lstm = cls is LSTM
    h0 = rng.standard_normal((ld, n, h_)).astype(np.float32)
    c0 = rng.standard_normal((ld, n, h_)).astype(np.float32)
    state = (h0, c0) if lstm else h0
    y, st = m(x, state, lengths=lengths)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    if lengths is not None:
        for i, ln in enumerate(lengths):
            gy[ln:, i] = 0
    ghT = rng.standard_normal((ld, n, h_)).astype(np.float32)
    gcT = rng.standard_normal((ld, n, h_)).astype(np.float32)
    m.zero_grad()
    dx, dstate = m.backward(gy, (ghT, gcT) if lstm else ghT)

    tm = _torch_module(torch, m)
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    h0t = torch.from_numpy(h0.astype(np.float64)).requires_grad_()
    c0t = torch.from_numpy(c0.astype(np.float64)).requires_grad_()
    inp = xt
    if lengths is not None:
        inp = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lengths), enforce_sorted=True)
    yt, stt = tm(inp, (h0t, c0t) if lstm else h0t)
    if lengths is not None:
        yt, _ = torch.nn.utils.rnn.pad_packed_sequence(yt, total_length=t)
    hTt = stt[0] if lstm else stt
    loss = (yt * torch.from_numpy(gy.astype(np.float64))).sum() + (hTt * torch.from_numpy(ghT.astype(np.float64))).sum()
    if lstm:
        loss = loss + (stt[1] * torch.from_numpy(gcT.astype(np.float64))).sum()
    loss.backward()

    assert_close(y, yt.detach().numpy(), F32, "y")
    assert_close(st[0] if lstm else st, hTt.detach().numpy(), F32, "h_T")
    assert_close(dx, xt.grad.numpy(), F32_GRAD, "grad x")
    assert_close(dstate[0] if lstm else dstate, h0t.grad.numpy(), F32_GRAD, "grad h0")
    if lstm:
        assert_close(st[1], stt[1].detach().numpy(), F32, "c_T")
        assert_close(dstate[1], c0t.grad.numpy(), F32_GRAD, "grad c0")
    for name, p in tm.named_parameters():
        assert_close(getattr(m, name + "_grad"), p.grad.numpy(), F32_GRAD, name + "_grad")


@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_gradients_by_finite_differences(cls):
    """Central differences of loss = Σ g·y on a float64 copy of the step loop (exact to
    O(eps²) ≈ 1e-8), against our backward."""
    m, x, _ = make(cls, (3, 5, 1, True, 2, 3, None), seed=4)
    g = np.random.default_rng(5).standard_normal((3, 2, 10))
    m(x)
    dx, _ = m.backward(g.astype(np.float32))

    def loss(xv):
        return float((ref_forward(m, xv)[0] * g).sum())
    eps = 1e-4
    for idx in [(0, 0, 0), (1, 1, 2), (2, 0, 1)]:
        xp, xm = x.astype(np.float64), x.astype(np.float64)
        xp[idx] += eps
        xm[idx] -= eps
        fd = (loss(xp) - loss(xm)) / (2 * eps)
        assert abs(dx[idx] - fd) <= 1e-4 * (1 + abs(fd)), (idx, dx[idx], fd)
    w = m.weight_hh_l0_reverse
    for idx in [(0, 1), (7, 4)]:
        old = w[idx]
        w[idx] = old + eps
        lp = loss(x)
        w[idx] = old - eps
        lm = loss(x)
        w[idx] = old
        fd = (lp - lm) / (2 * eps)
        got = m.weight_hh_l0_reverse_grad[idx]
        assert abs(got - fd) <= 1e-4 * (1 + abs(fd)), (idx, got, fd)


@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_bfloat16_within_its_rounding(cls):
    """A bf16 layer against the float64 loop on bf16-rounded weights and x: the rest is h
    rounded to bf16 before each recurrent product, |Δ(W·h)| ≤ 2⁻⁹·Σ|W||h| ≤ 2⁻⁹·max row Σ|W|,
    carried through T = 4 steps of gates whose derivatives are ≤ 1: at most 4 such terms."""
    case = (16, 24, 1, False, 3, 4, None)
    m, x, _ = make(cls, case, dtype="bfloat16")
    for name, v in m.parameters().items():
        setattr(m, name, v.astype(BF16).astype(np.float32))
    xb = x.astype(BF16)
    y, _ = m(xb)
    assert y.dtype == BF16
    ry, _, _ = ref_forward(m, xb.astype(np.float32))
    row = np.abs(m.weight_hh_l0).sum(axis=1).max()
    bound = 4 * 2.0 ** -9 * row + 2.0 ** -8  # + the final rounding of y to bf16
    assert np.abs(y.astype(np.float64) - ry).max() <= bound
    gy = np.ones(y.shape, np.float32)
    dx, _ = m.backward(gy)
    assert np.isfinite(dx).all() and np.abs(dx).max() > 0


def test_ktanh_gates_stay_near_the_exact_ones():
    """K-TanH is within 0.009 of tanh (0.0045 of the sigmoid); a step's h moves by a few of
    those, and the test keeps T at 3."""
    case = (8, 16, 1, False, 4, 3, None)
    m, x, _ = make(LSTM, case, activation="ktanh")
    e, _, _ = make(LSTM, case)
    y, _ = m(x)
    ye, _ = e(x)
    diff = np.abs(y - ye).max()
    assert 0 < diff <= 0.05
    dx, _ = m.backward(np.ones_like(y))
    assert np.isfinite(dx).all()


def test_parameters_in_place_assignment_and_accumulation(rng):
    m, x, _ = make(GRU, CASES[0])
    y0, _ = m(x)
    m.weight_hh_l0[0, 0] += 1.0            # in place
    y1, _ = m(x)
    assert not np.array_equal(y0, y1)
    assert_close(y1, ref_forward(m, x)[0], F32, "after an in-place write")
    m.bias_ih_l0 = np.zeros(3 * 7)         # assignment (float64 is converted)
    assert m.bias_ih_l0.dtype == np.float32
    assert_close(m(x)[0], ref_forward(m, x)[0], F32, "after assignment")
    g = rng.standard_normal(y0.shape).astype(np.float32)
    m.zero_grad()
    m(x)
    m.backward(g)
    first = m.weight_ih_l0_grad.copy()
    m(x)
    m.backward(g)
    np.testing.assert_allclose(m.weight_ih_l0_grad, 2 * first, rtol=1e-6, atol=1e-7)
    m.zero_grad()
    assert not m.weight_ih_l0_grad.any()


def test_no_bias_and_eval_mode():
    m = LSTM(6, 10, bias=False, seed=2)
    assert list(m.parameters()) == ["weight_ih_l0", "weight_hh_l0"]
    x = np.random.default_rng(0).standard_normal((3, 2, 6)).astype(np.float32)
    assert_close(m(x)[0], ref_forward(m, x)[0], F32, "no bias")
    m.eval()(x)
    with pytest.raises(RuntimeError, match="training mode"):
        m.backward(np.zeros((3, 2, 10), np.float32))


def test_errors_name_the_argument():
    m = LSTM(4, 8, seed=0)
    x = np.zeros((3, 2, 4), np.float32)
    with pytest.raises(ValueError, match=r"x must be \(T, N, 4\)"):
        m(np.zeros((3, 2, 5), np.float32))
    with pytest.raises(TypeError, match="x must have dtype"):
        m(x.astype(np.int32))
    with pytest.raises(ValueError, match="lengths must be in"):
        m(x, lengths=[4, 1])
    with pytest.raises(ValueError, match="decreasing"):
        m(x, lengths=[1, 3])
    with pytest.raises(ValueError, match="lengths must be 2 integers"):
        m(x, lengths=[3])
    with pytest.raises(ValueError, match="h0 must have shape"):
        m(x, (np.zeros((1, 3, 8)), np.zeros((1, 2, 8))))
    with pytest.raises(ValueError, match=r"state must be \(h0, c0\)"):
        m(x, np.zeros((1, 2, 8)))
    with pytest.raises(ValueError, match="activation must be"):
        GRU(4, 8, activation="fast")
    with pytest.raises(ValueError, match="hidden_size must be at least 1"):
        GRU(4, 0)
    with pytest.raises(ValueError, match="weight_hh_l0 must have shape"):
        m.weight_hh_l0 = np.zeros((8, 8))
    m(x)
    with pytest.raises(ValueError, match="grad_y must have shape"):
        m.backward(np.zeros((3, 2, 9), np.float32))


def test_bucket_by_length():
    lengths = np.random.default_rng(0).integers(1, 50, 103)
    batches, report = bucket_by_length(lengths, 16, shuffle=True, seed=1)
    assert sorted(np.concatenate(batches).tolist()) == list(range(103))
    for b in batches:
        assert len(b) <= 16 and np.all(np.diff(lengths[b]) <= 0)  # decreasing, as lengths= needs
    pad = sum(len(b) * lengths[b].max() - lengths[b].sum() for b in batches)
    plain = sum(16 * 0 + len(lengths[i:i + 16]) * lengths[i:i + 16].max() - lengths[i:i + 16].sum()
                for i in range(0, 103, 16))
    assert report["padding"] == pad and report["padding_unbucketed"] == plain
    assert report["padding"] < plain and report["saved"] == pytest.approx(1 - pad / plain)
    with pytest.raises(ValueError, match="positive"):
        bucket_by_length([3, 0], 2)


# --- the gate kernels give the same bits on every ISA ---------------------------------------------


@pytest.fixture
def isa_restored():
    yield
    restore_isa()


@pytest.mark.parametrize("activation", ["exact", "ktanh"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("scale", [1.0, 60.0], ids=["normal", "clamped"])
@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_gates_same_bits_on_every_isa(cls, activation, dtype, scale, isa_restored):
    """The forward gate math is one core kernel per ISA (brgemm.h: lstm_gates, gru_gates) with the scalar
    twin's operations, so h, c and y come out bit for bit the same on every ISA where the
    products do: the bf16 ones below AVX512_BF16 (vdpbf16ps rounds its pair sums its own way),
    the f32 ones from AVX2 up (the scalar f32 kernel sums in another order). scale = 60 drives pre-activations past ±87, where the
    exponential clamps. Also ragged lengths and a reverse direction (rows of a step at
    different times), H = 37 (a partial block) and a bf16 y equal to h rounded."""
    m = cls(24, 37, bidirectional=True, dtype=dtype, activation=activation, seed=3)
    for name, v in m.parameters().items():
        setattr(m, name, v * np.float32(scale))
    x = np.random.default_rng(4).standard_normal((6, 5, 24)).astype(np.float32)
    xi = x.astype(BF16) if dtype == "bfloat16" else x
    lengths = [6, 5, 5, 3, 1]
    got = {}
    for level in brgemm.available_isas():
        brgemm.set_isa(level)
        y, state = m(xi, lengths=lengths)
        hT, cT = state if cls is LSTM else (state, state)
        got[level] = [np.asarray(y).view(np.uint16 if dtype == "bfloat16" else np.uint32), hT.view(np.uint32),
                      cT.view(np.uint32)]
        if dtype == "bfloat16":  # y of the last step is hT rounded to nearest even (forward direction)
            last = np.asarray(y)[np.array(lengths) - 1, np.arange(5), :37]
            np.testing.assert_array_equal(last.view(np.uint16), hT[0].astype(BF16).view(np.uint16))
    levels = [lv for lv in got if lv != ("avx512_bf16" if dtype == "bfloat16" else "scalar")]
    if len(levels) < 2:
        pytest.skip("fewer than two ISA levels to compare here")
    for level in levels[1:]:
        for what, a, b in zip(("y", "h_T", "c_T"), got[levels[0]], got[level]):
            np.testing.assert_array_equal(a, b, err_msg=f"{what}: {level} differs from {levels[0]}")
    assert np.isfinite(np.asarray(got[levels[0]][1].view(np.float32))).all()


@pytest.mark.parametrize("activation", ["exact", "ktanh"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_gate_gradients_same_bits_on_every_isa(cls, activation, dtype, isa_restored):
    """The backward gate math is one core kernel per ISA as well (brgemm.h: lstm_gates_backward,
    gru_gates_backward; the bias gradients' column sums: column_sums), so ∂x, ∂h0, ∂c0 and every
    parameter gradient come out bit for bit the same on every ISA whose products agree. H = 37: the last block's dy covers 5 of its 16 units; ragged lengths and
    a reverse direction give runs of rows at different times."""
    m = cls(24, 37, bidirectional=True, dtype=dtype, activation=activation, seed=5)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((6, 5, 24)).astype(np.float32)
    xi = x.astype(BF16) if dtype == "bfloat16" else x
    lengths = [6, 5, 5, 3, 1]
    gy = rng.standard_normal((6, 5, 74)).astype(np.float32)
    gh = rng.standard_normal((2, 5, 37)).astype(np.float32)
    gc = rng.standard_normal((2, 5, 37)).astype(np.float32)
    got = {}
    for level in brgemm.available_isas():
        brgemm.set_isa(level)
        m(xi, lengths=lengths)
        m.zero_grad()
        dx, dstate = m.backward(gy, (gh, gc) if cls is LSTM else gh)
        states = list(dstate) if cls is LSTM else [dstate]
        grads = [getattr(m, name + "_grad") for name in m.parameters()]
        got[level] = [np.asarray(a, np.float32).view(np.uint32) for a in [dx, *states, *grads]]
    # Products that agree: f32 from AVX2 up; bf16 from AVX2 up to below AVX512_BF16 (its own pair sums).
    levels = [lv for lv in got if lv != "scalar" and not (dtype == "bfloat16" and lv == "avx512_bf16")]
    if len(levels) < 2:
        pytest.skip("fewer than two ISA levels to compare here")
    names = ["dx", "dh0", "dc0"][: 3 if cls is LSTM else 2] + list(m.parameters())
    for level in levels[1:]:
        for what, a, b in zip(names, got[levels[0]], got[level]):
            np.testing.assert_array_equal(a, b, err_msg=f"{what}: {level} differs from {levels[0]}")
    assert all(np.isfinite(a.view(np.float32)).all() for a in got[levels[0]])
