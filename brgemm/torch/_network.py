"""optimize: a model seen as a graph (torch.fx) and rebuilt from fused, blocked stages.

Each convolution takes what follows it (BatchNorm2d, a residual add, a ReLU) into one
:class:`~brgemm.torch._fused.FusedConv2d`; the blocked layout flows from the first convolution
through ReLUs, adds, max-pooling and global average pooling; Linear layers become brgemm's.
Everything else runs as it did, on the plain layout (one conversion in front of it). Models
that do not trace are optimized child by child.
"""

import copy
import operator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from . import _layout  # noqa: F401  (registers brgemm::to_blocked / from_blocked)
from ._bridge import _algorithm_arg
from ._fused import Activations, FusedConv2d
from ._pool import max_pool2d_blocked_into
from ._modules import Linear, _compute_dtype_arg


class OptimizationReport:
    """What :func:`optimize` made of each module: ``entries`` holds (name, what it became,
    why), in the model's order."""

    def __init__(self):
        self.entries = []

    def add(self, name, became, why=""):
        entry = (name or "(model)", became, why)
        if entry not in self.entries:  # a module called twice (a shared ReLU) is listed once
            self.entries.append(entry)

    def became(self, name):
        """What the module called ``name`` became (KeyError if the report does not list it)."""
        for n, b, _ in self.entries:
            if n == name:
                return b
        raise KeyError(name)

    def __str__(self):
        width = max((len(n) for n, _, _ in self.entries), default=0)
        return "\n".join(f"{n:<{width}}  {b}" + (f"  ({w})" if w else "") for n, b, w in self.entries)

    __repr__ = __str__


_RELU_FUNCTIONS = (F.relu, torch.relu, torch.relu_)
_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)


def _module(gm, node, cls):
    """The module a call_module node calls when it is exactly of class cls, else None."""
    if node.op != "call_module":
        return None
    m = gm.get_submodule(node.target)
    return m if type(m) is cls else None


def _is_relu(gm, node):
    if node.op == "call_module":
        return _module(gm, node, nn.ReLU) is not None
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS and len(node.args) == 1
    return node.op == "call_method" and node.target in ("relu", "relu_") and len(node.args) == 1


def _add_operands(node):
    """(a, b) when node adds two tensors (no alpha), else None."""
    plain_add = (node.op == "call_function" and node.target in _ADD_FUNCTIONS) or (
        node.op == "call_method" and node.target in ("add", "add_"))
    if not plain_add or len(node.args) != 2 or node.kwargs:
        return None
    a, b = node.args
    return (a, b) if isinstance(a, fx.Node) and isinstance(b, fx.Node) else None


def _only_user(node):
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _is_relu6(gm, node):
    if node.op == "call_module":
        return _module(gm, node, nn.ReLU6) is not None
    return node.op == "call_function" and node.target is F.relu6 and len(node.args) == 1


def _conv_reason(conv):
    """Why a Conv2d stays PyTorch's, or None."""
    if conv.padding_mode != "zeros":
        return f"padding_mode={conv.padding_mode!r}"
    return None


def _pool_args(m):
    """(kernel, stride, padding) of a MaxPool2d the blocked pooling computes, or a reason."""
    if m.ceil_mode or m.return_indices or m.dilation not in (1, (1, 1)):
        return "ceil_mode, return_indices or dilation"
    pair = lambda v: [v, v] if isinstance(v, int) else list(v)  # noqa: E731
    return pair(m.kernel_size), pair(m.stride if m.stride is not None else m.kernel_size), pair(m.padding)


def _compute_dtype(dtype):
    """The products' dtype: the one optimize was given, else bfloat16 under CPU autocast to it."""
    if dtype is None and torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16:
        return torch.bfloat16
    return dtype


def enter_blocked(x, dtype):
    """x (N, C, H, W) in the blocked layout of the products' dtype."""
    dt = _compute_dtype(dtype)
    if dt is None or x.dtype == dt:
        return torch.ops.brgemm.to_blocked(x)
    if x.dtype in (torch.float32, torch.bfloat16):   # converted in the blocking pass itself
        return torch.ops.brgemm.to_blocked(x, dt)
    return torch.ops.brgemm.to_blocked(x.to(dt))


