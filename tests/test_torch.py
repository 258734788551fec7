"""brgemm.torch: every operator through torch.library.opcheck (schema, autograd registration,
fake tensors, AOT dispatch with dynamic shapes) on several inputs; the drop-in modules' outputs
and gradients against PyTorch's own modules run in float64 on the same weights, over odd
shapes; bf16 (compute_dtype and autocast) against the numpy layers' bf16 path, bit for bit;
torch.compile parity without graph breaks; convert's swaps, fusion and report; errors; and
that ``import brgemm`` does not import torch.

Tolerances (float32 against float64): a product of K terms is within (K + 2)·2⁻²⁴ of Σ|a||b|
(the 'abs' reference: the same float64 computation on absolute values); gradients are
products too, with the same bound over their own K. Recurrent layers: the bounds of
tests/test_rnn.py (2e-5 for outputs, 5e-5 for gradients, relative to 1 + |ref|), derived
there for these sizes.
"""

import copy
import math
import os
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import brgemm  # noqa: E402
import brgemm.torch as bt  # noqa: E402

EPS = 2.0 ** -24
ops = torch.ops.brgemm


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _abs_copy(m):
    """A float64 copy of module m with every parameter replaced by its absolute value."""
    a = copy.deepcopy(m).double()
    with torch.no_grad():
        for p in a.parameters():
            p.abs_()
    return a


def _assert_within(got, ref, bound, what):
    got, ref, bound = (t.detach().double() for t in (got, ref, bound))
    err = (got - ref).abs() - bound - 1e-30
    assert err.max() <= 0, f"{what}: error exceeds the bound by {err.max().item():.3g}"


# --- opcheck --------------------------------------------------------------------------------------

def _r(*shape, grad=True, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype).requires_grad_(grad)


def _lstm_params(i, h, bias=True, g=4):
    ps = [_r(g * h, i), _r(g * h, h)]
    return ps + ([_r(g * h), _r(g * h)] if bias else [None, None])


OPCHECK = {
    "gemm": [(_r(5, 9), _r(9, 3)), (_r(1, 1), _r(1, 17)), (_r(33, 20, dtype=torch.bfloat16),
                                                            _r(20, 7, dtype=torch.bfloat16))],
    "batch_reduce": [(_r(3, 5, 8), _r(3, 8, 6)), (_r(1, 2, 1), _r(1, 1, 19))],
    "linear": [(_r(4, 10), _r(7, 10), _r(7)), (_r(2, 3, 10), _r(7, 10), None, "relu"),
               (_r(1, 33), _r(17, 33), _r(17), "relu")],
    "conv2d": [(_r(2, 3, 9, 7), _r(5, 3, 3, 3), _r(5), [1, 1], [1, 1], [1, 1], 1, "relu"),
               (_r(1, 17, 6, 6), _r(20, 17, 1, 1), None, [2, 2], [0, 0], [1, 1]),
               (_r(2, 4, 8, 9), _r(4, 4, 3, 2), _r(4), [1, 2], [0, 2, 1, 0], [2, 1]),
               (_r(2, 1, 6, 6, 16), _r(20, 16, 3, 3), _r(20), [1, 1], [1, 1], [1, 1], 1, "relu", True),  # blocked
               (_r(2, 1, 6, 6, 16), _r(20, 16, 3, 3), _r(20), [1, 1], [1, 1], [1, 1], 1, "relu", True,
                _r(2, 1, 6, 6, 32)),  # + residual
               (_r(1, 1, 5, 4, 3), _r(7, 3, 1, 1), None, [1, 1], [0, 0], [1, 1], 1, "none", True, _r(1, 1, 5, 4, 7)),
               (_r(1, 1, 5, 4, 3, dtype=torch.bfloat16), _r(7, 3, 1, 1), None, [1, 1], [0, 0], [1, 1], 1, "none",
                True, _r(1, 1, 5, 4, 7, dtype=torch.bfloat16))],  # bfloat16: odd blocks, pairs padded in the weights
    "conv2d_moments": [(_r(2, 1, 6, 7, 16), _r(20, 16, 3, 3), None, [1, 1], [1, 1], [1, 1]),
                       (_r(2, 1, 6, 6, 16), _r(24, 16, 1, 1), _r(24), [1, 1], [0, 0], [1, 1]),  # rows merged
                       (_r(1, 1, 5, 5, 3), _r(20, 3, 3, 3), None, [2, 1], [1, 1], [1, 1])],
    "to_blocked": [(_r(2, 3, 5, 4),), (_r(1, 40, 3, 3),), (_r(2, 20, 2, 3, dtype=torch.bfloat16),),
                   (_r(2, 20, 2, 3), torch.bfloat16)],   # converted in the same pass
    "from_blocked": [(_r(2, 1, 5, 4, 3), 3), (_r(2, 1, 5, 4, 3, dtype=torch.bfloat16), 3), (_r(1, 3, 2, 2, 16), 40)],
    "lstm": [(_r(4, 3, 5), _r(3, 7), _r(3, 7), *_lstm_params(5, 7)),
             (_r(3, 2, 6), None, None, *_lstm_params(6, 20, bias=False), None, True, "ktanh"),
             (_r(5, 3, 4), None, None, *_lstm_params(4, 9), torch.tensor([5, 3, 2]))],
    "gru": [(_r(4, 3, 5), _r(3, 7), *_lstm_params(5, 7, g=3)),
            (_r(3, 2, 6), None, *_lstm_params(6, 18, g=3), None, True)],
    "ktanh": [(_r(5, 7),), (_r(3, 1, 4, dtype=torch.bfloat16),)],
    "taylor_softmax": [(_r(4, 9),), (_r(3, 5, 2), 1, 4)],
    "quantized_linear": [(torch.randint(0, 256, (5, 16), dtype=torch.uint8),
                          torch.randint(-127, 128, (6, 16), dtype=torch.int8), torch.rand(6) / 10, torch.randn(6),
                          0.05, 3),
                         (torch.rand(2, 3, 9), torch.randint(-127, 128, (4, 9), dtype=torch.int8),
                          torch.rand(4) / 10, None, 0.02, 0, 0.1, 7, "uint8", "relu")],
    "quantized_conv2d": [(torch.randint(0, 256, (2, 16, 6, 5), dtype=torch.uint8),
                          torch.randint(-127, 128, (8, 16, 3, 3), dtype=torch.int8), torch.rand(8) / 10, None,
                          [1, 1], [1, 1], [1, 1], 0.05, 3, 0.1, 5, "uint8", "relu"),
                         (torch.rand(1, 3, 7, 7), torch.randint(-127, 128, (4, 3, 2, 2), dtype=torch.int8),
                          torch.rand(4) / 10, torch.randn(4), [2, 2], [0, 0], [1, 1], 0.02, 0)],
}


