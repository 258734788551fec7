"""The drop-in ``torch.nn`` modules on brgemm's operators: Conv2d, Linear, LSTM, GRU, KTanh,
TaylorSoftmax, and the AdaptiveAvgPool2d that takes the blocked layout."""

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .._runners.conv import padding_arg
from ..nn import functional as _fn
from ._dropout import train_dropout
from ._bridge import _BF16, _F32, _algorithm_arg


def _compute_dtype_arg(dtype, dfp16=False):
    """The torch dtype of the products (None: the input's); "dfp16" where ``dfp16`` (Conv2d and
    Linear: brgemm.torch._dfp)."""
    if dtype is None:
        return None
    if dfp16 and dtype == "dfp16":
        return "dfp16"
    names = {"float32": _F32, "bfloat16": _BF16, _F32: _F32, _BF16: _BF16}
    if dtype not in names:
        allowed = "None, 'float32', 'bfloat16' or 'dfp16'" if dfp16 else "None, 'float32' or 'bfloat16'"
        raise ValueError(f"dtype must be {allowed}, got {dtype!r}")
    return names[dtype]


def _dtypes(module, x):
    """(dtype of the products, dtype of the result) for input x: under CPU autocast to bfloat16
    both are bfloat16, as for PyTorch's own layers; else the module's compute_dtype (None: x's),
    and the result comes back in x's dtype."""
    if torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == _BF16:
        return _BF16, _BF16
    return (module.compute_dtype or x.dtype), x.dtype


def _fused_arg(activation):
    if activation not in (None, "none", "relu", "relu6"):
        raise ValueError(f"activation must be None, 'relu' or 'relu6', got {activation!r}")
    return activation or "none"


class _Swap:
    """What the drop-in modules share: from_torch, which builds one on the PyTorch module's own
    parameters (the same Parameter objects, so optimizers and state_dict keys are unchanged)."""

    _torch_class = None

    @staticmethod
    def _unsupported(module):
        return None

    @classmethod
    def from_torch(cls, module, dtype=None):
        """This class's version of ``module`` (a ``torch.nn`` instance of the matching class),
        sharing its parameters. ``dtype``: compute in "bfloat16" whatever the input (None:
        the input's dtype, or bfloat16 under CPU autocast)."""
        if not isinstance(module, cls._torch_class):
            raise TypeError(f"module must be a {cls._torch_class.__module__}.{cls._torch_class.__name__}, "
                            f"got {type(module).__name__}")
        reason = cls._unsupported(module)
        if reason:
            raise ValueError(f"cannot convert {type(module).__name__}: {reason}")
        new = cls.__new__(cls)
        new.__dict__.update(module.__dict__)
        for name in ("_parameters", "_buffers", "_modules"):
            new.__dict__[name] = type(module.__dict__[name])(module.__dict__[name])
        new._init_brgemm(dtype)
        return new

    _dfp16 = False  # whether compute_dtype may be "dfp16"

    def _init_brgemm(self, dtype, activation=None):
        self.compute_dtype = _compute_dtype_arg(dtype, self._dfp16)
        if self.compute_dtype == "dfp16" and getattr(self, "groups", 1) != 1:
            raise ValueError(f"compute_dtype='dfp16' needs groups=1, got groups={self.groups}")
        self.activation = _fused_arg(activation)
        self._dfp = None


def _conv_unsupported(m):
    if m.padding_mode != "zeros":
        return f"padding_mode={m.padding_mode!r} (only 'zeros')"
    return None