def leave_blocked(x, channels, dtype):
    """A blocked x back to (N, channels, H, W): float32 when optimize was given a dtype (the
    model's own dtype), else as computed (bfloat16 under autocast, as PyTorch's layers return)."""
    y = torch.ops.brgemm.from_blocked(x, channels)
    return y.float() if dtype is not None else y


class _BlockedMaxPool2d(nn.Module):
    def __init__(self, kernel, stride, padding):
        super().__init__()
        self.kernel, self.stride, self.padding = kernel, stride, padding
        self.__dict__["_activations"] = None   # set by optimize: the model's buffer pool

    def forward(self, x, slot=None):
        pool = self.__dict__.get("_activations")
        if pool is not None and slot is not None and not torch.is_grad_enabled() and not torch.compiler.is_compiling():
            # Inference: into the plan's buffer (a fresh output would fault its pages in every call).
            return max_pool2d_blocked_into(x, self.kernel, self.stride, self.padding, pool.buffer(slot))
        return torch.ops.brgemm.max_pool2d_blocked(x, self.kernel, self.stride, self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel}, stride={self.stride}, padding={self.padding}"


def _global_pool(m):
    size = m.output_size
    return (size if isinstance(size, tuple) else (size, size)) == (1, 1)


class _Rebuild:
    """One pass over a traced graph, emitting the optimized graph."""

    def __init__(self, gm, dtype, report, prefix, algorithm="direct"):
        self.gm, self.dtype, self.report, self.prefix, self.algorithm = gm, dtype, report, prefix, algorithm
        self.graph = fx.Graph()
        self.env = {}          # old node → new node
        self.channels = {}     # new node → channel count, for blocked values
        self.converted = {}    # (new node, "plain" | "blocked") → the converted node
        self.modules = {}      # target → module of the new GraphModule
        self.kept = {}         # path → module kept in the tree only for its state (BatchNorms)
        self.chains = {}       # old tail node → (conv node, bn node, residual node, relu)
        self.absorbed = set()  # old nodes a chain computes

    def name(self, target):
        return f"{self.prefix}.{target}" if self.prefix else target

    # --- values in either layout ---------------------------------------------------------
    def plain(self, v):
        if not isinstance(v, fx.Node) or v not in self.channels:
            return v
        key = (v, "plain")
        if key not in self.converted:
            self.converted[key] = self.graph.call_function(leave_blocked, (v, self.channels[v], self.dtype))
        return self.converted[key]

    def blocked(self, v, channels):
        """v blocked; a plain v is converted (it has `channels`, as its consumer expects)."""
        if v in self.channels:
            return v
        key = (v, "blocked")
        if key not in self.converted:
            out = self.converted[key] = self.graph.call_function(enter_blocked, (v, self.dtype))
            self.channels[out] = channels
        return self.converted[key]

    def copy(self, node, layout):
        """node in the new graph with its arguments in `layout` (plain, or blocked as they are)."""
        conv = self.plain if layout == "plain" else (lambda v: v)
        return self.graph.node_copy(node, lambda n: conv(self.env[n]))

    # --- the pass --------------------------------------------------------------------------
    def find_chains(self):
        gm = self.gm
        for node in gm.graph.nodes:
            conv = _module(gm, node, nn.Conv2d)
            if conv is None:
                continue
            why = _conv_reason(conv)
            if why:
                self.report.add(self.name(node.target), "kept (PyTorch)", why)
                continue
            members, bn, residual, act = [node], None, None, "none"
            user = _only_user(node)
            if user is not None and (m := _module(gm, user, nn.BatchNorm2d)) is not None \
                    and m.num_features == conv.out_channels:
                bn = user
                members.append(user)
            user = _only_user(members[-1])
            if user in self.absorbed or user in self.chains:  # another convolution took the add already
                user = None
            if user is not None and (ops := _add_operands(user)) is not None:
                residual = ops[1] if ops[0] is members[-1] else ops[0]
                if residual is not members[-1]:
                    members.append(user)
                    user = _only_user(user)
                else:
                    residual = None
            if user is not None and (_is_relu(gm, user) or _is_relu6(gm, user)):
                act = "relu" if _is_relu(gm, user) else "relu6"
                members.append(user)
            self.chains[members[-1]] = (node, bn, residual, act)
            self.absorbed.update(members[:-1])

    def emit_chain(self, tail):
        conv_node, bn_node, residual, act = self.chains[tail]
        conv = self.gm.get_submodule(conv_node.target)
        bn = None if bn_node is None else self.gm.get_submodule(bn_node.target)
        fused = FusedConv2d(conv, bn, act, self.dtype, self.algorithm)
        self.modules[conv_node.target] = fused
        if bn is not None:
            self.kept[bn_node.target] = bn
        args = (self.blocked(self.env[conv_node.args[0]], conv.in_channels),)
        if residual is not None:
            args += (self.blocked(self.env[residual], conv.out_channels),)
        out = self.graph.call_module(conv_node.target, args)
        self.channels[out] = conv.out_channels
        parts = ["BatchNorm2d " + ("folded" if not bn.training else "fused")] if bn is not None else []
        parts += ["residual add"] if residual is not None else []
        parts += [{"relu": "ReLU", "relu6": "ReLU6"}[act]] if act != "none" else []
        self.report.add(self.name(conv_node.target), "FusedConv2d" + (" + " + ", ".join(parts) if parts else ""))
        if bn_node is not None:
            self.report.add(self.name(bn_node.target), f"in {self.name(conv_node.target)}")
        if act != "none" and tail.op == "call_module":
            self.report.add(self.name(tail.target), "in the epilogue of the convolution before it")
        return out

    def run(self):
        gm = self.gm
        self.find_chains()
        for node in gm.graph.nodes:
            if node in self.chains:
                self.env[node] = self.emit_chain(node)
                continue
            if node in self.absorbed:
                continue
            self.env[node] = self.emit(node)
        return self.graph

    def emit(self, node):
        gm, env = self.gm, self.env
        if node.op == "placeholder":
            return self.graph.node_copy(node)
        if node.op == "output":
            return self.graph.output(fx.node.map_arg(node.args[0], lambda n: self.plain(env[n])))
        args = [env[a] for a in node.all_input_nodes]
        blocked_in = [a for a in args if a in self.channels]
        if blocked_in and (_is_relu(gm, node) or _is_relu6(gm, node)):  # zero stays zero
            out = self.copy(node, "blocked")
            self.channels[out] = self.channels[args[0]]
            return out
        ops = _add_operands(node)
        if ops and all(env[a] in self.channels for a in ops) and len({self.channels[env[a]] for a in ops}) == 1:
            out = self.copy(node, "blocked")   # zero-padded channels stay zero
            self.channels[out] = self.channels[env[ops[0]]]
            return out
        if node.op == "call_module":
            m = gm.get_submodule(node.target)
            if type(m) is nn.MaxPool2d and blocked_in and not isinstance(_pool_args(m), str):
                self.modules[node.target] = _BlockedMaxPool2d(*_pool_args(m))
                out = self.graph.call_module(node.target, (args[0],))
                self.channels[out] = self.channels[args[0]]
                self.report.add(self.name(node.target), "blocked max pooling")
                return out
            if type(m) is nn.AdaptiveAvgPool2d and blocked_in and _global_pool(m):
                c = self.channels[args[0]]
                out = self.graph.call_function(torch.ops.brgemm.global_avg_pool_blocked, (args[0], c))
                if self.dtype is not None:
                    out = self.graph.call_method("float", (out,))
                out = self.graph.call_method("reshape", (out, -1, c, 1, 1))
                self.report.add(self.name(node.target), "blocked global average pooling")
                return out
            if type(m) is nn.Linear:
                self.modules[node.target] = Linear.from_torch(m, self.dtype)
                self.report.add(self.name(node.target), "brgemm.torch.Linear")
                return self.copy(node, "plain")
            self.modules[node.target] = m
            why = "plain layout in front of it" if blocked_in else ""
            self.report.add(self.name(node.target), f"kept ({type(m).__name__})", why)
            return self.copy(node, "plain")
        if node.op == "get_attr":
            self.modules[node.target] = _attr(gm, node.target)
        return self.copy(node, "plain")


