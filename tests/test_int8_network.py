"""brgemm.torch.quantize: int8 inference of whole networks.

Every quantized stage is checked exactly: from the uint8 values it read (input and residual) and
its int8 weights, the stage is computed in float64, y = act(s_x·s_w[k]·Σ (x − z_x)·w + b[k] +
s_r·(r − z_r)), and its uint8 output must be round(y / s_y) + z_y (ties to even, saturated)
wherever y / s_y lies farther than the epilogue's float32 error from a rounding boundary, and
within one step of it elsewhere. That error is bounded by 8·2⁻²⁴·(|s_x·s_w·Σ| + |b| + |s_r·(r −
z_r)|) / s_y + 2⁻²⁴·|y / s_y|: the int32 sum's conversion, the scale computed in float32 (two
roundings), its product, the bias's division and sum, the residual's scale, product and sum,
and the division by s_y when it is not folded, each at most half an ulp of what it rounds.
End to end the int8 model is compared with the float model (signal-to-noise ratio and top-1).
"""

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.fx as fx  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import brgemm  # noqa: E402
import brgemm.torch as bt  # noqa: E402
from brgemm.torch._quantize import QuantizedConv2d, dequantize, quantize_blocked, quantize_input  # noqa: E402
from conftest import ISA_LEVELS, isa_unavailable_reason, restore_isa  # noqa: E402
from test_network import SmallResNet, _copies, _randomize_batch_norms  # noqa: E402

EPS = 2.0 ** -24
ops = torch.ops.brgemm


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


class Block(nn.Module):
    """Small channel counts (vector tails in the epilogue), a grouped convolution, a residual
    into a ReLU6, a convolution with a bias and no BatchNorm."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 12, 3, padding=1, bias=False), nn.BatchNorm2d(12)
        self.c2, self.b2 = nn.Conv2d(12, 12, 3, padding=1, groups=2, bias=False), nn.BatchNorm2d(12)
        self.c3 = nn.Conv2d(12, 20, 1, stride=2)
        self.fc = nn.Linear(20, 5)

    def forward(self, x):
        y = torch.relu(self.b1(self.c1(x)))
        y = F.relu6(self.b2(self.c2(y)) + y)
        y = torch.relu(self.c3(y))
        return self.fc(y.mean((2, 3)))


def _model(kind):
    m = SmallResNet(width=8) if kind == "resnet" else Block()
    return _randomize_batch_norms(m).eval()


def _calibration(n=3, size=32):
    return [torch.randn(4, 3, size, size) for _ in range(n)]


class _Record(fx.Interpreter):
    """Runs a quantized graph and keeps what each QuantizedConv2d read and wrote."""

    def __init__(self, gm):
        super().__init__(gm)
        self.seen = []

    def call_module(self, target, args, kwargs):
        out = super().call_module(target, args, kwargs)
        m = self.fetch_attr(target)
        if isinstance(m, QuantizedConv2d):
            self.seen.append((m, args[0].clone(), None if len(args) < 2 else args[1].clone(), out.clone()))
        return out


def _plain(v, channels):
    return ops.from_blocked(v.float(), channels).double()   # uint8 values are exact in float32


def _check_stage(m, xq, rq, yq):
    """The stage's uint8 output against its float64 value from the same uint8 inputs."""
    x = _plain(xq, m.in_channels) - m.input_zero_point
    w = m.weight.double()
    pt, pb, pl, pr = m.padding
    s = F.conv2d(F.pad(x, (pl, pr, pt, pb)), w, None, m.stride, 0, 1, m.groups)   # exact: integers < 2^53
    scaled = s * (m.input_scale * m.weight_scale.double()).reshape(1, -1, 1, 1)
    y = scaled.clone()
    size = scaled.abs()
    if m.bias is not None:
        b = m.bias.double().reshape(1, -1, 1, 1)
        y, size = y + b, size + b.abs()
    if rq is not None:
        r = m.residual_scale * (_plain(rq, m.out_channels) - m.residual_zero_point)
        y, size = y + r, size + r.abs()
    y = {"none": y, "relu": y.clamp(min=0.0), "relu6": y.clamp(0.0, 6.0)}[m.activation] / m.output_scale
    err = 8 * EPS * size / m.output_scale + EPS * y.abs()
    want = (torch.round(y) + m.output_zero_point).clamp(0, 255)
    got = _plain(yq, m.out_channels)
    near = ((y - torch.floor(y) - 0.5).abs() <= err)   # within the error of a tie: either side
    exact = got == want
    assert torch.all(exact | (near & ((got - want).abs() <= 1))), (
        f"{m}: {int((~exact).sum())} outputs differ, {int((~exact & ~near).sum())} far from a rounding boundary")
    return int((~exact).sum())


