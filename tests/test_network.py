"""brgemm.torch.optimize: whole networks rebuilt from fused, blocked stages.

Inference is checked in two parts, each against a derived bound:
- the structure: the optimized graph's stages, computed in float64 (folded BatchNorms, the
  residual and ReLU of each fused convolution, the pools, the head), give the original model's
  float64 output within Σ (K + 2)·2⁻⁵³·M, where M is the same graph run on |x| with the absolute
  values of the weights and without ReLUs (then every value is positive and bounds the magnitude
  of the one it stands for) and the sum runs over every product of K terms and average on the way;
- the arithmetic: every stage of the float32 run is within (K + 2)·2⁻²⁴·Σ|a||b| of the same stage
  computed in float64 from the same float32 inputs (Σ|a||b|: the stage on absolute values).
"""

import copy

import pytest

torch = pytest.importorskip("torch")
import torch.fx as fx  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import brgemm.torch as bt  # noqa: E402
from brgemm.torch._fused import FusedConv2d  # noqa: E402
from brgemm.torch._network import enter_blocked, leave_blocked  # noqa: E402

EPS = 2.0 ** -24
ops = torch.ops.brgemm


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# --- test models -------------------------------------------------------------------------------

class Bottleneck(nn.Module):
    def __init__(self, cin, mid, stride, expansion=4):
        super().__init__()
        out = mid * expansion
        self.conv1, self.bn1 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv2, self.bn2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = nn.Conv2d(mid, out, 1, bias=False), nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != out:
            self.downsample = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class SmallResNet(nn.Module):
    """A ResNet-50-shaped network, narrow: stem 7×7/2 (3 input channels), max-pool 3×3/2,
    bottlenecks with downsampling, global average pooling and a Linear head."""

    def __init__(self, width=8, classes=10):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(Bottleneck(width, width, 1), Bottleneck(4 * width, width, 1))
        self.layer2 = nn.Sequential(Bottleneck(4 * width, 2 * width, 2), Bottleneck(8 * width, 2 * width, 1))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * width, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _randomize_batch_norms(model):
    """Running statistics and affine parameters away from their defaults, so folding matters."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(-1.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model


# --- the bounds --------------------------------------------------------------------------------

def _fold64(m):
    """A FusedConv2d's weights and bias with its BatchNorm folded in, in float64."""
    w, b = m.weight.double(), None if m.bias is None else m.bias.double()
    bn = m.bn
    if bn is None:
        return w, b
    scale = bn.weight.double() / (bn.running_var.double() + bn.eps).sqrt()
    shift = bn.bias.double() - bn.running_mean.double() * scale
    if b is not None:
        shift = shift + b * scale
    return w * scale.reshape(-1, 1, 1, 1), shift


def _conv64(m, x, residual, absolute):
    """A FusedConv2d's stage in float64 on a plain x; absolute: |weights|, no ReLU."""
    w, b = _fold64(m)
    if absolute:
        w, b = w.abs(), None if b is None else b.abs()
    pt, pb, pl, pr = m.padding
    y = F.conv2d(F.pad(x, (pl, pr, pt, pb)), w, b, m.stride, 0, m.dilation, m.groups)
    if residual is not None:
        y = y + residual
    return y if absolute else _activation(y, m.activation)


def _activation(y, name):
    return {"none": y, "relu": torch.relu(y), "relu6": y.clamp(0.0, 6.0)}[name]


def _plain(v, channels=None):
    """A value of the optimized graph as a plain float64 tensor."""
    return (ops.from_blocked(v, channels) if v.dim() == 5 else v).double()