@pytest.mark.parametrize("name,case", [(n, i) for n, cases in OPCHECK.items() for i in range(len(cases))])
def test_opcheck(name, case):
    args = OPCHECK[name][case]
    result = torch.library.opcheck(getattr(ops, name).default, args)
    assert all(v == "SUCCESS" for v in result.values()), result


def test_opcheck_backward_operators():
    x, w, b = _r(3, 10, grad=False), _r(6, 10, grad=False), _r(6, grad=False)
    y = ops.linear(x, w, b, "relu")
    torch.library.opcheck(ops.linear_backward.default, (torch.randn_like(y), x, w, b, y, "relu", True))
    x, w = _r(2, 3, 6, 6, grad=False), _r(4, 3, 3, 3, grad=False)
    y = ops.conv2d(x, w, None, [1, 1], [1, 1], [1, 1], 1, "none")
    torch.library.opcheck(ops.conv2d_backward.default,
                          (torch.randn_like(y), x, w, None, y, [1, 1], [1, 1], [1, 1], "none", False))
    x = _r(3, 2, 5, grad=False)
    ps = [p.detach() for p in _lstm_params(5, 7)]
    y, h, c, ws = ops.lstm(x, None, None, *ps)
    torch.library.opcheck(ops.lstm_backward.default, (torch.randn_like(y), torch.randn_like(h), torch.randn_like(c), x,
                                                      *ps, None, ws, False, "exact"))
    ps = [p.detach() for p in _lstm_params(5, 7, g=3)]
    y, h, ws = ops.gru(x, None, *ps)
    torch.library.opcheck(ops.gru_backward.default, (torch.randn_like(y), torch.randn_like(h), x, *ps, None, ws, False,
                                                     "exact"))
    z = torch.randn(4, 6)
    torch.library.opcheck(ops.ktanh_backward.default, (torch.randn(4, 6), ops.ktanh(z)))
    torch.library.opcheck(ops.taylor_softmax_backward.default, (torch.randn(4, 6), z, -1, 2))


# --- modules against PyTorch ----------------------------------------------------------------------

