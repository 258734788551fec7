"""Recurrent layers on the BRGEMM: :class:`LSTM` and :class:`GRU`, numpy in and out, and
:func:`bucket_by_length` for batching sequences of similar lengths.

Parameters follow PyTorch's names, shapes and gate order (LSTM: i, f, g, o; GRU: r, z, n with
the n gate's recurrent bias inside the reset product), so weights copied from a PyTorch module
give the same outputs. They are float32 numpy arrays the layer owns (``weight_ih_l0``,
``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``, ``..._reverse`` for the backward direction):
write them in place or assign new ones, and the next forward packs them again. Gradients
accumulate into ``<parameter>_grad`` until :meth:`zero_grad`.

Each layer and direction is one C++ driver (layers/rnn.cpp): the input projection of every time
step is one large product; each step's recurrent product is one BRGEMM call per (row block,
hidden block) with the gate math fused on its output tile; backward through time runs the
same way from the last step, then the weight gradients are three large products.
"""

import math

import ml_dtypes
import numpy as np

from .. import _core
from .._args import dtype_arg, positive_int
from .._runners.rnn import RNNRunner
from ._parameters import OwnedArrays
from ._pruning import amount_arg, block_arg, magnitude_mask

_BF16 = np.dtype(ml_dtypes.bfloat16)
_F32 = np.dtype(np.float32)
ACTIVATIONS = ("exact", "ktanh")