class _Stages64(fx.Interpreter):
    """The optimized graph's stages in float64 on the plain layout (absolute: on |weights|,
    without ReLUs), and Σ (K + 2) over its products and averages."""

    def __init__(self, gm, absolute):
        super().__init__(gm)
        self.absolute, self.terms = absolute, 0

    def call_module(self, target, args, kwargs):
        m = self.fetch_attr(target)
        if isinstance(m, FusedConv2d):
            self.terms += m.weight[0].numel() + 3  # (C/groups)·R·S terms
            return _conv64(m, args[0], args[1] if len(args) > 1 else None, self.absolute)
        if isinstance(m, bt.Linear):
            self.terms += m.in_features + 2
            w, b = m.weight.double(), None if m.bias is None else m.bias.double()
            return F.linear(args[0], w.abs(), b.abs()) if self.absolute else F.linear(args[0], w, b)
        if type(m).__name__ == "_BlockedMaxPool2d":
            return F.max_pool2d(args[0], m.kernel, m.stride, m.padding)
        if isinstance(m, (nn.ReLU, nn.ReLU6)) and self.absolute:
            return args[0]
        return super().call_module(target, args, kwargs)

    def call_function(self, target, args, kwargs):
        if target in (enter_blocked, leave_blocked):
            return args[0]
        if "global_avg_pool_blocked" in str(target):
            self.terms += args[0].shape[2] * args[0].shape[3] + 2
            return args[0].mean((2, 3))
        if target in (F.relu, torch.relu) and self.absolute:
            return args[0]
        return super().call_function(target, args, kwargs)

    def call_method(self, target, args, kwargs):
        if target == "float":  # the bf16 graph's widening: everything here is float64
            return args[0]
        return super().call_method(target, args, kwargs)


class _CheckStages(fx.Interpreter):
    """Runs the optimized model as it is and checks every fused convolution and the head
    against float64 on the same inputs. In bfloat16 (unit roundoff 2⁻⁸: 8 significant bits) the
    weights are rounded to it (2⁻⁸ of each term) and so are the outputs (2⁻⁸ of |y| ≤ Σ|a||b|),
    and the head's input too."""

    def __init__(self, gm, bf16=False):
        super().__init__(gm)
        self.checked, self.rounding = 0, 2.0 ** -7 if bf16 else 0.0

    def call_module(self, target, args, kwargs):
        out = super().call_module(target, args, kwargs)
        m = self.fetch_attr(target)
        if isinstance(m, FusedConv2d):
            x = _plain(args[0], m.in_channels)
            r = _plain(args[1], m.out_channels) if len(args) > 1 else None
            ref = _conv64(m, x, r, False)
            mag = _conv64(m, x.abs(), None if r is None else r.abs(), True)
            bound = ((m.weight[0].numel() + 3) * EPS + self.rounding) * mag
        elif isinstance(m, bt.Linear):
            x = args[0].double()
            ref = F.linear(x, m.weight.double(), m.bias.double())
            mag = F.linear(x.abs(), m.weight.double().abs(), m.bias.double().abs())
            bound = ((m.in_features + 2) * EPS + 1.5 * self.rounding) * mag
        else:
            return out
        _assert_within(_plain(out, ref.shape[1]), ref, bound, target)
        self.checked += 1
        return out


def _assert_within(got, ref, bound, what):
    err = (got.double() - ref).abs() - bound
    assert float(err.max()) <= 0, f"{what}: the error exceeds the bound by {float(err.max()):.3g}"


def _check_inference(model, fast, x, bf16=False):
    """Both parts of the module docstring's check."""
    with torch.no_grad():
        ref = copy.deepcopy(model).double()(x.double())
        stages = _Stages64(fast, absolute=False)
        mag = _Stages64(fast, absolute=True)
        got64, m = stages.run(x.double()), mag.run(x.double().abs())
        _assert_within(got64, ref, mag.terms * 2.0 ** -53 * m, "the optimized graph in float64")
        check = _CheckStages(fast, bf16)
        got = check.run(x)
        assert check.checked == sum(isinstance(v, (FusedConv2d, bt.Linear)) for v in fast.modules())
        assert torch.equal(got, fast(x))  # the interpreter ran what the module runs
    return got, ref


# --- inference ---------------------------------------------------------------------------------