CONVS = [  # (C, K, kernel, stride, padding, dilation, bias, N, H, W)
    (3, 16, 3, 1, 1, 1, True, 2, 9, 7),        # first-layer C = 3
    (17, 20, 1, 2, 0, 1, False, 1, 6, 6),      # 1×1 stride 2, odd channels
    (8, 5, (3, 2), 1, "same", (2, 1), True, 3, 8, 9),  # rectangular, 'same' with dilation
    (8, 5, (2, 3), (1, 2), 1, 1, True, 2, 7, 8),  # rectangular, mixed strides
    (16, 32, 5, 3, 2, 1, True, 2, 11, 10),     # stride 3, kernel 5
]


def _grads(module, x, g):
    x = x.detach().requires_grad_()
    y = module(x)
    y.backward(g)
    return y, x.grad, [p.grad for p in module.parameters()]


@pytest.mark.parametrize("case", CONVS)
@pytest.mark.parametrize("relu", [False, True])
def test_conv2d_matches_torch(case, relu):
    c, k, ks, st, pad, dil, bias, n, h, w = case
    ref = nn.Sequential(nn.Conv2d(c, k, ks, st, pad, dil, bias=bias), *([nn.ReLU()] if relu else []))
    ours = copy.deepcopy(ref)
    report = bt.convert(ours)
    assert isinstance(ours[0], bt.Conv2d) and ours[0].activation == ("relu" if relu else "none")
    assert len(report.fused) == int(relu)
    x = torch.randn(n, c, h, w)
    y, gx, gp = _grads(ours, x, g := torch.randn_like(ours(x)))
    y64, gx64, gp64 = _grads(copy.deepcopy(ref).double(), x.double(), g.double())
    red = ours[0].weight[0].numel()  # C·R·S terms per output
    ya, gxa, gpa = _grads(_abs_copy(ref[:1]), x.double().abs(), g.double().abs())
    _assert_within(y, y64, (red + 2) * EPS * ya, "output")
    _assert_within(gx, gx64, (k * ours[0].weight[0, 0].numel() + 2) * EPS * gxa, "grad input")
    red_w = n * y.shape[2] * y.shape[3]  # N·OH·OW terms per weight gradient
    for p, p64, pa in zip(gp, gp64, gpa):
        _assert_within(p, p64, (red_w + 2) * EPS * pa, "grad parameter")


# 19 outputs: the blocked path (bk = 32); 64 and more: rows to rows through gemm (bk = 64), with
# 650 inputs (padded to 704 in the packed weights) over two K chunks.
@pytest.mark.parametrize("shape,out_f,bias,relu", [((5, 33), 19, True, False), ((2, 3, 17), 19, False, True),
                                                   ((1, 64), 19, True, True), ((3, 65), 130, True, True),
                                                   ((2, 5, 33), 64, False, False), ((70, 650), 200, True, False)])
def test_linear_matches_torch(shape, out_f, bias, relu):
    in_f = shape[-1]
    ref = nn.Sequential(nn.Linear(in_f, out_f, bias=bias), *([nn.ReLU()] if relu else []))
    ours = copy.deepcopy(ref)
    bt.convert(ours)
    assert isinstance(ours[0], bt.Linear)
    x = torch.randn(*shape)
    y, gx, gp = _grads(ours, x, g := torch.randn(*shape[:-1], out_f))
    y64, gx64, gp64 = _grads(copy.deepcopy(ref).double(), x.double(), g.double())
    ya, gxa, gpa = _grads(_abs_copy(ref[:1]), x.double().abs(), g.double().abs())
    rows = int(np.prod(shape[:-1]))
    _assert_within(y, y64, (in_f + 2) * EPS * ya, "output")
    _assert_within(gx, gx64, (out_f + 2) * EPS * gxa, "grad input")
    for p, p64, pa in zip(gp, gp64, gpa):
        _assert_within(p, p64, (rows + 2) * EPS * pa, "grad parameter")


RNNS = [  # (cls, I, H, layers, bidirectional, bias, batch_first, N, T)
    (nn.LSTM, 5, 7, 1, False, True, False, 3, 4),
    (nn.LSTM, 13, 20, 2, True, True, True, 5, 6),
    (nn.GRU, 8, 33, 1, False, False, False, 1, 1),
    (nn.GRU, 24, 16, 2, True, True, False, 2, 5),
]


def _assert_rnn(got, ref, tol, what):
    got, ref = got.detach().double(), ref.detach().double()
    err = (got - ref).abs() - tol * (1 + ref.abs())
    assert err.max() <= 0, f"{what}: max excess {err.max().item():.3g}"


