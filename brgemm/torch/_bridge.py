"""brgemm.torch's side of the bridge: the checks that turn an operator's tensor arguments into
contiguous CPU tensors of the expected dtype (naming the argument when they are not), their
memory as numpy arrays, and the runners (brgemm/_runners, shared with brgemm.nn) kept per
geometry and weight tensor. The operators hand the runners those numpy views; nothing here
or in them talks to _core's layer objects directly.
"""

import collections
import threading
import weakref

import ml_dtypes
import torch

from .._runners.weights import WeightsKey

_F32, _BF16 = torch.float32, torch.bfloat16
_FLOATS = (_F32, _BF16)
_FUSED = ("none", "relu", "relu6")   # activations an operator's epilogue applies (backward from the output)


def _tensor(t, name, dtypes, ndim=None, channels_last=False):
    """t detached and contiguous, after checking type, device, dtype and rank (naming t). With
    channels_last, a 4-D channels_last tensor keeps its memory (the core reads NHWC as it is);
    one that is contiguous both ways (C = 1, or H = W = 1) is taken as plain NCHW."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise ValueError(f"{name} must be on the CPU, got a tensor on {t.device}")
    if t.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype {' or '.join(str(d) for d in dtypes)}, got {t.dtype}")
    if ndim is not None and t.dim() not in ((ndim,) if isinstance(ndim, int) else ndim):
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    if channels_last and t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(
            memory_format=torch.channels_last):
        return t.detach()
    return t.detach().contiguous()


def _np(t):
    """The memory of a CPU tensor as a numpy array with its strides (bfloat16 via ml_dtypes), no
    copy: contiguous ones, and the channels_last ones _tensor lets through."""
    if t.dtype == _BF16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def _master(t, name, shape):
    """A float32 parameter (bfloat16 ones widened, exactly) of the given shape, or None."""
    if t is None:
        return None
    t = _tensor(t, name, _FLOATS)
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    return t if t.dtype == _F32 else t.float()


def _dtype_name(t):
    return "float32" if t.dtype == _F32 else "bfloat16"


def _activation(activation):
    if activation not in _FUSED:
        raise ValueError(f"activation must be 'none', 'relu' or 'relu6', got {activation!r}")
    return activation



# --- the runners (brgemm/_runners), kept per geometry and weight tensor ---------------------------

def _identity(t):
    """What tells a tensor's contents apart while it is alive: its memory, shape, dtype and
    version counter (bumped by every in-place change; autograd checks saved tensors the same way).
    The runners' scratch arrays remember it for the blocked copies they hold (Scratch.fill)."""
    return (t.data_ptr(), t._version, tuple(t.shape), t.dtype)


# Tensors whose every write goes through PyTorch (so bumps their version counter), besides
# Parameters: the folded weights FusedConv2d keeps. A compiled graph's buffers are written by
# generated code that bumps nothing, and a buffer may be reused for another value.
_persistent = weakref.WeakValueDictionary()


def mark_persistent(t):
    _persistent[id(t)] = t
    return t


def _versioned(t):
    """Whether t's version counter sees every change of its contents."""
    return isinstance(t, torch.nn.Parameter) or _persistent.get(id(t)) is t


def _algorithm_arg(algorithm, tiles=False):
    """A convolution algorithm: "direct", "auto" or "winograd" (brgemm.nn.Conv2d's; with
    ``tiles``, as the operators take it, also "winograd2", "winograd4", "winograd6", which force
    a tile); a ValueError naming it otherwise."""
    names = ("direct", "auto", "winograd") + (("winograd2", "winograd4", "winograd6") if tiles else ())
    if algorithm not in names:
        raise ValueError(f"algorithm must be 'direct', 'auto' or 'winograd', got {algorithm!r}")
    return algorithm


def _module_algorithm(algorithm, conv):
    """What a convolution module (converted or fused) asks of the operator: ``algorithm``
    checked, and "winograd" only where it applies (stride-1 3×3, no dilation, no groups), direct
    elsewhere ("auto" decides per call itself)."""
    applies = (tuple(conv.kernel_size) == (3, 3) and tuple(conv.stride) == (1, 1)
               and tuple(conv.dilation) == (1, 1) and conv.groups == 1)
    return "direct" if _algorithm_arg(algorithm) == "winograd" and not applies else algorithm


def _weights_key(*tensors):
    """What tells a layer's weights apart between calls, so unchanged weights skip the comparison
    with what was packed (the runners' ``version``): the caller's tensor objects (kept as weak
    references: a tensor that died may have a successor at its address) and their version
    counters, when these see every write (Parameters, folded weights); None (compare) for other
    tensors."""
    if all(t is None or _versioned(t) for t in tensors):
        return WeightsKey(*tensors)
    return None


_built, _built_lock = collections.OrderedDict(), threading.Lock()


def _layer(key, make):
    """The runner for ``key`` (its geometry, dtype, activation and the caller's weight tensor's
    address), made by make() the first time; the 256 used last are kept."""
    with _built_lock:
        entry = _built.get(key)
        if entry is None:
            entry = _built[key] = make()
            if len(_built) > 256:
                _built.popitem(last=False)
        else:
            _built.move_to_end(key)
    return entry


def _op(name, schema):
    return torch.library.custom_op(f"brgemm::{name}", mutates_args=(), schema=schema)