class _WinogradStages(fx.Interpreter):
    """Runs a model optimized with algorithm="winograd" and checks every stage that ran Winograd
    against float64 on the same input, within test_winograd.py's bound for its tile (the
    algorithm in float64 on |x|, |w| with absolute transform matrices, × (C + 4a + 1)·2⁻²³),
    plus one rounding each for the folded bias and the residual."""

    def __init__(self, gm):
        super().__init__(gm)
        self.tiles = []

    def call_module(self, target, args, kwargs):
        out = super().call_module(target, args, kwargs)
        m = self.fetch_attr(target)
        if not isinstance(m, FusedConv2d) or m.algorithm_used is None or m.algorithm_used == "direct":
            return out
        from test_winograd import bound as winograd_bound, conv64
        tile = 4 if "4x4" in m.algorithm_used else 2
        self.tiles.append(tile)
        x = _plain(args[0], m.in_channels).numpy()
        w, b = (t.detach().double().numpy() for t in m._folded_weights())   # the float32 weights it ran
        oh, ow = out.shape[2], out.shape[3]
        conv = conv64(x, w, m.padding, oh, ow)
        pre = conv + b[None, :, None, None]
        extra = abs(pre)
        if len(args) > 1:
            pre = pre + _plain(args[1], m.out_channels).numpy()
            extra = extra + abs(pre)
        ref = _activation(torch.from_numpy(pre), m.activation)
        tol = winograd_bound(x, w, tile, m.padding, oh, ow, extra=2.0 ** -23 * extra)
        _assert_within(_plain(out, m.out_channels), ref, torch.from_numpy(tol), target)
        return out


def test_winograd_stages_are_within_their_bound():
    """optimize(algorithm="winograd"): the stride-1 3×3 stages run Winograd (algorithm_used
    names the tile), each within its own error bound; the others stay direct."""
    model = _randomize_batch_norms(SmallResNet(width=16)).eval()
    fast = bt.optimize(model, algorithm="winograd")
    check = _WinogradStages(fast)
    with torch.no_grad():
        check.run(torch.randn(2, 3, 48, 48))
    threes = [m for m in fast.modules() if isinstance(m, FusedConv2d) and tuple(m.kernel_size) == (3, 3)
              and m.stride == [1, 1]]
    assert threes and len(check.tiles) == len(threes)
    assert all(m.algorithm_used == "direct" for m in fast.modules()
               if isinstance(m, FusedConv2d) and m not in threes)
    with pytest.raises(ValueError, match="algorithm must be"):
        bt.optimize(model, algorithm="fast")


@pytest.mark.parametrize("n,size", [(1, 32), (3, 37)])
def test_inference_matches_float64_within_the_derived_bound(n, size):
    model = _randomize_batch_norms(SmallResNet()).eval()
    fast = bt.optimize(model)
    x = torch.randn(n, 3, size, size)
    got, ref = _check_inference(model, fast, x)
    assert got.dtype == torch.float32 and got.shape == ref.shape


def test_bfloat16_inference_stages_within_the_derived_bound():
    model = _randomize_batch_norms(SmallResNet()).eval()
    fast = bt.optimize(model, dtype="bfloat16")
    x = torch.randn(2, 3, 32, 32)
    got, ref = _check_inference(model, fast, x, bf16=True)
    assert got.dtype == torch.float32
    # Under autocast the float32 model computes the same bf16 stages and returns bf16.
    plain = bt.optimize(model)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        auto = plain(x)
    assert auto.dtype == torch.bfloat16 and torch.equal(auto.float(), got)