def _rnn_run(m, x, state, lstm):
    x = x.detach().requires_grad_()
    state = tuple(s.detach().requires_grad_() for s in state)
    y, st = m(x, state if lstm else state[0])
    hT = st[0] if lstm else st
    gy = torch.ones_like(y).cumsum(-1).sin().to(y.dtype)  # fixed, not constant
    loss = (y * gy).sum() + (hT * hT.cos()).sum() + ((st[1] * 0.5).sum() if lstm else 0)
    loss.backward()
    return [y, *(st if lstm else (st,)), x.grad, *(s.grad for s in state)] + [p.grad for p in m.parameters()]


@pytest.mark.parametrize("case", RNNS)
def test_recurrent_matches_torch(case):
    cls, i, h, layers, bidir, bias, bf, n, t = case
    ref = cls(i, h, layers, bias=bias, batch_first=bf, bidirectional=bidir)
    ours = copy.deepcopy(ref)
    bt.convert(ours)
    assert type(ours).__name__ == cls.__name__ and isinstance(ours, bt._modules._Recurrent)
    lstm = cls is nn.LSTM
    d = 2 if bidir else 1
    x = torch.randn(n, t, i) if bf else torch.randn(t, n, i)
    state = (torch.randn(layers * d, n, h), torch.randn(layers * d, n, h))[:2 if lstm else 1]
    got = _rnn_run(ours, x, state, lstm)
    want = _rnn_run(copy.deepcopy(ref).double(), x.double(), tuple(s.double() for s in state), lstm)
    n_out = 3 if lstm else 2
    for j, (a, b) in enumerate(zip(got, want)):
        _assert_rnn(a, b, 2e-5 if j < n_out else 5e-5, f"result {j}")


def test_recurrent_packed_and_unbatched():
    ref = nn.LSTM(5, 12, num_layers=2, bidirectional=True)
    ours = copy.deepcopy(ref)
    bt.convert(ours)
    seqs = [torch.randn(n, 5) for n in (3, 6, 4, 6)]
    packed = nn.utils.rnn.pack_sequence(seqs, enforce_sorted=False)
    (y, (h, c)), (yr, (hr, cr)) = ours(packed), ref(packed)
    assert isinstance(y, nn.utils.rnn.PackedSequence) and torch.equal(y.batch_sizes, yr.batch_sizes)
    for a, b in ((y.data, yr.data), (h, hr), (c, cr)):
        _assert_rnn(a, b, 2e-5, "packed")
    (y, (h, c)), (yr, (hr, cr)) = ours(seqs[0]), ref(seqs[0])
    assert y.shape == yr.shape and h.shape == hr.shape
    _assert_rnn(y, yr, 2e-5, "unbatched")


def test_ktanh_and_taylor_softmax_modules():
    x = torch.randn(6, 10, requires_grad=True)
    y = bt.KTanh()(x)
    np.testing.assert_array_equal(y.detach().numpy(), brgemm.nn.functional.ktanh(x.detach().numpy()))
    assert (y - torch.tanh(x)).abs().max() <= 0.0118  # K-TanH's bound for float32 input
    (gx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    torch.testing.assert_close(gx, 1 - y.detach() ** 2)  # the derivative K-TanH's paper uses
    sm = bt.TaylorSoftmax.from_torch(nn.Softmax(dim=0), order=4)
    y = sm(x)
    np.testing.assert_array_equal(y.detach().numpy(),
                                  brgemm.nn.functional.taylor_softmax(x.detach().numpy(), axis=0, order=4))
    torch.testing.assert_close(y.sum(0), torch.ones(10))
    (gx,) = torch.autograd.grad((y * torch.arange(10.0)).sum(), x)
    x64 = x.detach().double().requires_grad_()
    p = sum(x64 ** k / math.factorial(k) for k in range(5))
    (g64,) = torch.autograd.grad(((p / p.sum(0)) * torch.arange(10.0).double()).sum(), x64)
    torch.testing.assert_close(gx.double(), g64, rtol=1e-5, atol=1e-6)


# --- bf16 ----------------------------------------------------------------------------------------

def _np_conv(m, dtype):
    c = brgemm.nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                         m.bias is not None, "relu" if m.activation == "relu" else None, dtype=dtype)
    c.weight[...] = m.weight.detach().numpy()
    c.bias[...] = m.bias.detach().numpy()
    return c