def _attr(gm, target):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _plan_activations(graph, modules, stages=(FusedConv2d,)):
    """Gives each fused convolution's call (a module of one of the classes ``stages``) a buffer slot (its ``slot`` keyword), reusing a slot
    once every value that occupied it is dead. A value lives until its last reader, and so do the
    values of the nodes that may alias it (an in-place ReLU or add returns its input): only the
    fused convolutions, the pools and the layout conversion back write new tensors. Returns the
    number of slots."""
    nodes = list(graph.nodes)
    index = {n: i for i, n in enumerate(nodes)}

    def fresh(n):  # n's value is a new tensor, never one of its inputs
        if n.op == "call_module":
            return isinstance(modules.get(n.target), (*stages, _BlockedMaxPool2d))
        return n.op == "call_function" and (n.target in (leave_blocked, enter_blocked) or
                                            "global_avg_pool_blocked" in str(n.target))

    end = {}

    def last_use(n):  # the last reader of n or of anything that may alias it
        if n not in end:
            end[n] = index[n]
            for u in n.users:
                end[n] = max(end[n], index[u] if fresh(u) else last_use(u))
        return end[n]

    free, busy, slots = [], [], 0   # busy: (last use, slot)
    for n in nodes:
        if n.op != "call_module" or not isinstance(modules.get(n.target), stages):
            continue
        here = index[n]
        for entry in [b for b in busy if b[0] < here]:
            busy.remove(entry)
            free.append(entry[1])
        if free:
            slot = free.pop()
        else:
            slot, slots = slots, slots + 1
        n.kwargs = {**n.kwargs, "slot": slot}
        busy.append((last_use(n), slot))
    return slots