class Conv2d(_Swap, nn.Conv2d):
    """``torch.nn.Conv2d`` (same arguments, parameters and state_dict) computed by
    ``torch.ops.brgemm.conv2d``, any groups (depthwise included), zero padding only. Extra keywords:
    ``activation="relu"`` (or "relu6") fuses a ReLU into the epilogue (convert does it for Conv2d → ReLU
    in a Sequential); ``compute_dtype="bfloat16"`` computes in bf16 whatever the input;
    ``algorithm``: "direct" (the default), "auto" or "winograd" (float32; the operator's)."""

    _torch_class = nn.Conv2d
    _unsupported = staticmethod(_conv_unsupported)
    _dfp16 = True

    def __init__(self, *args, activation=None, compute_dtype=None, algorithm="direct", **kwargs):
        super().__init__(*args, **kwargs)
        reason = _conv_unsupported(self)
        if reason:
            raise ValueError(reason)
        self._init_brgemm(compute_dtype, activation)
        self.algorithm = _algorithm_arg(algorithm)

    #: The convolution algorithm (the operator's ``algorithm``); convert(..., algorithm=) sets it.
    algorithm = "direct"

    def _padding4(self):  # "same" puts an odd extra row/column at the bottom/right, as PyTorch does
        return list(padding_arg(self.padding, self.kernel_size, self.dilation))

    def _padding4_tuple(self):
        return tuple(self._padding4())

    #: Return the blocked layout (N, K/bk, OH, OW, bk), which the next brgemm Conv2d takes without
    #: converting; convert(model, blocked=True) sets it inside chains of convolutions.
    blocked_output = False

    def forward(self, input):
        """input: (N, C, H, W), unbatched (C, H, W), or blocked (N, C/bc, H, W, bc)
        (compute_dtype "dfp16": (N, C, H, W) only)."""
        if self.compute_dtype == "dfp16":
            from . import _dfp
            return _dfp.conv2d(self, input)
        dt, out_dt = _dtypes(self, input)
        unbatched = input.dim() == 3
        x = (input.unsqueeze(0) if unbatched else input).to(dt)
        y = torch.ops.brgemm.conv2d(x, self.weight, self.bias, list(self.stride), self._padding4(),
                                    list(self.dilation), self.groups, self.activation,
                                    self.blocked_output and not unbatched, None, self.algorithm)
        return (y.squeeze(0) if unbatched else y).to(out_dt)

    def extra_repr(self):
        return (super().extra_repr() + f", activation={self.activation!r}, compute_dtype={self.compute_dtype}"
                + (", blocked_output=True" if self.blocked_output else "")
                + (f", algorithm={self.algorithm!r}" if self.algorithm != "direct" else ""))


def _global(output_size):
    """Whether an AdaptiveAvgPool2d output size is 1 × 1."""
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    return size == (1, 1)


class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """``torch.nn.AdaptiveAvgPool2d`` that also takes the blocked layout (N, C/bc, H, W, bc) when
    its output is 1 × 1 (global average pooling): the channels' means, (N, C, 1, 1), straight
    from the blocks, so the Conv2d before it can return blocked output (``convert(model,
    blocked=True)`` pairs them) and neither pass converts the layout. Any other input goes to
    PyTorch's pooling. ``channels``: C (the blocks may pad it), set when paired."""

    channels = None

    def forward(self, input):
        if input.dim() != 5:
            return super().forward(input)
        if self.channels is None or not _global(self.output_size):
            raise ValueError("a blocked (5-D) input needs output_size 1 and the channel count (channels): "
                             "convert(model, blocked=True) sets both")
        n = input.shape[0]
        means = input.mean(dim=(2, 3)).reshape(n, -1)
        if means.shape[1] < self.channels:
            raise ValueError(f"the blocked input holds {means.shape[1]} channels, fewer than channels={self.channels}")
        return means[:, :self.channels].reshape(n, self.channels, 1, 1)

    def extra_repr(self):
        return super().extra_repr() + ("" if self.channels is None else f", channels={self.channels}")