def test_bfloat16_compute_dtype_and_autocast_use_the_bf16_path():
    m = bt.Conv2d(16, 32, 3, padding=1, activation="relu")
    x = torch.randn(2, 16, 7, 7)
    want = _np_conv(m, "bfloat16").eval()(x.numpy().astype(ml_dtypes.bfloat16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    assert y.dtype == torch.bfloat16
    np.testing.assert_array_equal(y.detach().view(torch.int16).numpy(), want.view(np.int16))
    m.compute_dtype = torch.bfloat16
    y = m(x)
    assert y.dtype == torch.float32  # computed in bf16, returned in the input's dtype
    np.testing.assert_array_equal(y.detach().numpy(), want.astype(np.float32))
    # and the f32 path differs from it (the test could tell them apart)
    m.compute_dtype = None
    assert not torch.equal(m(x), y)


def test_bfloat16_training_step_under_autocast():
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 25, 4))
    ref = copy.deepcopy(model)
    bt.convert(model)
    x, labels = torch.randn(8, 3, 5, 5), torch.randint(0, 4, (8,))
    for m in (model, ref):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(m(x).float(), labels)
        loss.backward()
    for p, q in zip(model.parameters(), ref.parameters()):
        assert p.grad.dtype == torch.float32
        # both round activations and weights to bf16 (8 bits): gradients agree to a few bf16 steps
        torch.testing.assert_close(p.grad, q.grad, rtol=0.05, atol=0.02 * q.grad.abs().max().item())


# --- torch.compile ----------------------------------------------------------------------------------

# Under the sanitizer build (.ci/run) inductor's compiler subprocesses would inherit the preloaded
# ASan runtime; these tests exercise PyTorch's machinery, which the plain run covers.
needs_plain_build = pytest.mark.skipif(bool(os.environ.get("BRGEMM_SANITIZED")),
                                       reason="torch.compile is tested on the plain build, not under ASan")


@needs_plain_build
def test_compile_matches_eager_without_graph_breaks():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1), nn.Flatten(),
                          nn.Linear(8 * 36, 5), nn.Tanh())
    bt.convert(model, approximate=True)
    x = torch.randn(4, 3, 6, 6)
    explain = torch._dynamo.explain(model)(x)
    assert explain.graph_break_count == 0, explain.break_reasons
    compiled = torch.compile(model)
    y = compiled(x)
    torch.testing.assert_close(y, model(x), rtol=0, atol=0)
    y.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(x).sum().backward()
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=0, atol=0)


@needs_plain_build
def test_compile_recurrent():
    lstm = bt.LSTM(6, 10, num_layers=2)
    x = torch.randn(5, 3, 6)
    explain = torch._dynamo.explain(lstm)(x)
    assert explain.graph_break_count == 0, explain.break_reasons
    y, (h, c) = torch.compile(lstm)(x)
    y0, (h0, c0) = lstm(x)
    torch.testing.assert_close(y, y0, rtol=0, atol=0)
    torch.testing.assert_close(c, c0, rtol=0, atol=0)


# --- convert, parameters, errors --------------------------------------------------------------------

def test_convert_report_and_shared_parameters():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(inplace=True),
                          nn.Conv2d(8, 8, 3, groups=2, padding=1, padding_mode="reflect"),
                          nn.BatchNorm2d(8), nn.Flatten(), nn.Sequential(nn.Linear(8, 4), nn.Tanh()),
                          nn.LSTM(4, 4, proj_size=2), nn.Conv2d(8, 8, 3, groups=4))
    params = {n: p for n, p in model.named_parameters()}
    keys = set(model.state_dict())
    report = bt.convert(model)
    assert [s[0] for s in report.swapped] == ["0", "5.0", "7"]
    assert report.fused == [("1", "0")] and isinstance(model[1], nn.Identity)
    kept = {name: why for name, _, why in report.kept}
    assert "padding_mode" in kept["2"] and "proj_size" in kept["6"] and "approximate=True" in kept["5.1"]
    assert kept["3"] == "no brgemm counterpart"
    assert "swapped 3 module(s)" in str(report)
    assert set(model.state_dict()) == keys
    assert all(p is params[n] for n, p in model.named_parameters())  # optimizers keep working
    assert bt.convert(model).swapped == []  # converting again changes nothing


def test_in_place_weight_updates_are_seen():
    for m in (bt.Linear(8, 4), bt.Linear(8, 64)):  # the blocked path and rows to rows through gemm
        x = torch.randn(3, 8)
        y0 = m(x)
        with torch.no_grad():
            m.weight.mul_(2)
            m.bias.mul_(2)
        torch.testing.assert_close(m(x), 2 * y0)
    conv = bt.Conv2d(4, 4, 3)
    x = torch.randn(1, 4, 5, 5)
    y0 = conv(x)
    with torch.no_grad():
        conv.weight.mul_(-1)
        conv.bias.mul_(-1)
    torch.testing.assert_close(conv(x), -y0)