@pytest.mark.parametrize("kind", ["resnet", "block"])
def test_every_stage_is_the_exact_quantized_arithmetic(kind):
    model = _model(kind)
    q = bt.quantize(model, _calibration())
    rec = _Record(q)
    with torch.no_grad():
        rec.run(torch.randn(2, 3, 32, 32))
    stages = [mod for mod in q.modules() if isinstance(mod, QuantizedConv2d)]
    assert len(rec.seen) == len(stages) == sum(isinstance(mod, nn.Conv2d) for mod in model.modules())
    assert any(r is not None for _, _, r, _ in rec.seen)   # the residuals ran in the epilogue
    for m, xq, rq, yq in rec.seen:
        _check_stage(m, xq, rq, yq)


@pytest.mark.parametrize("kind", ["resnet", "block"])
@pytest.mark.parametrize("method", ["l2", "minmax", "percentile"])
def test_close_to_the_float_model(kind, method):
    """Each stage rounds to 8 bits: the logits keep most of the float model's signal (a
    random-weight network has no margin to spare, so the bar is the noise, not the accuracy)."""
    model = _model(kind)
    x = torch.randn(16, 3, 32, 32)
    q = bt.quantize(model, [x[:8], x[8:]], method=method)
    with torch.no_grad():
        ref, got = model(x).double(), q(x).double()
    sqnr = 10 * torch.log10((ref ** 2).sum() / ((got - ref) ** 2).sum())
    assert sqnr > 20, f"{method}: {float(sqnr):.1f} dB"
    assert got.dtype == ref.dtype and got.shape == ref.shape


def test_activations_stay_uint8_and_blocked():
    q = bt.quantize(_model("resnet"), _calibration())
    calls = [n.target for n in q.graph.nodes if n.op == "call_function"]
    # one quantization in (the stem), one dequantization out (the global pool), nothing between
    assert calls.count(ops.quantize_to_blocked) == 1 and quantize_blocked not in calls and dequantize not in calls
    assert ops.global_avg_pool_blocked_u8.default in calls or ops.global_avg_pool_blocked_u8 in calls
    report = str(q.brgemm_report)
    assert "uint8 residual" in report and "QuantizedConv2d" in report