def test_every_convolution_is_fused_and_the_layout_converts_once():
    model = SmallResNet().eval()
    fast = bt.optimize(model)
    report = fast.brgemm_report
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    for name in convs:
        assert report.became(name).startswith("FusedConv2d + BatchNorm2d folded"), (name, report.became(name))
    assert report.became("layer1.0.conv3") == "FusedConv2d + BatchNorm2d folded, residual add, ReLU"
    assert report.became("layer1.0.bn1") == "in layer1.0.conv1"
    assert report.became("fc") == "brgemm.torch.Linear"
    calls = [n.target for n in fast.graph.nodes if n.op == "call_function"]
    assert calls.count(enter_blocked) == 1 and leave_blocked not in calls
    assert report.became("maxpool") == "blocked max pooling"
    assert report.became("avgpool") == "blocked global average pooling"


def test_shares_parameters_and_state_dict_keys():
    model = _randomize_batch_norms(SmallResNet()).eval()
    fast = bt.optimize(model)
    assert list(sorted(fast.state_dict())) == list(sorted(model.state_dict()))
    ids = {id(p) for p in model.parameters()}
    assert {id(p) for p in fast.parameters()} == ids and len(list(fast.parameters())) == len(ids)


def test_refolds_when_parameters_or_statistics_change():
    """Folded weights follow the tensors' version counters: load_state_dict (in-place copies),
    an in-place write into a running statistic, and an optimizer step are all seen."""
    model = _randomize_batch_norms(SmallResNet()).eval()
    fast = bt.optimize(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fast(x)
        other = _randomize_batch_norms(SmallResNet()).eval()
        fast.load_state_dict(other.state_dict())
        _check_inference(other, fast, x)
        model.layer1[0].bn2.running_var.mul_(3.0)
        model.conv1.weight.mul_(-1.0)
        _check_inference(model, fast, x)
        # A parameter replaced by a new tensor (which may reuse the old one's address and id).
        model.layer1[0].bn1.weight = nn.Parameter(torch.rand(model.layer1[0].bn1.num_features))
        _check_inference(model, fast, x)


def test_modules_it_does_not_know_run_on_the_plain_layout():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Sigmoid(),
                          nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 11 * 11, 4)).eval()
    _randomize_batch_norms(model)
    fast = bt.optimize(model)
    report = fast.brgemm_report
    assert report.became("2") == "kept (Sigmoid)"
    assert report.became("3") == "kept (PyTorch)"
    x = torch.randn(2, 3, 11, 11)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-5)


class _Untraceable(nn.Module):
    """Control flow on a tensor's value: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        y = self.body(x)
        if y.sum() > 0:
            y = y * 2
        return self.head(y.mean((2, 3)))


def test_a_model_that_does_not_trace_is_optimized_child_by_child():
    model = _randomize_batch_norms(_Untraceable()).eval()
    fast = bt.optimize(model)
    report = fast.brgemm_report
    assert "does not trace" in str(report)
    assert report.became("body.0").startswith("FusedConv2d + BatchNorm2d folded, ReLU")
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-5)


def _copies(fn):
    """The tensor copies fn makes (aten ops seen by the profiler): a channels_last input made
    contiguous shows as aten::contiguous → aten::clone → aten::copy_."""
    with torch.profiler.profile() as prof:
        fn()
    return sorted(e.name for e in prof.events() if e.name in ("aten::contiguous", "aten::clone", "aten::copy_"))


@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_channels_last_input(dtype):
    """The same output bits from either memory format, and no copy more for channels_last (the
    input enters the blocked layout from its NHWC memory)."""
    model = _randomize_batch_norms(SmallResNet()).eval()
    fast = bt.optimize(model, dtype=dtype)
    x = torch.randn(2, 3, 32, 32)
    xl = x.to(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.equal(fast(xl), fast(x))
        assert _copies(lambda: fast(xl)) == _copies(lambda: fast(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("c", [1, 3, 5, 17, 70])
def test_to_blocked_reads_channels_last_memory(c, dtype):
    """to_blocked of a channels_last tensor: the NCHW tensor's bits, without an NCHW copy; its
    gradient is from_blocked's (NCHW contiguous, which autograd accepts for the input)."""
    x = torch.randn(2, c, 5, 6).to(dtype)
    xl = x.to(memory_format=torch.channels_last)
    assert torch.equal(ops.to_blocked(xl), ops.to_blocked(x))
    assert _copies(lambda: ops.to_blocked(xl)) == []
    if c > 1:  # C = 1 is contiguous both ways (then it is read as NCHW)
        assert _copies(lambda: ops.to_blocked(xl.contiguous())) != []  # what the check would see
    xg = xl.clone().requires_grad_()
    b = ops.to_blocked(xg)
    g = torch.randn_like(b)
    b.backward(g)
    assert torch.equal(xg.grad, ops.from_blocked(g, c))
    xh = torch.randn(2, c, 1, 1).to(dtype).to(memory_format=torch.channels_last)  # H = W = 1: both too
    assert torch.equal(ops.to_blocked(xh), ops.to_blocked(xh.contiguous()))