def test_quantized_operators_match_the_numpy_layers():
    q = brgemm.nn.QuantizedLinear(16, 6, activation="relu", input_scale=0.05, input_zero_point=3,
                                  output_scale=0.1, output_zero_point=4)
    x = np.random.default_rng(0).integers(0, 256, (5, 16), dtype=np.uint8)
    y = ops.quantized_linear(torch.from_numpy(x), torch.from_numpy(q.weight), torch.from_numpy(q.weight_scale),
                             torch.from_numpy(q.bias), 0.05, 3, 0.1, 4, "uint8", "relu")
    np.testing.assert_array_equal(y.numpy(), q(x))
    qc = brgemm.nn.QuantizedConv2d(8, 4, 3, padding=1, input_scale=0.02, input_zero_point=0)
    x = np.random.default_rng(1).integers(0, 256, (2, 8, 5, 5), dtype=np.uint8)
    y = ops.quantized_conv2d(torch.from_numpy(x), torch.from_numpy(qc.weight), torch.from_numpy(qc.weight_scale),
                             torch.from_numpy(qc.bias), [1, 1], [1, 1], [1, 1], 0.02, 0)
    np.testing.assert_array_equal(y.numpy(), qc(x))


def test_errors_name_the_argument():
    x, w = torch.randn(2, 3, 5, 5), torch.randn(4, 3, 3, 3)
    with pytest.raises(ValueError, match="groups"):
        ops.conv2d(x, w, None, [1, 1], [0, 0], [1, 1], 2)
    with pytest.raises(ValueError, match="groups"):
        bt.Conv2d(4, 6, 3, groups=4)
    with pytest.raises(ValueError, match="channels"):
        ops.conv2d(x, torch.randn(4, 2, 3, 3))
    with pytest.raises(ValueError, match="larger than the padded input"):
        ops.conv2d(x, torch.randn(4, 3, 7, 7))
    with pytest.raises(TypeError, match="input must have dtype"):
        ops.linear(torch.ones(2, 3, dtype=torch.float64), torch.ones(4, 3))
    with pytest.raises(ValueError, match="features"):
        ops.linear(torch.ones(2, 3), torch.ones(4, 5))
    with pytest.raises(ValueError, match="activation"):
        ops.linear(torch.ones(2, 3), torch.ones(4, 3), None, "gelu")
    with pytest.raises(ValueError, match="weight_hh"):
        ops.lstm(torch.ones(2, 1, 3), None, None, torch.ones(8, 3), torch.ones(7, 2), None, None)
    with pytest.raises(ValueError, match="lengths"):
        ops.gru(torch.ones(2, 2, 3), None, torch.ones(6, 3), torch.ones(6, 2), None, None, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="proj_size"):
        bt.LSTM.from_torch(nn.LSTM(3, 4, proj_size=2))
    with pytest.raises(TypeError, match="Linear, got Conv2d"):
        bt.Linear.from_torch(nn.Conv2d(1, 1, 1))
    with pytest.raises(ValueError, match="dtype"):
        bt.convert(nn.Linear(2, 2), dtype="float16")
    with pytest.raises(ValueError, match="order"):
        bt.TaylorSoftmax(order=3)
    with pytest.raises(RuntimeError, match="train=False"):
        x = torch.randn(2, 1, 3, requires_grad=True)
        y, *_ = ops.lstm(x, None, None, torch.randn(8, 3), torch.randn(8, 2), None, None, None, False, "exact", False)
        y.sum().backward()


def test_empty_batches():
    """No rows: empty outputs, and zero (not uninitialised) parameter gradients."""
    for m, x in ((bt.Linear(3, 4), torch.ones(0, 3)), (bt.Conv2d(3, 2, 3), torch.ones(0, 3, 5, 5))):
        y = m(x)
        assert y.shape[0] == 0
        y.sum().backward()
        assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in m.parameters())