def _optimize_traced(gm, dtype, report, prefix, algorithm):
    r = _Rebuild(gm, dtype, report, prefix, algorithm)
    graph = r.run()
    _plan_activations(graph, r.modules, (FusedConv2d, _BlockedMaxPool2d))
    activations = Activations()
    for m in r.modules.values():
        if isinstance(m, (FusedConv2d, _BlockedMaxPool2d)):
            m.__dict__["_activations"] = activations
    out = fx.GraphModule(r.modules, graph, class_name=type(gm).__name__)
    for path, module in r.kept.items():
        out.add_submodule(path, module)
    out.train(gm.training)
    for m in r.modules.values():  # follow the modules they were built from
        if isinstance(m, FusedConv2d):
            m.train(gm.training)
    return out


def _optimize(model, dtype, report, prefix, algorithm):
    try:
        gm = fx.symbolic_trace(model)
    except Exception as e:  # noqa: BLE001  (any tracing failure: optimize the children instead)
        if not len(model._modules):
            report.add(prefix, f"kept ({type(model).__name__})", f"does not trace: {type(e).__name__}: {e}")
            return model
        report.add(prefix, f"children optimized one by one ({type(model).__name__})",
                   f"does not trace: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
        new = copy.copy(model)
        new._modules = dict(model._modules)
        for name, child in model._modules.items():
            if child is not None:
                new._modules[name] = _optimize(child, dtype, report, f"{prefix}.{name}" if prefix else name,
                                               algorithm)
        return new
    return _optimize_traced(gm, dtype, report, prefix, algorithm)


def optimize(model, dtype=None, algorithm="direct"):
    """``model`` rebuilt for brgemm: a new module that shares ``model``'s parameters and buffers
    (optimizers, state_dict keys and ``load_state_dict`` work as on ``model``; use the new module
    in its place). The report of what became of each module is ``result.brgemm_report``.

    Each Conv2d (groups = 1, zero padding) becomes a fused convolution with the BatchNorm2d,
    residual add and ReLU that follow it: in ``eval()`` the BatchNorm is folded into the
    weights (refolded when a parameter or running statistic changes), the add and ReLU run in
    the product's epilogue; in ``train()`` the BatchNorm uses the batch's statistics and updates
    the running ones as PyTorch does. Activations stay blocked from the first convolution to the
    global average pooling (max-pooling, ReLUs and adds included); Linear layers become
    :class:`brgemm.torch.Linear`. Other modules run unchanged on the plain layout. ``dtype``:
    None (the input's, float32) or "bfloat16" (bf16 products with float32 accumulation; the
    result comes back float32). Inputs are (N, C, H, W) float32, any memory format.
    ``algorithm``: the float32 convolutions' (brgemm.nn.Conv2d's): "direct" (the default: the
    rounding of a direct sum), or "auto" (Winograd F(2×2, 3×3) or F(4×4, 3×3) for the stride-1
    3×3 convolutions where the layer's cost model says it pays, per call shape; its error is
    larger, docs/api.md), or "winograd" (wherever it applies). Each fused convolution's
    ``algorithm_used`` says what its last inference call ran."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    dtype = _compute_dtype_arg(dtype)
    _algorithm_arg(algorithm)
    report = OptimizationReport()
    out = _optimize(model, dtype, report, "", algorithm)
    out.brgemm_report = report
    return out