class _RNN:
    _cell = None
    _gates = None
    training = True

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, bidirectional=False, activation="exact",
                 dtype="float32", seed=None):
        self.input_size = positive_int(input_size, "input_size")
        self.hidden_size = positive_int(hidden_size, "hidden_size")
        self.num_layers = positive_int(num_layers, "num_layers")
        self.bias = bool(bias)
        self.bidirectional = bool(bidirectional)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be 'exact' or 'ktanh', got {activation!r}")
        self.activation = activation
        self.dtype = dtype_arg(dtype)
        self._dirs = 2 if self.bidirectional else 1
        h, g = self.hidden_size, self._gates * self.hidden_size
        bound = 1.0 / math.sqrt(h)
        rng = np.random.default_rng(seed)
        self._names = []   # (layer, direction) → the four parameter names
        self._drivers = []
        params = {}
        for k in range(self.num_layers):
            layer_in = self.input_size if k == 0 else h * self._dirs
            for d in range(self._dirs):
                sfx = f"_l{k}" + ("_reverse" if d else "")
                names = [f"weight_ih{sfx}", f"weight_hh{sfx}"] + ([f"bias_ih{sfx}", f"bias_hh{sfx}"] if bias else [])
                shapes = [(g, layer_in), (g, h), (g,), (g,)]
                for name, shape in zip(names, shapes):  # PyTorch's init: U(−1/√H, 1/√H) for all
                    params[name] = rng.uniform(-bound, bound, shape).astype(np.float32)
                self._names.append(names)
                self._drivers.append(RNNRunner(self._cell, self.dtype, layer_in, h, d, activation == "ktanh"))
        owned = OwnedArrays()
        for name, v in params.items():
            owned.set(name, v)
        object.__setattr__(self, "_owned", owned)
        object.__setattr__(self, "_names_all", list(params))
        object.__setattr__(self, "_grads", {n: np.zeros_like(v) for n, v in params.items()})
        self._grad_zero = False
        self._saved = None

    # --- parameters as attributes -------------------------------------------------------

    def __getattr__(self, name):
        names = self.__dict__.get("_names_all", ())
        if name in names:
            return self._owned.get(name)
        if name.endswith("_grad") and name[:-5] in names:
            if self._grad_zero:
                for v in self._grads.values():
                    v.fill(0)
                self._grad_zero = False
            return self._grads[name[:-5]]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __setattr__(self, name, value):
        if name in self.__dict__.get("_names_all", ()):
            value, shape = np.asarray(value), self._owned.own(name).shape
            if value.shape != shape:
                raise ValueError(f"{name} must have shape {shape}, got {value.shape}")
            if not np.issubdtype(value.dtype, np.floating) and value.dtype != _BF16:
                raise TypeError(f"{name} must be a floating-point array, got {value.dtype}")
            self._owned.set(name, np.array(value, dtype=np.float32, order="C"))
            return
        object.__setattr__(self, name, value)

    def parameters(self):
        """{name: array} in PyTorch's order (a state_dict of numpy arrays)."""
        return {name: self._owned.get(name) for name in self._names_all}

    def zero_grad(self):
        """Sets the gradients to zero (lazily: the next backward writes instead of adding)."""
        self._grad_zero = True

    def apply_sgd(self, lr):
        """One SGD step on every parameter, p −= lr·p_grad (the next forward repacks)."""
        lr = float(lr)
        if not math.isfinite(lr):
            raise ValueError(f"lr must be finite, got {lr}")
        if self._grad_zero:
            return
        masks = self.__dict__.get("_masks") or {}
        for name in self._names_all:
            p = self._owned.own(name)
            p -= np.float32(lr) * self._grads[name]
            if name in masks:   # pruned weights stay zero
                np.multiply(p, masks[name], out=p)
            self._owned.set(name, p)

    # --- pruning (brgemm.nn._pruning) ---------------------------------------------------

    def prune(self, amount, block=None):
        """Zeroes the fraction ``amount`` of every weight matrix (weight_ih_*, weight_hh_*) by
        magnitude and keeps them zero through training (their gradients are zero, as for
        PyTorch's weight·mask); returns {name: mask} (False where pruned). ``block``: None for
        64 × 64 blocks of the fused gate matrices (the BRGEMM's blocks, edge blocks partial);
        "gates" for the blocks the recurrent products skip, 16 hidden units with all their gates
        × 64 inputs (edge blocks partial); else as :meth:`brgemm.nn.Linear.prune`. Called again
        with a larger amount, it prunes more. The weight gradients' products skip the (gate, 16
        units, 64 inputs) blocks the mask prunes whole (see :attr:`packing`); the forward and
        backward data skip a block only when all its gates are zero, which "gates" gives."""
        amount = amount_arg(amount)
        if isinstance(block, str) and block != "gates":
            raise ValueError(f"block must be None, 'gates', an int or a pair of ints, got {block!r}")
        masks = dict(self.__dict__.get("_masks") or {})
        g, h = self._gates, self.hidden_size
        for name in self._names_all:
            if not name.startswith("weight_"):
                continue
            w = self._owned.own(name)
            if block == "gates":   # rows unit-major, gates inside: a block is 16·G consecutive rows
                cols = w.shape[1]
                unit_major = lambda a: a.reshape(g, h, cols).transpose(1, 0, 2).reshape(h * g, cols)  # noqa: E731
                prev = masks.get(name)
                keep = magnitude_mask(unit_major(w), amount, (16 * g, 64), None if prev is None else unit_major(prev))
                keep = np.ascontiguousarray(keep.reshape(h, g, cols).transpose(1, 0, 2).reshape(g * h, cols))
            else:
                default = (_core.fc_block(w.shape[0]), _core.fc_block(w.shape[1]))
                keep = np.ascontiguousarray(magnitude_mask(w, amount, block_arg(block, w.shape, default),
                                                           masks.get(name)))
            masks[name] = keep
            self._owned.set(name, np.where(keep, w, np.float32(0)))
        object.__setattr__(self, "_masks", masks)
        for drv, names in zip(self._drivers, self._names):   # the weight gradients: zero where pruned
            drv.rnn.set_mask(masks[names[0]].view(np.uint8), masks[names[1]].view(np.uint8))
        return {n: m.copy() for n, m in masks.items()}

    @property
    def packing(self):
        """How the forward products read W_hh and W_ih: "auto" (the default: per 16-unit hidden
        block only the row blocks (64, 32 or 16 inputs) of its weights that hold a nonzero, when
        at most 90 % of them do), "dense" or "sparse" (forced). Backward data reads the same kept
        blocks; after :meth:`prune`, the weight gradients are computed on the blocks the masks
        keep (by the same rule). Block-sparse products sum the kept terms in the dense order:
        bit-identical results and gradients for finite inputs. The input product and ∂x are
        block-sparse only when input_size is a multiple of 16."""
        return self._drivers[0].rnn.packing

    @packing.setter
    def packing(self, value):
        if not isinstance(value, str):
            raise TypeError(f"packing must be a string, got {type(value).__name__}")
        for d in self._drivers:
            d.rnn.packing = value

    @property
    def block_sparse(self):
        """Per layer and direction (PyTorch's order), whether its last packing runs the recurrent
        product block-sparse (known after a forward)."""
        return [d.rnn.block_sparse for d in self._drivers]

    @property
    def mask(self):
        """{name: mask} of the pruned weight matrices, or None if never pruned."""
        masks = self.__dict__.get("_masks")
        return None if not masks else {n: m.copy() for n, m in masks.items()}

    @property
    def sparsity(self):
        """The fraction of the weight matrices' entries the masks zero (0.0 before any prune)."""
        masks = self.__dict__.get("_masks")
        if not masks:
            return 0.0
        return 1.0 - sum(np.count_nonzero(m) for m in masks.values()) / sum(m.size for m in masks.values())

    def train(self, mode=True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    # --- forward and backward -----------------------------------------------------------

    def _state_arg(self, state, n):
        """(h0, c0) as float32 (L·D, N, H) arrays or None."""
        want = (self.num_layers * self._dirs, n, self.hidden_size)
        lstm = self._cell == "lstm"
        if state is None:
            return None, None
        if lstm:
            if not isinstance(state, (tuple, list)) or len(state) != 2:
                raise ValueError("state must be (h0, c0) for an LSTM")
            h0, c0 = state
        else:
            h0, c0 = state, None
        out = []
        for name, v in (("h0", h0), ("c0", c0)):
            if v is None:
                out.append(None)
                continue
            v = np.asarray(v)
            if v.shape != want:
                raise ValueError(f"{name} must have shape {want} (layers·directions, N, hidden_size), got {v.shape}")
            out.append(np.ascontiguousarray(v, dtype=np.float32))
        return tuple(out)

    def _lengths_arg(self, lengths, t, n):
        if lengths is None:
            return None
        ln = np.asarray(lengths)
        if ln.shape != (n,) or not np.issubdtype(ln.dtype, np.integer):
            raise ValueError(f"lengths must be {n} integers (one per sequence), got {ln!r}")
        if ln.min() < 1 or ln.max() > t:
            raise ValueError(f"lengths must be in [1, T = {t}], got {ln.min()}..{ln.max()}")
        if np.any(np.diff(ln) > 0):
            raise ValueError("lengths must be sorted in decreasing order (bucket_by_length gives such batches)")
        return np.ascontiguousarray(ln, dtype=np.int64)

    def forward(self, x, state=None, lengths=None):
        """x (T, N, input_size) float32 or bfloat16 → (y, state_T): y (T, N, D·H) in the layer's
        dtype (D = 2 when bidirectional), state_T = (h_T, c_T) for an LSTM, h_T for a GRU, each
        (layers·D, N, H) float32. ``state``: the initial state in that form (None: zeros).
        ``lengths``: each sequence's length (decreasing); outputs past a sequence's end are
        zero and its final state is taken at its own end."""
        if not isinstance(x, np.ndarray):
            raise TypeError(f"x must be a numpy array, got {type(x).__name__}")
        if x.dtype not in (_F32, _BF16):
            raise TypeError(f"x must have dtype float32 or bfloat16, got {x.dtype}")
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"x must be (T, N, {self.input_size}), got shape {x.shape}")
        t, n, _ = x.shape
        if t < 1 or n < 1:
            raise ValueError(f"x has a zero-size dimension (shape {x.shape})")
        h0, c0 = self._state_arg(state, n)
        ln = self._lengths_arg(lengths, t, n)
        act = _BF16 if self.dtype == "bfloat16" else _F32
        lstm = self._cell == "lstm"
        hT = np.empty((self.num_layers * self._dirs, n, self.hidden_size), np.float32)
        own, token = self._owned.own, self._owned.token()
        cT = np.empty_like(hT) if lstm else None
        inputs, inp = [], np.ascontiguousarray(x, dtype=act)
        for k in range(self.num_layers):
            # bf16: the gate math writes y in bf16 itself (no conversion pass)
            y = (np.zeros if ln is not None else np.empty)((t, n, self._dirs * self.hidden_size), act)
            for d in range(self._dirs):
                idx = k * self._dirs + d
                drv, names = self._drivers[idx], self._names[idx]
                drv.refresh(*(own(nm) for nm in names[:2]), *((own(nm) for nm in names[2:]) if self.bias else (None, None)),
                            version=token)
                drv.rnn.forward(t, n, inp, ln, None if h0 is None else h0[idx], None if c0 is None else c0[idx],
                                y, d * self.hidden_size, hT[idx], cT[idx] if lstm else None, self.training)
            inputs.append(inp)
            inp = y
        self._saved = (t, n, inputs) if self.training else None
        return inp, ((hT, cT) if lstm else hT)

    __call__ = forward

    def backward(self, grad_y, grad_state=None):
        """From ∂loss/∂y (T, N, D·H) (None: zero) and ∂loss/∂state_T (same form as state_T, or
        None) of the last training forward: returns (∂loss/∂x float32, ∂loss/∂state_0) and
        accumulates every parameter's gradient (backpropagation through time)."""
        if self._saved is None:
            raise RuntimeError("backward needs a forward in training mode first")
        t, n, inputs = self._saved
        want = (t, n, self._dirs * self.hidden_size)
        if grad_y is not None:
            grad_y = np.asarray(grad_y)
            if grad_y.shape != want:
                raise ValueError(f"grad_y must have shape {want}, got {grad_y.shape}")
            grad_y = np.ascontiguousarray(grad_y, dtype=np.float32)
        dhT, dcT = self._state_arg(grad_state, n)
        lstm = self._cell == "lstm"
        dh0 = np.zeros((self.num_layers * self._dirs, n, self.hidden_size), np.float32)
        dc0 = np.zeros_like(dh0) if lstm else None
        accumulate = not self._grad_zero
        if self._grad_zero:
            self._grad_zero = False
        dy = grad_y
        for k in reversed(range(self.num_layers)):
            layer_in = inputs[k].shape[2]
            dx = np.empty((t, n, layer_in), np.float32)
            for d in range(self._dirs):
                idx = k * self._dirs + d
                names = self._names[idx]
                grads = [self._grads[nm] for nm in names] + ([] if self.bias else [None, None])
                self._drivers[idx].rnn.backward(dy, d * self.hidden_size, None if dhT is None else dhT[idx],
                                                None if dcT is None else dcT[idx], dx, d > 0, dh0[idx],
                                                dc0[idx] if lstm else None, *grads, accumulate)
            dy = dx
        return dy, ((dh0, dc0) if lstm else dh0)

    def __repr__(self):
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bias={self.bias}, bidirectional={self.bidirectional}, activation={self.activation!r}, "
                f"dtype={self.dtype!r})")