def test_import_brgemm_does_not_import_torch():
    code = "import sys, brgemm, brgemm.nn, brgemm.quant; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_backward_after_other_forwards_of_the_same_layer():
    """The backward reuses the forward's blocked input and output only while they are the ones it
    holds: two forwards of one layer, then one backward through both, match PyTorch."""
    for ref in (nn.Sequential(nn.Conv2d(5, 6, 3, padding=1), nn.ReLU()), nn.Sequential(nn.Linear(7, 6), nn.ReLU())):
        ours = copy.deepcopy(ref)
        bt.convert(ours)
        shape = (2, 5, 6, 6) if isinstance(ref[0], nn.Conv2d) else (4, 7)
        x1, x2 = torch.randn(shape, requires_grad=True), torch.randn(shape, requires_grad=True)
        grads = []
        for m in (ours, ref):
            x1.grad = x2.grad = None
            m.zero_grad()
            (m(x1).square().sum() + 3 * m(x2).sum()).backward()
            grads.append([x1.grad, x2.grad] + [p.grad for p in m.parameters()])
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_recurrent_gradient_from_the_final_state_alone():
    ref = nn.GRU(6, 9, num_layers=2)
    ours = copy.deepcopy(ref)
    bt.convert(ours)
    x = torch.randn(4, 3, 6)
    got = torch.autograd.grad(ours(x)[1].sum(), list(ours.parameters()))
    want = torch.autograd.grad(ref(x)[1].sum(), list(ref.parameters()))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_recurrent_workspaces_are_reused_only_once_free():
    """The workspaces come from a pool and go back to it when autograd lets go of them: two
    forwards before their backwards (gradient accumulation) must each keep their own, and the
    gradients equal those of one step at a time; a finished step's workspace serves the next."""
    ref = nn.LSTM(5, 7)
    ours = copy.deepcopy(ref)
    bt.convert(ours)
    xs = [torch.randn(6, 3, 5), torch.randn(6, 3, 5)]  # same shapes: same workspace size
    (ours(xs[0])[0].sin().sum() + ours(xs[1])[0].cos().sum()).backward()
    together = [p.grad.clone() for p in ours.parameters()]
    ours.zero_grad()
    ours(xs[0])[0].sin().sum().backward()
    ours(xs[1])[0].cos().sum().backward()
    for a, b in zip(together, ours.parameters()):
        torch.testing.assert_close(a, b.grad, rtol=1e-6, atol=1e-6)
    (ref(xs[0])[0].sin().sum() + ref(xs[1])[0].cos().sum()).backward()
    for a, b in zip(together, ref.parameters()):
        torch.testing.assert_close(a, b.grad, rtol=1e-4, atol=1e-5)
    held = len(bt._rnn._workspaces.buffers)
    for _ in range(3):
        ours(xs[0])[0].sum().backward()
    assert len(bt._rnn._workspaces.buffers) == held


def test_forward_never_trusts_a_held_identity():
    """A new batch often lands where a freed one was, with the same shape and version 0, so a
    forward must always convert its input. Writes through .data keep the address and the
    version counter: the same situation, made deterministic."""
    for m in (bt.Conv2d(2, 4, 3, padding=1, activation="relu"), bt.Linear(6, 3, activation="relu")):
        x = torch.randn((2, 2, 5, 5) if isinstance(m, bt.Conv2d) else (4, 6), requires_grad=True)
        m(x).sum().backward()  # the backward reuses (and so holds) x's blocked copy
        x.data.copy_(torch.randn_like(x))
        want = nn.functional.relu(nn.functional.conv2d(x, m.weight, m.bias, padding=1) if isinstance(m, bt.Conv2d)
                                  else nn.functional.linear(x, m.weight, m.bias))
        torch.testing.assert_close(m(x), want, rtol=1e-5, atol=1e-5)


def _step(model, x):
    """The output, the input's and the parameters' gradients of one backward of a fixed loss."""
    xi = x.clone().requires_grad_()
    y = model(xi)
    y.square().sum().backward()
    return [y, xi.grad] + [p.grad for p in model.parameters()]


@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_blocked_chains_match_the_plain_conversion(dtype):
    """convert(blocked=True): consecutive convolutions pass the blocked layout (5-D tensors
    between them) and give the same outputs and gradients, bit for bit, as the plain conversion."""
    ref = nn.Sequential(nn.Conv2d(3, 20, 3, padding=1), nn.ReLU(), nn.Conv2d(20, 20, 1), nn.Conv2d(20, 36, 3, stride=2),
                        nn.ReLU(), nn.Flatten(), nn.Linear(36 * 16, 3))
    plain, chained = copy.deepcopy(ref), copy.deepcopy(ref)
    bt.convert(plain, dtype)
    report = bt.convert(chained, dtype, blocked=True)
    assert report.blocked == [("0", "2"), ("2", "3")] and "blocked  0 -> 2" in str(report)
    assert chained[1](chained[0](torch.randn(1, 3, 9, 9))).dim() == 5
    x = torch.randn(2, 3, 9, 9)
    for a, b in zip(_step(plain, x), _step(chained, x)):
        assert torch.equal(a, b)