@pytest.mark.parametrize("kind", ["resnet", "block"])
def test_channels_last_input_gives_the_same_bits_without_a_copy(kind):
    """quantize_input reads a channels_last input's NHWC memory (no NCHW copy first) and
    quantizes it to the same uint8 blocks: the model's output is the same bits."""
    q = bt.quantize(_model(kind), _calibration())
    x = torch.randn(2, 3, 16, 16) * 3
    x[0, 0, 0, :3] = torch.tensor([1e4, -1e4, float("nan")])   # saturation both ways, NaN → 0
    xl = x.to(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.equal(q(xl), q(x))
        assert _copies(lambda: q(xl)) == _copies(lambda: q(x))
    for c in (1, 3, 5, 17, 70):
        xc = torch.randn(2, c, 5, 7).to(memory_format=torch.channels_last)
        assert torch.equal(quantize_input(xc, 0.02, 128), quantize_input(xc.contiguous(), 0.02, 128))
        assert _copies(lambda: quantize_input(xc, 0.02, 128)) == []


def test_every_isa_gives_the_same_bits():
    model = _model("block")
    q = bt.quantize(model, _calibration())
    x = torch.randn(2, 3, 16, 16)
    outs = {}
    try:
        for level in ISA_LEVELS:
            if isa_unavailable_reason(level):
                continue
            brgemm.set_isa(level)
            rec = _Record(q)
            with torch.no_grad():
                rec.run(x)
            outs[level] = [y for *_, y in rec.seen]
    finally:
        restore_isa()
    assert len(outs) >= 1
    first = next(iter(outs.values()))
    for level, ys in outs.items():
        for a, b in zip(first, ys):
            assert torch.equal(a, b), level


def test_weights_are_buffers_and_changes_are_seen():
    q = bt.quantize(_model("block"), _calibration())
    sd = q.state_dict()
    assert sd["c1.weight"].dtype == torch.int8 and sd["c1.weight_scale"].dtype == torch.float32
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        before = q(x)
        q.c3.weight.zero_()          # an in-place change: its version counter moves
        after = q(x)
    assert not torch.equal(before, after)
    rec = _Record(q)
    with torch.no_grad():
        rec.run(x)
    for m, xq, rq, yq in rec.seen:
        _check_stage(m, xq, rq, yq)


def test_calibration_leaves_the_float_model_alone():
    model = _model("resnet").train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    bt.quantize(model, _calibration(1))
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_errors():
    model = _model("block")
    with pytest.raises(TypeError, match="model"):
        bt.quantize("nope", _calibration())
    with pytest.raises(ValueError, match="calibration_batches is empty"):
        bt.quantize(model, [])
    with pytest.raises(TypeError, match=r"calibration_batches\[0\]"):
        bt.quantize(model, [torch.randn(2, 3, 8, 8).double()])
    with pytest.raises(ValueError, match="method"):
        bt.quantize(model, _calibration(), method="mean")
    q = bt.quantize(model, _calibration())
    with pytest.raises(TypeError, match="input"):
        q.c1(torch.randn(1, 1, 8, 8, 4))
    with pytest.raises(ValueError, match="input is blocked"):
        q.c1(torch.zeros(1, 1, 8, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="without a residual"):
        x = torch.zeros(1, 1, 8, 8, 3, dtype=torch.uint8)
        q.c1(x, torch.zeros(1, 1, 8, 8, 12, dtype=torch.uint8))
    with pytest.raises(ValueError, match="residual must be blocked"):
        q.c2(torch.zeros(1, 1, 8, 8, 12, dtype=torch.uint8), torch.zeros(1, 1, 4, 4, 12, dtype=torch.uint8))


def test_an_empty_batch_gives_empty_logits():
    model = _model("resnet")
    q = bt.quantize(model, _calibration())
    with torch.no_grad():
        out = q(torch.randn(0, 3, 32, 32))
    assert out.shape == (0, 10)


def test_copies_and_saved_models_compute_the_same():
    """deepcopy and torch.save / torch.load (which traces the graph again) rebuild the C++ layers."""
    import copy
    import io
    q = bt.quantize(_model("resnet"), _calibration())
    x = torch.randn(2, 3, 32, 32)
    buf = io.BytesIO()
    torch.save(q, buf)
    buf.seek(0)
    with torch.no_grad():
        want = q(x)
        for other in (copy.deepcopy(q), torch.load(buf, weights_only=False)):
            assert torch.equal(other(x), want)


def test_quantize_to_blocked_passes_opcheck():
    for x in (torch.randn(2, 3, 5, 7), torch.randn(2, 17, 4, 4).to(memory_format=torch.channels_last)):
        torch.library.opcheck(ops.quantize_to_blocked.default, (x, 0.02, 128))


class _FloatBetween(nn.Module):
    """A ReLU after a max-pool stays a float module between two quantized stages: the uint8 value
    is dequantized in front of it and its output quantized again (with its own parameters)."""

    def __init__(self):
        super().__init__()
        self.c1, self.pool, self.c2 = nn.Conv2d(3, 16, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(16, 8, 1)

    def forward(self, x):
        return self.c2(torch.relu(self.pool(self.c1(x)))).flatten(1)


def test_a_float_module_between_quantized_stages():
    model = _FloatBetween().eval()
    q = bt.quantize(model, _calibration())
    calls = [n.target for n in q.graph.nodes if n.op == "call_function"]
    assert dequantize in calls and quantize_blocked in calls
    x = torch.randn(2, 3, 32, 32)
    rec = _Record(q)
    with torch.no_grad():
        rec.run(x)
        ref, got = model(x).double(), q(x).double()
    for m, xq, rq, yq in rec.seen:
        _check_stage(m, xq, rq, yq)
    assert 10 * torch.log10((ref ** 2).sum() / ((got - ref) ** 2).sum()) > 20