class LSTM(_RNN):
    """Long short-term memory, as ``torch.nn.LSTM`` (seq-first): per step
    i, f, o = σ(W_i·x + b_i + R_i·h + c_i) …, g = tanh(…), c' = f⊙c + i⊙g, h' = o⊙tanh(c').
    ``activation="ktanh"`` computes tanh and sigmoid with K-TanH (brgemm.nn.functional.ktanh);
    "exact" with a polynomial exp whose tanh and sigmoid are within a few 2⁻²⁴ of the true
    values. ``dtype="bfloat16"``: bf16 x, h and weights in the products, f32 gates, cell state
    and accumulation; the backward runs in f32 on the bf16-rounded weights and activations.

    >>> lstm = LSTM(256, 512, num_layers=2)
    >>> y, (h, c) = lstm(x)                    # x (T, N, 256) → y (T, N, 512)
    >>> dx, (dh0, dc0) = lstm.backward(dy)     # and lstm.weight_ih_l0_grad, …
    """
    _cell, _gates = "lstm", 4


class GRU(_RNN):
    """Gated recurrent unit, as ``torch.nn.GRU``: r = σ(W_r·x + b_ir + R_r·h + b_hr),
    z likewise, n = tanh(W_n·x + b_in + r⊙(R_n·h + b_hn)), h' = (1 − z)⊙n + z⊙h. Arguments,
    state and gradients as :class:`LSTM` (the state is h alone)."""
    _cell, _gates = "gru", 3