def test_blocked_chain_ends_in_global_average_pooling():
    """convert(blocked=True) pairs a convolution with a global average pooling after it: the
    convolution returns blocks, the pooling (brgemm.torch.AdaptiveAvgPool2d) averages them in
    place of PyTorch's, and outputs and gradients match the plain conversion but for the order
    of the mean's sum (bounded below: HW additions of values below max|y|, a 2⁻²⁴ rounding each)."""
    ref = nn.Sequential(nn.Conv2d(3, 20, 3, padding=1), nn.ReLU(), nn.Conv2d(20, 36, 1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(36, 3))
    plain, chained = copy.deepcopy(ref), copy.deepcopy(ref)
    bt.convert(plain)
    report = bt.convert(chained, blocked=True)
    assert report.blocked == [("0", "2"), ("2", "4")]
    assert type(chained[4]) is bt.AdaptiveAvgPool2d and chained[4].channels == 36
    x = torch.randn(2, 3, 9, 9)
    features = chained[3](chained[2](chained[1](chained[0](x))))
    assert features.dim() == 5
    pooled, want = chained[4](features), plain[4](plain[3](plain[2](plain[1](plain[0](x)))))
    bound = 81 * 2.0 ** -24 * float(features.abs().max())
    assert pooled.shape == want.shape == (2, 36, 1, 1)
    assert float((pooled - want).abs().max()) <= bound
    for a, b in zip(_step(plain, x), _step(chained, x)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # A plain input is PyTorch's pooling; a blocked one needs output_size 1 and channels.
    torch.testing.assert_close(chained[4](x), nn.functional.adaptive_avg_pool2d(x, 1))
    with pytest.raises(ValueError, match="output_size 1"):
        bt.AdaptiveAvgPool2d(1)(features)
    two = bt.AdaptiveAvgPool2d(2)
    two.channels = 36
    with pytest.raises(ValueError, match="output_size 1"):
        two(features)
    more = bt.AdaptiveAvgPool2d(1)
    more.channels = 100
    with pytest.raises(ValueError, match="fewer than channels=100"):
        more(features)


def test_bfloat16_weights_keep_one_packed_layer():
    """bfloat16 parameters are widened to float32 masters on every call; the packed layer is
    still found by the caller's weight tensor, not rebuilt (and kept) once per call."""
    x, w = torch.randn(4, 3, 6, 6), torch.randn(5, 3, 3, 3).to(torch.bfloat16)
    xl, wl = torch.randn(4, 8), torch.randn(6, 8).to(torch.bfloat16)
    ops.conv2d(x, w)
    ops.linear(xl, wl)
    before = len(bt._bridge._built)
    for _ in range(5):
        y = ops.conv2d(x, w)
        yl = ops.linear(xl, wl)
    assert len(bt._bridge._built) == before
    assert torch.equal(y, ops.conv2d(x, w.float())) and torch.equal(yl, ops.linear(xl, wl.float()))


def test_convert_takes_the_winograd_algorithm_where_it_applies():
    """convert(..., algorithm="winograd"): the stride-1 3×3 Conv2d runs Winograd (forward and
    input gradient), the 1×1 stays direct; both against float64 within a bound of the
    Winograd form (tests/test_winograd.py: (C + 4a + 1)·2⁻²³ of the float64 algorithm on |x|,
    |w| with absolute matrices; the chained 1×1 scales it by Σ|w|)."""
    torch.manual_seed(0)
    from test_winograd import bound
    m = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.Conv2d(32, 8, 1))
    ref = copy.deepcopy(m).double()
    bt.convert(m, algorithm="winograd")
    assert m[0].algorithm == "winograd" and m[1].algorithm == "direct"
    x = torch.randn(2, 16, 12, 12)
    y = m(x)
    x64 = x.double()
    first = bound(x64.numpy(), m[0].weight.detach().double().numpy(), 4, (1, 1, 1, 1), 12, 12,
                  extra=2.0 ** -23 * abs(ref[0](x64).detach().numpy()))
    tol = torch.nn.functional.conv2d(torch.from_numpy(first), m[1].weight.detach().double().abs())
    tol = tol + (32 + 2) * 2.0 ** -24 * torch.nn.functional.conv2d(ref[0](x64).abs(), ref[1].weight.abs(),
                                                                     ref[1].bias.abs())
    assert ((y.double() - ref(x64)).abs() <= tol).all()
    with pytest.raises(ValueError, match="algorithm must be"):
        bt.Conv2d(3, 4, 3, algorithm="fast")