@pytest.mark.parametrize("channels_last", [False, True])
def test_to_blocked_converts_to_bfloat16_in_the_same_pass(channels_last):
    """to_blocked(x, torch.bfloat16) of a float32 x: the values of blocking x.to(bfloat16) (round to
    nearest even, infinities kept, a NaN stays a NaN), without a converted copy of x; its gradient comes back
    in float32; a dtype it cannot write is a ValueError naming dtype."""
    x = torch.randn(2, 5, 4, 6) * 1e3
    x[0, 1, 2, 3], x[1, 4, 0, 0], x[1, 0, 3, 5] = float("nan"), float("inf"), 1.0 + 2.0 ** -8  # a tie: to even
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    b = ops.to_blocked(x, torch.bfloat16)
    want = ops.to_blocked(x.to(torch.bfloat16))
    assert b.dtype == torch.bfloat16   # the same values bit for bit, a NaN as some NaN
    torch.testing.assert_close(b.float(), want.float(), rtol=0, atol=0, equal_nan=True)
    assert _copies(lambda: ops.to_blocked(x, torch.bfloat16)) == []
    xg = x.clone().requires_grad_()
    out = ops.to_blocked(xg, torch.bfloat16)
    g = torch.randn_like(out)
    out.backward(g)
    assert xg.grad.dtype == torch.float32 and torch.equal(xg.grad, ops.from_blocked(g, 5).float())
    torch.testing.assert_close(ops.to_blocked(x, torch.float32), ops.to_blocked(x), rtol=0, atol=0, equal_nan=True)
    with pytest.raises(ValueError, match="dtype"):
        ops.to_blocked(x, torch.float16)


def test_errors():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        bt.optimize(lambda x: x)
    with pytest.raises(ValueError, match="dtype must be"):
        bt.optimize(SmallResNet(), dtype="float16")
    w = torch.randn(8, 4, 1, 1)
    with pytest.raises(ValueError, match="residual needs blocked_output=True"):
        ops.conv2d(torch.randn(1, 4, 3, 3), w, None, [1, 1], [0, 0], [1, 1], 1, "none", False,
                   torch.randn(1, 1, 3, 3, 8))
    with pytest.raises(ValueError, match="residual must have the blocked output's shape"):
        ops.conv2d(torch.randn(1, 4, 3, 3), w, None, [1, 1], [0, 0], [1, 1], 1, "none", True,
                   torch.randn(1, 1, 3, 4, 8))
    with pytest.raises(ValueError, match="channels=5 does not fit"):
        ops.from_blocked(torch.randn(1, 1, 2, 2, 4), 5)


# --- the residual epilogue -----------------------------------------------------------------------