def bucket_by_length(lengths, batch_size, *, shuffle=False, seed=None):
    """Batches of sequence indices with similar lengths, to cut the padding of variable-length
    training data (sort by length, cut into batches of ``batch_size``, optionally shuffle the
    batch order). Each batch lists its indices by decreasing length, as the recurrent layers'
    ``lengths`` need.

    Returns (batches, report): report["padding"] is the padded steps of these batches (Σ over
    batches of batch·max length − Σ lengths), report["padding_unbucketed"] that of batches
    taken in the given order, report["saved"] the fraction of that padding avoided."""
    ln = np.asarray(lengths)
    if ln.ndim != 1 or ln.size == 0 or not np.issubdtype(ln.dtype, np.integer):
        raise ValueError("lengths must be a non-empty 1-D sequence of integers")
    if ln.min() < 1:
        raise ValueError(f"lengths must be positive, got {ln.min()}")
    batch_size = positive_int(batch_size, "batch_size")

    def padding(batches):
        return int(sum(len(b) * ln[b].max() - ln[b].sum() for b in batches))

    order = np.argsort(-ln, kind="stable")
    batches = [order[i:i + batch_size] for i in range(0, ln.size, batch_size)]
    if shuffle:
        rng = np.random.default_rng(seed)
        batches = [batches[i] for i in rng.permutation(len(batches))]
    plain = [np.arange(i, min(i + batch_size, ln.size)) for i in range(0, ln.size, batch_size)]
    pad, base = padding(batches), padding(plain)
    return batches, {"padding": pad, "padding_unbucketed": base, "saved": 1.0 - pad / base if base else 0.0}