class Linear(_Swap, nn.Linear):
    """``torch.nn.Linear`` computed by ``torch.ops.brgemm.linear``; extra keywords as :class:`Conv2d`."""

    _torch_class = nn.Linear
    _dfp16 = True

    def __init__(self, *args, activation=None, compute_dtype=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_brgemm(compute_dtype, activation)

    def forward(self, input):
        if self.compute_dtype == "dfp16":
            from . import _dfp
            return _dfp.linear(self, input)
        dt, out_dt = _dtypes(self, input)
        return torch.ops.brgemm.linear(input.to(dt), self.weight, self.bias, self.activation).to(out_dt)

    def extra_repr(self):
        return super().extra_repr() + f", activation={self.activation!r}, compute_dtype={self.compute_dtype}"


def _rnn_unsupported(m):
    if getattr(m, "proj_size", 0):
        return f"proj_size={m.proj_size} (projections are not supported)"
    return None


class _Recurrent(nn.Module):
    """The recurrent modules hold PyTorch's module's parameters, names and attributes but are not
    instances of torch.nn.LSTM / GRU: torch.compile refuses to trace those (it would graph-break
    around our operators)."""

    _torch_class = _cell = None
    _unsupported = staticmethod(_rnn_unsupported)
    _ATTRIBUTES = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional",
                   "proj_size")

    def __init__(self, *args, activation="exact", compute_dtype=None, **kwargs):
        super().__init__()
        self._adopt(self._torch_class(*args, **kwargs))  # PyTorch's checks and initialisation
        self.compute_dtype = _compute_dtype_arg(compute_dtype)
        self.activation = self._gate_arg(activation)

    def _adopt(self, module):
        reason = _rnn_unsupported(module)
        if reason:
            raise ValueError(f"cannot convert {type(module).__name__}: {reason}")
        for name in self._ATTRIBUTES:
            setattr(self, name, getattr(module, name, 0))
        for name, p in module.named_parameters(recurse=False):
            self.register_parameter(name, p)
        self.train(module.training)

    @classmethod
    def from_torch(cls, module, dtype=None):
        """This class's version of ``module`` (a torch.nn.LSTM or GRU without projections) on its
        own Parameter objects; ``dtype`` as :meth:`Conv2d.from_torch`."""
        if not isinstance(module, cls._torch_class):
            raise TypeError(f"module must be a torch.nn.{cls._torch_class.__name__}, got {type(module).__name__}")
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new._adopt(module)
        new.compute_dtype = _compute_dtype_arg(dtype)
        new.activation = "exact"
        return new

    @staticmethod
    def _gate_arg(activation):
        if activation not in ("exact", "ktanh"):
            raise ValueError(f"activation must be 'exact' or 'ktanh' (the gates' tanh and sigmoid), got {activation!r}")
        return activation

    def forward(self, input, hx=None):
        packed = isinstance(input, PackedSequence)
        lengths = sorted_idx = unsorted_idx = None
        if packed:  # the packed data is sorted by decreasing length already: pad it in that order
            sorted_idx, unsorted_idx = input.sorted_indices, input.unsorted_indices
            x, lengths = pad_packed_sequence(PackedSequence(input.data, input.batch_sizes))
            batched = True
        else:
            batched = input.dim() == 3
            x = input if batched else input.unsqueeze(1)
            if self.batch_first and batched:
                x = x.transpose(0, 1)
        lstm = self._cell == "lstm"
        dirs = 2 if self.bidirectional else 1
        h0 = c0 = None
        if hx is not None:
            h0, c0 = hx if lstm else (hx, None)
            if not batched:
                h0, c0 = h0.unsqueeze(1), None if c0 is None else c0.unsqueeze(1)
            if sorted_idx is not None:
                h0, c0 = h0.index_select(1, sorted_idx), None if c0 is None else c0.index_select(1, sorted_idx)
        dt, out_dt = _dtypes(self, x)
        x = x.to(dt).contiguous()
        train = self.training and torch.is_grad_enabled()
        hs, cs = [], []
        for k in range(self.num_layers):
            outs = []
            for d in range(dirs):
                idx = k * dirs + d
                sfx = f"_l{k}" + ("_reverse" if d else "")
                w = [getattr(self, f"weight_ih{sfx}"), getattr(self, f"weight_hh{sfx}")]
                w += [getattr(self, f"bias_ih{sfx}"), getattr(self, f"bias_hh{sfx}")] if self.bias else [None, None]
                hi = None if h0 is None else h0[idx]
                if lstm:
                    y, h, c, _ = torch.ops.brgemm.lstm(x, hi, None if c0 is None else c0[idx], *w, lengths, bool(d),
                                                       self.activation, train)
                    cs.append(c)
                else:
                    y, h, _ = torch.ops.brgemm.gru(x, hi, *w, lengths, bool(d), self.activation, train)
                outs.append(y)
                hs.append(h)
            x = outs[0] if dirs == 1 else torch.cat(outs, 2)
            if self.dropout and self.training and k + 1 < self.num_layers:
                x = train_dropout(x, self.dropout)
        h_n = torch.stack(hs).to(out_dt)
        c_n = torch.stack(cs).to(out_dt) if lstm else None
        y = x.to(out_dt)
        if packed:
            y = pack_padded_sequence(y, lengths)
            y = PackedSequence(y.data, y.batch_sizes, sorted_idx, unsorted_idx)
            if unsorted_idx is not None:
                h_n = h_n.index_select(1, unsorted_idx)
                c_n = None if c_n is None else c_n.index_select(1, unsorted_idx)
        elif not batched:
            y, h_n, c_n = y.squeeze(1), h_n.squeeze(1), None if c_n is None else c_n.squeeze(1)
        elif self.batch_first:
            y = y.transpose(0, 1)
        return y, ((h_n, c_n) if lstm else h_n)

    def extra_repr(self):
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, bias={self.bias}, "
                f"batch_first={self.batch_first}, dropout={self.dropout}, bidirectional={self.bidirectional}, "
                f"activation={self.activation!r}, compute_dtype={self.compute_dtype}")