@pytest.mark.parametrize("activation", ["none", "relu"])
@pytest.mark.parametrize("shape", [(2, 20, 7, 36, 3, 1), (1, 64, 5, 256, 1, 2), (2, 1024, 3, 40, 1, 1)])
def test_conv_residual_equals_the_sum_then_the_activation(shape, activation):
    """act(conv + b + r) in one pass: the same float32 sum as the convolution alone (the epilogue
    adds r to the rounded sum, then the bias order is as without r), so it equals the unfused
    float32 computation in the same order bit for bit; and its gradients reach r."""
    n, c, hw, k, r, stride = shape
    x = torch.randn(n, c, hw, hw)
    w, b = torch.randn(k, c, r, r), torch.randn(k)
    xb = ops.to_blocked(x)
    plain = ops.conv2d(xb, w, b, [stride] * 2, [r // 2] * 2, [1, 1], 1, "none", True)
    res = torch.randn_like(plain).requires_grad_()
    got = ops.conv2d(xb, w, b, [stride] * 2, [r // 2] * 2, [1, 1], 1, activation, True, res)
    want = plain + res
    want = torch.relu(want) if activation == "relu" else want
    assert torch.equal(got, want.detach())
    g = torch.randn_like(got)
    got.backward(g)
    assert torch.equal(res.grad, g * (got > 0) if activation == "relu" else g)


def test_layout_round_trip_and_gradients():
    x = torch.randn(2, 20, 3, 5, requires_grad=True)
    b = ops.to_blocked(x)
    assert b.shape == (2, 1, 3, 5, 32) and torch.equal(b[..., 20:], torch.zeros(2, 1, 3, 5, 12))
    back = ops.from_blocked(b, 20)
    assert torch.equal(back, x.detach())
    back.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


# --- training ------------------------------------------------------------------------------------

def _reduction_terms(model, x):
    """Σ (K + 2) over the products of a forward (each convolution's C·R·S, the head's features)
    and the BatchNorm reductions (N·H·W each), the backward's products reduce as many again."""
    terms, hooks = [0], []

    def count(m, inputs, output):
        if isinstance(m, nn.Conv2d):
            terms[0] += m.weight[0].numel() + output.shape[0] * output.shape[2] * output.shape[3] + 4
        elif isinstance(m, nn.Linear):
            terms[0] += m.in_features + output.shape[0] + 4
    for m in model.modules():
        hooks.append(m.register_forward_hook(count))
    with torch.no_grad():
        copy.deepcopy(model).eval()(x)
    for h in hooks:
        h.remove()
    return terms[0]


def _train_step(model, x):
    y = model(x)
    y.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    return y.detach(), grads, {n: b.clone() for n, b in model.named_buffers()}


@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_training_steps_match_float64(dtype):
    """Outputs, every parameter's gradient and the BatchNorm running statistics after three
    steps of SGD, against PyTorch in float64. Bound, relative to each tensor's largest value:
    Σ (K + 2)·u over every reduction of the step (BatchNorm renormalises each stage, so a stage
    passes on the relative error it received without amplifying it, to first order), with u
    = 2⁻²⁴, or 2⁻⁸ per rounded stage (weights, activations) in bfloat16. bfloat16 gradients are
    not compared: BatchNorm's backward subtracts nearly equal terms, and PyTorch's own autocast
    run of this model has 30-90 % relative gradient errors against float64 (ours, the same), so
    no bound on them would say anything."""
    model = _randomize_batch_norms(SmallResNet()).train()
    ref = copy.deepcopy(model).double()
    fast = bt.optimize(model, dtype=dtype)
    x = torch.randn(4, 3, 32, 32)
    terms = _reduction_terms(model, x)
    stages = sum(isinstance(m, nn.Conv2d) for m in model.modules()) + 1
    rel = 2 * terms * EPS + (0 if dtype is None else 3 * stages * 2.0 ** -8)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=1e-3)
    opt = torch.optim.SGD(fast.parameters(), lr=1e-3)
    for step in range(3):
        y64, g64, b64 = _train_step(ref, x.double())
        y, g, b = _train_step(fast, x)
        _assert_within(y, y64, rel * y64.abs().max(), f"step {step} output")
        for name in g64 if dtype is None else ():
            _assert_within(g[name], g64[name], rel * g64[name].abs().max(), f"step {step} grad {name}")
        for name in b64:
            _assert_within(b[name], b64[name], rel * b64[name].abs().max(), f"step {step} buffer {name}")
        opt_ref.step()
        opt.step()
    assert rel < 0.05 * (1 if dtype is None else 4)  # the bound is not vacuous


def test_mode_switches_after_optimize():
    """train() and eval() on the optimized model switch the BatchNorms between batch statistics
    (updating the running ones) and folded running statistics, as often as asked."""
    model = _randomize_batch_norms(SmallResNet())
    fast = bt.optimize(model.eval())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = fast(x)
        fast.train()
        assert model.bn1.training and all(m.training for m in fast.modules())
        tracked = int(model.bn1.num_batches_tracked)
        fast(x)
        assert int(model.bn1.num_batches_tracked) == tracked + 1
        fast.eval()
        after = fast(x)
        assert not torch.equal(before, after)  # the running statistics moved
        _check_inference(model, fast, x)


def test_gradient_accumulation_and_optimizers():
    """Two backward passes add into .grad as PyTorch's modules do; Adam steps the shared
    parameters."""
    model = _randomize_batch_norms(SmallResNet()).train()
    fast = bt.optimize(model)
    x = torch.randn(2, 3, 32, 32)
    fast(x).sum().backward()
    once = {n: p.grad.clone() for n, p in fast.named_parameters()}
    fast(x).sum().backward()
    for n, p in fast.named_parameters():
        torch.testing.assert_close(p.grad, 2 * once[n], rtol=1e-5, atol=1e-6 * float(once[n].abs().max()))
    opt = torch.optim.Adam(fast.parameters(), lr=1e-2)
    w = model.conv1.weight.detach().clone()
    opt.step()
    assert not torch.equal(model.conv1.weight, w)


def test_torch_compile_of_the_optimized_model():
    """Bit for bit: every stage is brgemm's (inductor computes the fold with the same correctly
    rounded operations, and the pools are brgemm's operators)."""
    model = _randomize_batch_norms(SmallResNet()).eval()
    fast = bt.optimize(model)
    compiled = torch.compile(fast, fullgraph=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(compiled(x), fast(x))


# --- the vision models of the benchmark ----------------------------------------------------------

def _check_training_stages(fast, x):
    """A training step of the optimized model, each fused stage's backward checked against
    float64 from the float32 values the stage saw (its input, residual and output gradient):
    the input's gradient and the stage's parameter gradients, within Σ (K + 2)·2⁻²⁴ of the
    largest reference value, summed over the stage's reductions (the convolution's C·R·S forward,
    K·R·S backward and N·OH·OW weight-gradient terms, BatchNorm's two N·OH·OW means). The whole
    network is not compared end to end in training: a ReLU whose input lies within rounding of 0
    may switch in one run and not the other, and with BatchNorm's statistics over few values (2²
    pixels × 2 images in the last stage) that moves a whole channel's gradient; for the same
    reason each stage's reference takes its activation's switches from the float32 run."""
    seen, hooks = {}, []
    for name, m in fast.named_modules():
        if isinstance(m, FusedConv2d):
            def forward(mod, inp, out, name=name):
                seen[name] = [inp[0].detach(), inp[1].detach() if len(inp) > 1 else None, out.detach()]

            def backward(mod, grad_in, grad_out, name=name):
                seen[name] += [grad_in[0], grad_out[0]]
            hooks += [m.register_forward_hook(forward), m.register_full_backward_hook(backward)]
    for p in fast.parameters():
        p.grad = None
    fast(x).square().sum().backward()
    for h in hooks:
        h.remove()
    for name, (xb, rb, yb, gx, gy) in seen.items():
        m = fast.get_submodule(name)
        xi = ops.from_blocked(xb, m.in_channels).double().requires_grad_()
        w, gamma, beta = (t.detach().double().requires_grad_() for t in (m.weight, m.bn.weight, m.bn.bias))
        pt, pb, pl, pr = m.padding
        z = F.conv2d(F.pad(xi, (pl, pr, pt, pb)), w, None, m.stride, 0, m.dilation, m.groups)
        y = F.batch_norm(z, None, None, gamma, beta, True, 0.0, m.bn.eps)
        if rb is not None:
            y = y + ops.from_blocked(rb, m.out_channels).double()
        if m.activation != "none":  # the activation as the float32 run decided it, element by element
            y32 = ops.from_blocked(yb, m.out_channels).double()
            y = torch.where((y32 > 0) & (y32 < 6 if m.activation == "relu6" else True), y, y32)
        refs = torch.autograd.grad(y, (xi, w, gamma, beta), ops.from_blocked(gy, m.out_channels).double())
        count = z.shape[0] * z.shape[2] * z.shape[3]
        rel = (m.weight[0].numel() + m.out_channels // m.groups * m.weight[0, 0].numel() + 3 * count + 8) * EPS
        for got, ref, what in zip((ops.from_blocked(gx, m.in_channels) if gx is not None else None, m.weight.grad,
                                   m.bn.weight.grad, m.bn.bias.grad), refs, ("input", "weight", "γ", "β")):
            if got is not None:
                _assert_within(got, ref, rel * ref.abs().max(), f"{name}: gradient of the {what}")
    return len(seen)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnext50_32x4d", "mobilenet_v2"])
def test_vision_models_inference_and_training(name):
    """ResNet-18 (basic blocks: the first adds the max-pooled input), ResNet-50 (bottlenecks,
    stride-2 downsampling), ResNeXt-50 (grouped 3×3 convolutions) and MobileNetV2 (depthwise
    convolutions, ReLU6, residuals without activation) as the benchmark builds them, at 64²:
    every convolution fused, the inference checks of the module docstring, and a training step
    stage by stage."""
    from brgemm.bench.vision import vision_model
    model = vision_model(name, num_classes=10, seed=1, random_bn=True).eval()
    fast = bt.optimize(model)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert all(fast.brgemm_report.became(n).startswith("FusedConv2d") for n in convs)
    x = torch.randn(2, 3, 64, 64)
    _check_inference(model, fast, x)
    fast.train()
    assert _check_training_stages(fast, x) == len(convs)


def test_inference_reuses_its_activation_buffers_safely():
    """In inference the fused convolutions write into buffers kept from call to call (a slot is
    shared only by values whose lives do not overlap): repeated calls, other sizes and batches,
    and threads give what a fresh model gives, and outputs handed out are never overwritten."""
    import threading
    model = _randomize_batch_norms(SmallResNet()).eval()
    fast = bt.optimize(model)
    slots = [n.kwargs["slot"] for n in fast.graph.nodes if n.op == "call_module" and "slot" in n.kwargs]
    assert len(slots) == 16 and max(slots) + 1 < len(slots)   # 15 convolutions and the max pooling; some reused
    xs = [torch.randn(2, 3, 32, 32), torch.randn(3, 3, 40, 36), torch.randn(1, 3, 32, 32)]
    with torch.no_grad():
        first = [fast(x) for x in xs]
        again = [fast(x) for x in xs]
        fresh = [bt.optimize(model)(x) for x in xs]
        results = {}

        def run(i):
            results[i] = [fast(x) for x in xs]
        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for a, b, c in zip(first, again, fresh):
        assert torch.equal(a, b) and torch.equal(a, c)
    for i in range(2):
        assert all(torch.equal(a, b) for a, b in zip(first, results[i]))


def test_copies_and_saved_optimized_models_compute_the_same():
    """deepcopy and torch.save / torch.load of an optimized model: its caches (the folded
    weights' weak-reference keys, the activation buffers) start afresh in the copy."""
    import io
    model = _randomize_batch_norms(SmallResNet()).eval()
    fast = bt.optimize(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = fast(x)
        buf = io.BytesIO()
        torch.save(fast, buf)
        buf.seek(0)
        for other in (copy.deepcopy(fast), torch.load(buf, weights_only=False)):
            assert torch.equal(other(x), want)
