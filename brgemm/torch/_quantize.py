"""quantize: int8 inference for a whole torch model, built on :func:`~brgemm.torch.optimize`.

The model is optimized (eval mode: every convolution folded with its BatchNorm, residual add and
ReLU into one fused stage), then calibrated: the calibration batches run through it and
brgemm.quant's observers see every activation a fused stage reads or writes. Each fused stage
then becomes a :class:`QuantizedConv2d`: int8 weights with one scale per output channel (the
folded float weights, quantized symmetrically), uint8 activations with one scale and zero point
per tensor, exact int32 sums, and bias, residual, ReLU and requantization in the product's
epilogue. Between stages the activations stay uint8 and blocked; max-pooling works on uint8
(quantization is monotone), the global average pooling dequantizes on its way out, the head and
anything else stays float (a uint8 value is dequantized in front of what cannot read it).
"""

import threading

import torch
import torch.fx as fx
from torch import nn

from .. import _core
from .._quantize import METHODS, HistogramObserver, MinMaxObserver, quantize_per_channel
from .._runners.quantized import quantization_arg
from ._bridge import _F32, _np, _op, _tensor
from ._layout import _blocked_shape
from ._fused import Activations, FusedConv2d
from ._network import OptimizationReport, _BlockedMaxPool2d, _plan_activations, enter_blocked, optimize


def _u8_params(qp):
    """(scale, zero point) of a per-tensor uint8 QParams as Python numbers."""
    return float(qp.scale), int(qp.zero_point)


