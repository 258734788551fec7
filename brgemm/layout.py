"""Blocked layouts of the convolution layers, and conversions to and from PyTorch's.

Activations ``[N][C/bc][H][W][bc]``: the innermost axis is a block of ``bc`` channels, so one
pixel's block is a vector the kernel loads whole. Weights ``[K/bk][C/bc][R][S][bc][bk]``, in the
kernel's B layout: bfloat16 pairs input channels (``[..][⌈bc/2⌉][bk][2]``, VNNI-2), int8 groups
four (``[..][⌈bc/4⌉][bk][4]``, VNNI-4), a block's last pair or quad zero-padded. Channel counts
that are not a multiple of the block are padded with zeros.

The block for a channel count is :func:`block_size`: below 16 the count itself (C = 3: an RGB
image blocked is NHWC, nothing padded), else 64, 32 or 16, whichever pads least. A blocked array carries its block as its last axis (or,
for weights, the last two), and a layer checks it against its own.
"""

import operator

import ml_dtypes
import numpy as np

from . import _core

LAYOUTS = ("NCHW", "KCRS")
_VNNI = {np.dtype(np.float32): 1, np.dtype(ml_dtypes.bfloat16): 2, np.dtype(np.int8): 4}


def block_size(channels):
    """The channel block the convolution layers use for ``channels``."""
    try:
        channels = operator.index(channels)  # int() would take 2.5, "8" and fail on inf with OverflowError
    except TypeError:
        raise TypeError(f"channels must be an integer, got {type(channels).__name__}") from None
    if not 1 <= channels < 1 << 62:
        raise ValueError(f"channels must be in 1..2**62, got {channels}")
    return _core.conv_block(channels)


def _layout_arg(layout):
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be 'NCHW' or 'KCRS', got {layout!r}")
    return layout


def to_blocked(x, block=None, layout="NCHW", dtype=None):
    """x in PyTorch's layout → blocked.

    ``layout="NCHW"``: activations (N, C, H, W) → (N, ⌈C/bc⌉, H, W, bc); ``block`` is bc (default
    :func:`block_size` (C)); ``dtype`` float32 or bfloat16 (default x's), or uint8 for a
    uint8 x (int8 inference: :class:`brgemm.nn.QuantizedConv2d`). An (N, C, H, W) view of NHWC
    memory (``np.transpose(nhwc, (0, 3, 1, 2))``) is read as it is, without an NCHW copy.
    ``layout="KCRS"``: weights (K, C, R, S) → (⌈K/bk⌉, ⌈C/bc⌉, R, S, bc/v, bk, v) with v = 1 for
    float32 (then the last axis is dropped), 2 for bfloat16, 4 for int8; ``block`` is (bc, bk)
    (default the block sizes of C and K); ``dtype`` float32, bfloat16 or int8 (an int8 x must
    be int8 already: quantizing is not a layout's business).
    """
    _layout_arg(layout)
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a numpy array, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"x must be 4-D ({'N, C, H, W' if layout == 'NCHW' else 'K, C, R, S'}), got {x.ndim}-D")
    dtype = np.dtype(x.dtype if dtype is None else dtype)
    if layout == "NCHW":
        bc = block_size(x.shape[1]) if block is None else int(block)
        if bc < 1:
            raise ValueError(f"block must be at least 1, got {block}")
        if dtype == np.uint8:
            if x.dtype != np.uint8:
                raise ValueError(f"uint8 activations must be given as uint8 (quantize them first), got {x.dtype}")
        elif dtype not in (np.dtype(np.float32), np.dtype(ml_dtypes.bfloat16)):
            raise ValueError(f"dtype must be float32, bfloat16 or uint8 for activations, got {dtype}")
        elif x.dtype not in (np.float32, ml_dtypes.bfloat16):
            x = x.astype(np.float32)
        n, c, h, w = x.shape
        xb = np.empty((n, -(-c // bc), h, w, bc), dtype)
        nhwc = x.transpose(0, 2, 3, 1).flags.c_contiguous  # read as it is, not copied to NCHW
        _core.conv_to_blocked(x if nhwc else np.ascontiguousarray(x), xb)
        return xb
    k, c, r, s = x.shape
    bc, bk = (block_size(c), block_size(k)) if block is None else (int(block[0]), int(block[1]))
    if dtype not in _VNNI:
        raise ValueError(f"dtype must be float32, bfloat16 or int8 for weights, got {dtype}")
    v = _VNNI[dtype]
    if bc < 1 or bk < 1:
        raise ValueError(f"block (bc, bk) must be positive, got {(bc, bk)}")
    if dtype == np.int8 and x.dtype != np.int8:
        raise ValueError(f"int8 weights must be given as int8 (quantize them first), got {x.dtype}")
    kb, cb = -(-k // bk), -(-c // bc)
    if bc % v and cb > 1:  # padded rows inside the channels: from_blocked could not tell them apart
        raise ValueError(f"block bc = {bc} must be a multiple of {v} for {dtype} when the {c} channels span "
                         f"several blocks")
    bv = -(-bc // v) * v  # a block's rows padded to whole pairs or quads
    channels = np.zeros((k, cb * bc, r, s), dtype)
    channels[:, :c] = x.astype(dtype)
    padded = np.zeros((kb * bk, cb, bv, r, s), dtype)
    padded[:k, :, :bc] = channels.reshape(k, cb, bc, r, s)
    # (kb, bk, cb, bv/v, v, r, s) → (kb, cb, r, s, bv/v, bk, v)
    out = padded.reshape(kb, bk, cb, bv // v, v, r, s).transpose(0, 2, 5, 6, 3, 1, 4)
    out = np.ascontiguousarray(out)
    return out[..., 0] if v == 1 else out


def from_blocked(xb, channels, layout="NCHW"):
    """The inverse of :func:`to_blocked`: ``channels`` is C for activations (N, C, H, W) and
    (K, C) for weights (K, C, R, S); the padding is dropped. Keeps the dtype."""
    _layout_arg(layout)
    if not isinstance(xb, np.ndarray):
        raise TypeError(f"xb must be a numpy array, got {type(xb).__name__}")
    if layout == "NCHW":
        if xb.ndim != 5:
            raise ValueError(f"xb must be 5-D (N, C/bc, H, W, bc), got {xb.ndim}-D")
        n, cb, h, w, bc = xb.shape
        c = int(channels)
        if not (cb - 1) * bc < c <= cb * bc:
            raise ValueError(f"channels = {c} does not fit {cb} blocks of {bc}")
        out = np.empty((n, c, h, w), xb.dtype)
        _core.conv_from_blocked(np.ascontiguousarray(xb), out)
        return out
    k, c = (int(v) for v in channels)
    v = _VNNI.get(np.dtype(xb.dtype))
    if v is None:
        raise ValueError(f"xb must be float32, bfloat16 or int8, got {xb.dtype}")
    if v == 1:
        xb = xb[..., None]
    if xb.ndim != 7:
        raise ValueError(f"xb must be blocked weights (K/bk, C/bc, R, S, bc/v, bk, v), got shape {xb.shape}")
    kb, cb, r, s, bcv, bk, _ = xb.shape
    if not ((kb - 1) * bk < k <= kb * bk and (cb - 1) * bcv * v < c <= cb * bcv * v):
        raise ValueError(f"channels = {(k, c)} does not fit blocks of shape {xb.shape}")
    w = xb.transpose(0, 5, 1, 4, 6, 2, 3).reshape(kb * bk, cb * bcv * v, r, s)
    return np.ascontiguousarray(w[:k, :c])