class LSTM(_Recurrent):
    """``torch.nn.LSTM``'s arguments, parameters and state_dict (no proj_size), computed by
    ``torch.ops.brgemm.lstm``, one operator per layer and direction. Accepts batch_first,
    unbatched input and PackedSequence. Extra keywords: ``activation="ktanh"`` computes the
    gates' tanh and sigmoid by K-TanH; ``compute_dtype`` as :class:`Conv2d`."""

    _torch_class, _cell = nn.LSTM, "lstm"


class GRU(_Recurrent):
    """``torch.nn.GRU`` computed by ``torch.ops.brgemm.gru``; as :class:`LSTM`."""

    _torch_class, _cell = nn.GRU, "gru"


class KTanh(nn.Module):
    """tanh by K-TanH (``torch.ops.brgemm.ktanh``), in place of ``torch.nn.Tanh``: absolute error
    ≤ 0.0118 for float32 input (brgemm.nn.functional)."""

    _torch_class = nn.Tanh

    def forward(self, input):
        return torch.ops.brgemm.ktanh(input)

    @classmethod
    def from_torch(cls, module, dtype=None):
        if not isinstance(module, nn.Tanh):
            raise TypeError(f"module must be a torch.nn.Tanh, got {type(module).__name__}")
        return cls()


class Dropout(_Swap, nn.Dropout):
    """``torch.nn.Dropout`` with brgemm's mask in training (``torch.ops.brgemm.dropout``, float32:
    a hash of a per-call seed and each value's position, the seed drawn from PyTorch's default
    generator, so ``torch.manual_seed`` reproduces it; the masks differ from PyTorch's own). The
    result is a new tensor even with ``inplace=True``. Other dtypes, and eval mode, as
    ``torch.nn.Dropout``."""

    _torch_class = nn.Dropout

    def _init_brgemm(self, dtype, activation=None):
        pass  # nothing to compute in another dtype

    def forward(self, input):
        if not self.training:
            return input
        return train_dropout(input, self.p)


class TaylorSoftmax(nn.Module):
    """Taylor softmax of even ``order`` along ``dim`` (``torch.ops.brgemm.taylor_softmax``), in
    place of ``torch.nn.Softmax(dim)``; not shift-invariant (brgemm.nn.functional)."""

    _torch_class = nn.Softmax

    def __init__(self, dim=None, order=2):
        super().__init__()
        self.dim, self.order = dim, order
        _fn._order(order)

    def forward(self, input):
        dim = self.dim
        if dim is None:  # torch.nn.Softmax's implicit choice
            dim = 0 if input.dim() in (0, 1, 3) else 1
        return torch.ops.brgemm.taylor_softmax(input, dim, self.order)

    @classmethod
    def from_torch(cls, module, dtype=None, order=2):
        if not isinstance(module, nn.Softmax):
            raise TypeError(f"module must be a torch.nn.Softmax, got {type(module).__name__}")
        return cls(module.dim, order)

    def extra_repr(self):
        return f"dim={self.dim}, order={self.order}"