class QuantizedConv2d(nn.Module):
    """One fused stage of a quantized model: uint8 blocked input × int8 weights (per output
    channel) + float32 bias (the BatchNorm folded in), + the uint8 residual when the call passes
    one, → activation → uint8 blocked output. Its int8 weights, scales and bias are buffers
    (saved in state_dict); the layer repacks when one of them changes (version counters)."""

    def __init__(self, fused, weight, bias, input_qparams, output_qparams, residual_qparams=None):
        super().__init__()
        geo = fused._geometry
        self._geometry = geo
        self.in_channels, self.out_channels, self.groups = geo.in_channels, geo.out_channels, geo.groups
        self.kernel_size, self.stride, self.padding = geo.kernel_size, geo.stride, geo.padding
        self.activation = fused.activation
        w_q, w_scale = quantize_per_channel(weight.detach().numpy())
        self.register_buffer("weight", torch.from_numpy(w_q))
        self.register_buffer("weight_scale", torch.from_numpy(w_scale))
        self.register_buffer("bias", None if bias is None else bias.detach().clone().float())
        self.input_scale, self.input_zero_point = _u8_params(input_qparams)
        self.output_scale, self.output_zero_point = _u8_params(output_qparams)
        self.residual_scale, self.residual_zero_point = (
            (None, None) if residual_qparams is None else _u8_params(residual_qparams))
        self._make_layer()
        self.__dict__["_activations"] = None  # set by quantize: the model's Activations

    def _make_layer(self):
        geo = self._geometry
        self._layer = _core._QuantizedConv2d(*geo.core_args(), self.activation, "uint8", **geo.core_kwargs())
        self._bc, self._bk = self._layer.bc, self._layer.bk
        self._packed = None           # the versions of what the layer packed last
        self._lock = threading.Lock()

    def __getstate__(self):   # copies and pickles rebuild the C++ layer (it packs on first use)
        state = self.__dict__.copy()
        for name in ("_layer", "_lock", "_packed"):
            del state[name]
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._make_layer()

    def _refresh(self):
        tensors = (self.weight, self.weight_scale, self.bias)
        key = tuple((id(t), t._version) for t in tensors if t is not None) + (
            self.input_scale, self.input_zero_point, self.output_scale, self.output_zero_point)
        if key != self._packed:
            b = None if self.bias is None else _np(self.bias.contiguous())
            self._layer.refresh(_np(self.weight.contiguous()), _np(self.weight_scale.contiguous()), b,
                                self.input_scale, self.input_zero_point, self.output_scale, self.output_zero_point)
            self._packed = key

    def forward(self, x, residual=None, slot=None):
        """x: uint8 blocked (N, C/bc, H, W, bc) quantized with (input_scale, input_zero_point);
        residual: uint8 blocked like the output, quantized with the residual's parameters."""
        x = _tensor(x, "input", (torch.uint8,), ndim=5)
        c = self.in_channels
        if x.shape[1] != -(-c // self._bc) or x.shape[4] != self._bc:
            raise ValueError(f"input is blocked as {tuple(x.shape)}; {c} uint8 channels need blocks of {self._bc}")
        n, h, w = x.shape[0], x.shape[2], x.shape[3]
        oh, ow = self._geometry.out_size(h, w)
        shape = (n, -(-self.out_channels // self._bk), oh, ow, self._bk)
        pool = self._activations
        out = (torch.empty(shape, dtype=torch.uint8) if pool is None or slot is None
               else pool.buffer(slot)(shape, torch.uint8))
        add = {}
        if residual is not None:
            if self.residual_scale is None:
                raise ValueError("this stage was quantized without a residual: call it without one")
            r = _tensor(residual, "residual", (torch.uint8,), ndim=5)
            if tuple(r.shape) != shape:
                raise ValueError(f"residual must be blocked like the output {shape}, got {tuple(r.shape)}")
            add = {"add": _np(r), "add_scale": self.residual_scale, "add_zero_point": self.residual_zero_point}
        if n == 0:
            return out
        with self._lock:
            self._refresh()
            self._layer.forward(n, h, w, _np(x), _np(out), **add)
        return out

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={tuple(self.kernel_size)}, "
                f"stride={tuple(self.stride)}, groups={self.groups}, activation={self.activation!r}, "
                f"input=({self.input_scale:.4g}, {self.input_zero_point}), "
                f"output=({self.output_scale:.4g}, {self.output_zero_point})"
                + ("" if self.residual_scale is None
                   else f", residual=({self.residual_scale:.4g}, {self.residual_zero_point})"))


@_op("quantize_to_blocked", "(Tensor input, float scale, int zero_point) -> Tensor")
def quantize_input(input, scale, zero_point):
    """A float32 (N, C, H, W) input, any memory format, quantized straight into the blocked
    uint8 layout of its channel count: clip(round(x / scale) + zero_point, 0, 255), ties to
    even (one pass; channels_last memory read as it is). An operator, so that the graph of a
    quantized model traces (torch.save and torch.load of the model re-trace it)."""
    x = _tensor(input, "input", (_F32,), ndim=4, channels_last=True)
    scale, zero_point, _, _ = quantization_arg(scale, zero_point, 1.0, 0)
    n, c, h, w = x.shape
    out = torch.empty(_blocked_shape(n, c, h, w), dtype=torch.uint8)
    if out.numel():
        _core.conv_to_blocked(_np(x), _np(out), scale=scale, zero_point=zero_point)
    return out


@quantize_input.register_fake
def _(input, scale, zero_point):
    n, c, h, w = input.shape
    return input.new_empty(_blocked_shape(n, c, h, w), dtype=torch.uint8)


def quantize_blocked(x, scale, zero_point):
    """A float blocked tensor in uint8 (round to nearest even, saturated), e.g. after a module
    that stayed float, on the way into a quantized stage."""
    return torch.clamp(torch.round(x.float() / scale) + zero_point, 0, 255).to(torch.uint8)


def dequantize(x, scale, zero_point):
    """A uint8 value as float32, in front of what reads floats."""
    return (x.float() - zero_point) * scale


class _Observe(fx.Interpreter):
    """Runs an optimized graph and shows each watched node's value to its observer."""

    def __init__(self, gm, observers):
        super().__init__(gm)
        self.observers = observers

    def run_node(self, n):
        out = super().run_node(n)
        if n in self.observers:
            self.observers[n].observe(out.detach().float().numpy())
        return out


def _is_fused(gm, n):
    return n.op == "call_module" and isinstance(_submodule(gm, n.target), FusedConv2d)


def _submodule(gm, target):
    try:
        return gm.get_submodule(target)
    except AttributeError:
        return None


def _watched(gm):
    """The nodes whose values need quantization parameters: what fused stages read and write,
    followed back through max-pooling (which keeps its input's)."""
    nodes = set()

    def source(v):
        while v.op == "call_module" and isinstance(_submodule(gm, v.target), _BlockedMaxPool2d):
            v = v.args[0]
        if v.op == "call_function" and v.target is enter_blocked:
            v = v.args[0]   # observed plain: the padding channels are not data
        return v

    for n in gm.graph.nodes:
        if _is_fused(gm, n):
            nodes.add(n)
            nodes.update(source(a) for a in n.args if isinstance(a, fx.Node))
    return nodes, source


class _Int8Rebuild:
    """One pass over an optimized graph, emitting the int8 one."""

    def __init__(self, gm, qparams, source, report):
        self.gm, self.qparams, self.source, self.report = gm, qparams, source, report
        self.graph = fx.Graph()
        self.env = {}      # old node → new node
        self.u8 = {}       # new node → its (scale, zero point) when it is a uint8 value
        self.floats = {}   # uint8 new node → its dequantized node
        self.modules = {}

    def qp(self, old):
        return _u8_params(self.qparams[self.source(old)])

    def as_u8(self, old):
        """The uint8 version of old's value, for a quantized stage's input."""
        new = self.env[old]
        if new in self.u8:
            return new
        scale, zp = self.qp(old)
        if old.op == "call_function" and old.target is enter_blocked:
            out = self.graph.call_function(torch.ops.brgemm.quantize_to_blocked, (self.env[old.args[0]], scale, zp))
        else:
            out = self.graph.call_function(quantize_blocked, (new, scale, zp))
        self.u8[out] = (scale, zp)
        return out

    def as_float(self, new):
        """new as its consumers in the float graph read it (a uint8 value dequantized, once)."""
        if new not in self.u8:
            return new
        if new not in self.floats:
            self.floats[new] = self.graph.call_function(dequantize, (new, *self.u8[new]))
        return self.floats[new]

    def run(self):
        gm = self.gm
        for n in gm.graph.nodes:
            if _is_fused(gm, n):
                self.env[n] = self.stage(n)
                continue
            m = _submodule(gm, n.target) if n.op == "call_module" else None
            args = [self.env[a] for a in n.all_input_nodes]
            if isinstance(m, _BlockedMaxPool2d) and args[0] in self.u8:
                self.modules[n.target] = _BlockedMaxPool2d(m.kernel, m.stride, m.padding)  # its own slot
                out = self.graph.call_module(n.target, (args[0],))
                self.u8[out] = self.u8[args[0]]
                self.env[n] = out
                continue
            if (n.op == "call_function" and "global_avg_pool_blocked" in str(n.target) and args[0] in self.u8):
                # The float graph reshapes the (N, C) mean to (N, C, 1, 1) next: keep that shape.
                self.env[n] = self.graph.call_function(torch.ops.brgemm.global_avg_pool_blocked_u8,
                                                       (args[0], n.args[1], *self.u8[args[0]]))
                continue
            if n.op == "call_module":
                self.modules[n.target] = m
            self.env[n] = self.graph.node_copy(n, lambda a: self.as_float(self.env[a]))
        return self.graph

    def stage(self, n):
        fused = self.gm.get_submodule(n.target)
        if fused.bn is not None:
            w, b = fused._folded_weights()
        else:
            w, b = fused.weight, fused.bias
        x = self.as_u8(n.args[0])
        args = (x,)
        res_qp = None
        if len(n.args) > 1:
            args += (self.as_u8(n.args[1]),)
            res_qp = self.qparams[self.source(n.args[1])]
        q = QuantizedConv2d(fused, w, b, self.qparams[self.source(n.args[0])], self.qparams[n], res_qp)
        self.modules[n.target] = q
        out = self.graph.call_module(n.target, args, {k: v for k, v in n.kwargs.items() if k != "slot"})
        self.u8[out] = _u8_params(self.qparams[n])
        self.report.add(n.target, "QuantizedConv2d (uint8 × int8" + (", uint8 residual" if res_qp else "") +
                        (f", {fused.activation}" if fused.activation != "none" else "") + ")")
        return out


def _calibrate(model, graphs, batches, method):
    """Observers for every watched node of each optimized graph, fed by the batches."""
    make = (lambda: MinMaxObserver()) if method == "minmax" else (lambda: HistogramObserver())
    plans = {}
    for gm in graphs:
        nodes, source = _watched(gm)
        plans[gm] = ({n: make() for n in nodes}, source)
    originals = {}
    for gm in graphs:  # route each graph's calls through an observing interpreter
        observers = plans[gm][0]
        originals[gm] = gm.__dict__.get("forward")
        gm.forward = (lambda g, o: lambda *a: _Observe(g, o).run(*a))(gm, observers)
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
    finally:
        for gm in graphs:
            if originals[gm] is None:
                del gm.forward
            else:
                gm.forward = originals[gm]
    out = {}
    for gm, (observers, source) in plans.items():
        qps = {}
        for n, o in observers.items():
            if o.lo is None if isinstance(o, HistogramObserver) else o.min is None:
                raise RuntimeError(f"the calibration batches never reached {n.name}")
            qps[n] = o.qparams() if method == "minmax" else o.qparams(method)
        out[gm] = (qps, source)
    return out


def _optimized_graphs(model):
    """The GraphModules optimize made (the model itself, or its children when it did not trace)."""
    if isinstance(model, fx.GraphModule):
        return [model]
    return [m for m in model.modules() if isinstance(m, fx.GraphModule)]


def quantize(model, calibration_batches, *, method="l2"):
    """An int8 version of ``model`` for inference, and calibrated on ``calibration_batches``
    (an iterable of inputs the model takes, float32 (N, C, H, W)).

    The model is first optimized (:func:`brgemm.torch.optimize`, in eval mode); every fused
    convolution then runs uint8 activations × int8 weights (one symmetric scale per output
    channel of the BatchNorm-folded weights), with bias, residual add, ReLU and requantization
    to uint8 in the product's epilogue, and the activations stay uint8 in the blocked layout
    from the first convolution to the global average pooling. The activation ranges come from
    ``method``: "l2" (the range with the least expected squared error over a histogram of the
    calibration data, the default), "percentile" or "minmax". Other modules (the Linear head,
    whatever optimize left alone) stay float: the values they read are dequantized first.

    Returns the new module (eval mode, inference only: no autograd through it; the float model
    is left as it was). ``result.brgemm_report`` says what each stage became."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    batches = list(calibration_batches)
    if not batches:
        raise ValueError("calibration_batches is empty: quantize needs data to choose the activation ranges")
    for i, x in enumerate(batches):
        if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
            raise TypeError(f"calibration_batches[{i}] must be a float32 torch.Tensor, got "
                            f"{type(x).__name__ if not isinstance(x, torch.Tensor) else x.dtype}")
    was_training = model.training
    model.eval()
    try:
        fast = optimize(model)
    finally:
        model.train(was_training)
    fast.eval()
    graphs = _optimized_graphs(fast)
    calibrated = _calibrate(fast, graphs, batches, method)
    report = OptimizationReport()
    for name, became, why in fast.brgemm_report.entries:
        report.add(name, became, why)
    replaced = {}
    for gm in graphs:
        qps, source = calibrated[gm]
        r = _Int8Rebuild(gm, qps, source, report)
        graph = r.run()
        _plan_activations(graph, r.modules, (FusedConv2d, QuantizedConv2d, _BlockedMaxPool2d))
        activations = Activations()
        for m in r.modules.values():
            if isinstance(m, (QuantizedConv2d, _BlockedMaxPool2d)):
                m.__dict__["_activations"] = activations
        new = fx.GraphModule(r.modules, graph, class_name=type(gm).__name__)
        new.graph.eliminate_dead_code()   # the float layout conversions the stages replaced
        new.recompile()
        new.eval()
        replaced[gm] = new
    if fast in replaced:
        out = replaced[fast]
    else:
        out = fast
        for parent in list(out.modules()):
            for name, child in list(parent._modules.items()):
                if child in replaced:
                    parent._modules[name] = replaced[child]
    out.brgemm_report = report
    return out
