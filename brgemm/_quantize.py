"""Quantization of arrays: parameters, quantize / dequantize, choosing the parameters from data,
and int8 weights (per channel, with outliers). It sits below brgemm.nn, whose quantized layers
use it; quantizing whole models (brgemm.quant.quantize_model) sits above nn. Public names:
:mod:`brgemm.quant`.

The formulas are the usual affine ones: x ≈ scale·(x_q − zero_point), and
x_q = clip(round(x / scale) + zero_point) with round to nearest even, in float32, and clip to
the dtype's range (uint8 0..255, int8 −128..127). The range a scale covers always contains 0
exactly (zero_point is an integer), so zero padding and ReLU zeros quantize without error.

- :class:`QParams`: scale and zero point, per tensor or per channel (``axis``).
- :func:`choose_qparams`: from data, by min–max, a percentile, or the range whose expected
  squared error over the data's histogram is least ("l2", searched in Cython).
- Observers collect statistics over calibration batches: :class:`MinMaxObserver` (per tensor
  or per channel) and :class:`HistogramObserver` (a histogram whose range grows as it sees
  data; its :meth:`~HistogramObserver.qparams` takes the same methods).
"""

import operator
from dataclasses import dataclass

import numpy as np

from ._l2search import l2_search

DTYPES = {"uint8": (0, 255), "int8": (-128, 127)}
METHODS = ("minmax", "l2", "percentile")


@dataclass(frozen=True)
class QParams:
    """scale (float32, () or (channels,)), zero_point (int32, same shape), dtype "uint8" or
    "int8", axis: None (per tensor) or the channel axis of the arrays it quantizes."""
    scale: np.ndarray
    zero_point: np.ndarray
    dtype: str = "uint8"
    axis: int = None

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be 'uint8' or 'int8', got {self.dtype!r}")
        scale = np.asarray(self.scale, np.float32)
        zp = np.asarray(self.zero_point)
        if not np.issubdtype(zp.dtype, np.integer):
            raise TypeError(f"zero_point must be integers, got {zp.dtype}")
        if scale.shape != zp.shape or (self.axis is None) != (scale.ndim == 0) or scale.ndim > 1:
            raise ValueError(f"scale and zero_point must both be scalars (axis None) or 1-D of the channel count, "
                             f"got shapes {scale.shape} and {zp.shape} with axis {self.axis}")
        if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
            raise ValueError("scale must be positive and finite")
        lo, hi = DTYPES[self.dtype]
        if np.any(zp < lo) or np.any(zp > hi):
            raise ValueError(f"zero_point must be in [{lo}, {hi}] for {self.dtype}")
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "zero_point", zp.astype(np.int32))

    def _shaped(self, x, name="x"):
        """scale and zero point broadcast against x."""
        if self.axis is None:
            return self.scale, self.zero_point
        axis = _axis_arg(self.axis, x.ndim, name)
        if x.shape[axis] != self.scale.size:
            raise ValueError(f"x has {x.shape[axis]} channels on axis {self.axis}, these parameters {self.scale.size}")
        shape = [1] * x.ndim
        shape[axis] = -1
        return self.scale.reshape(shape), self.zero_point.reshape(shape)

    def quantize(self, x):
        return quantize(x, self)

    def dequantize(self, q):
        return dequantize(q, self)


def _axis_arg(axis, ndim, name):
    """``axis`` as an index into the ndim axes of the array ``name``: a 0-d array has no
    channel axis (``% ndim`` would divide by zero)."""
    try:
        a = operator.index(axis)
    except TypeError:
        raise TypeError(f"axis must be an integer, got {type(axis).__name__}") from None
    if not -ndim <= a < ndim:
        raise ValueError(f"axis {a} is out of range for {name} with {ndim} dimensions "
                         f"(per-channel parameters need an array with that axis)")
    return a % ndim


def _qparams_arg(qp):
    if not isinstance(qp, QParams):
        raise TypeError(f"qp must be a brgemm.quant.QParams, got {type(qp).__name__}")
    return qp


def quantize(x, qp):
    """clip(round(x / scale) + zero_point) as qp.dtype (NaN → the zero point)."""
    qp = _qparams_arg(qp)
    x = np.asarray(x, np.float32)
    scale, zp = qp._shaped(x)
    lo, hi = DTYPES[qp.dtype]
    q = np.rint(x / scale) + zp.astype(np.float32)
    q = np.where(np.isnan(q), zp, q)
    return np.clip(q, lo, hi).astype(qp.dtype)


def dequantize(q, qp):
    """scale·(q − zero_point) as float32."""
    qp = _qparams_arg(qp)
    q = np.asarray(q)
    scale, zp = qp._shaped(q, "q")
    return ((q.astype(np.int32) - zp).astype(np.float32) * scale).astype(np.float32)


def _from_range(lo, hi, symmetric, signed):
    """QParams arrays for ranges [lo, hi] (numpy arrays), widened to contain 0."""
    lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    qmin, qmax = DTYPES["int8" if signed else "uint8"]
    if symmetric:
        amax = np.maximum(-lo, hi)
        if signed:  # ±127 (−128 unused), zero point 0
            scale = amax / 127.0
            zp = np.zeros_like(amax, dtype=np.int64)
        else:       # unsigned symmetric: the range 0..amax (the data are expected ≥ 0)
            scale = amax / 255.0
            zp = np.zeros_like(amax, dtype=np.int64)
    else:
        scale = (hi - lo) / float(qmax - qmin)
        safe = np.where(scale > 0, scale, 1.0)
        zp = np.clip(np.rint(qmin - lo / safe), qmin, qmax).astype(np.int64)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)  # an all-zero input: any scale
    scale = np.maximum(scale, np.finfo(np.float32).tiny)
    return scale, zp


def _make(scale, zp, signed, axis):
    return QParams(scale if axis is not None else scale.reshape(()), zp if axis is not None else zp.reshape(()),
                   "int8" if signed else "uint8", axis)


def choose_qparams(x, *, symmetric=False, signed=False, axis=None, method="minmax", percentile=99.99, bins=2048):
    """QParams for the values of x.

    ``method``: "minmax" (the full range of x), "percentile" (the range between the
    (100 − p)-th and p-th percentiles, p = ``percentile``), or "l2" (the range whose expected
    squared quantization error over a ``bins``-bin histogram of x is least: clipping the tails
    costs their distance, the range's width costs its rounding noise Δ²/12). ``symmetric``:
    a range ±max|x| (zero point 0); ``signed``: int8, else uint8. ``axis``: per-channel
    parameters along that axis (min–max only, as weights use)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    x = np.asarray(x, np.float32)
    if x.size == 0:
        raise ValueError("x is empty")
    if not np.all(np.isfinite(x)):
        raise ValueError("x holds NaN or infinity")
    if axis is not None:
        if method != "minmax":
            raise ValueError("per-channel parameters (axis) are chosen by 'minmax'")
        axis = _axis_arg(axis, x.ndim, "x")
        flat = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
        scale, zp = _from_range(flat.min(axis=1).astype(np.float64), flat.max(axis=1).astype(np.float64),
                                symmetric, signed)
        return _make(scale, zp, signed, axis)
    if method == "minmax":
        lo, hi = float(x.min()), float(x.max())
    elif method == "percentile":
        if not 50 < percentile <= 100:
            raise ValueError(f"percentile must be in (50, 100], got {percentile}")
        lo, hi = (float(v) for v in np.percentile(x, [100 - percentile, percentile]))
    else:
        obs = HistogramObserver(bins=bins, symmetric=symmetric, signed=signed)
        obs.observe(x)
        return obs.qparams("l2")
    scale, zp = _from_range(np.array(lo), np.array(hi), symmetric, signed)
    return _make(scale, zp, signed, None)


class MinMaxObserver:
    """The running min and max of everything observed (per channel along ``axis`` when given),
    and the QParams of that range."""

    def __init__(self, *, symmetric=False, signed=False, axis=None):
        if axis is not None:
            _axis_arg(axis, 1 << 62, "x")  # its type now; its range against each x observed
        self.symmetric, self.signed, self.axis = bool(symmetric), bool(signed), axis
        self.min = self.max = None

    def observe(self, x):
        x = np.asarray(x, np.float32)
        if x.size == 0 or not np.all(np.isfinite(x)):
            raise ValueError("x must be non-empty and finite")
        if self.axis is None:
            lo, hi = np.float64(x.min()), np.float64(x.max())
        else:
            axis = _axis_arg(self.axis, x.ndim, "x")
            flat = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
            lo, hi = flat.min(axis=1).astype(np.float64), flat.max(axis=1).astype(np.float64)
            if self.min is not None and self.min.shape != lo.shape:
                raise ValueError(f"x has {lo.size} channels on axis {self.axis}, earlier batches {self.min.size}")
        self.min = lo if self.min is None else np.minimum(self.min, lo)
        self.max = hi if self.max is None else np.maximum(self.max, hi)
        return self

    def qparams(self):
        if self.min is None:
            raise RuntimeError("observe some data first")
        scale, zp = _from_range(np.asarray(self.min), np.asarray(self.max), self.symmetric, self.signed)
        return _make(scale, zp, self.signed, None if self.axis is None else self.axis)


class HistogramObserver:
    """A histogram of everything observed, over a range that grows to cover new data (the old
    counts are moved to the new bins by their centres). :meth:`qparams` chooses the range by
    "l2" (least expected squared error, the default), "percentile" or "minmax"."""

    def __init__(self, *, bins=2048, symmetric=False, signed=False):
        try:
            bins = operator.index(bins)  # int() would take 2.5 and fail on inf with OverflowError
        except TypeError:
            raise TypeError(f"bins must be an integer, got {type(bins).__name__}") from None
        if not 2 <= bins <= 1 << 16:
            raise ValueError(f"bins must be in 2..65536 (the l2 search is quadratic in it), got {bins}")
        self.bins, self.symmetric, self.signed = bins, bool(symmetric), bool(signed)
        self.counts = np.zeros(self.bins)
        self.lo = self.hi = None

    def observe(self, x):
        x = np.asarray(x, np.float64).ravel()
        if x.size == 0 or not np.all(np.isfinite(x)):
            raise ValueError("x must be non-empty and finite")
        lo, hi = min(x.min(), 0.0), max(x.max(), 0.0)
        if self.symmetric:
            lo, hi = -max(-lo, hi), max(-lo, hi)
        if hi == lo:
            hi = lo + 1e-12
        if self.lo is None:
            self.lo, self.hi = lo, hi
        elif lo < self.lo or hi > self.hi:  # widen, and move the old counts
            lo, hi = min(lo, self.lo), max(hi, self.hi)
            centres = self.lo + (np.arange(self.bins) + 0.5) * (self.hi - self.lo) / self.bins
            moved = np.histogram(centres, bins=self.bins, range=(lo, hi), weights=self.counts)[0]
            self.counts, self.lo, self.hi = moved, lo, hi
        self.counts += np.histogram(x, bins=self.bins, range=(self.lo, self.hi))[0]
        return self

    @property
    def edges(self):
        if self.lo is None:
            raise RuntimeError("observe some data first")
        return np.linspace(self.lo, self.hi, self.bins + 1)

    def l2_range(self):
        """(lo, hi, expected squared error) of the best range (brgemm/_l2search.pyx)."""
        if self.lo is None:
            raise RuntimeError("observe some data first")
        levels = 255 if self.symmetric and self.signed else 256
        return l2_search(np.ascontiguousarray(self.counts, np.float64), self.edges, levels, self.symmetric)

    def qparams(self, method="l2", percentile=99.99):
        if self.lo is None:
            raise RuntimeError("observe some data first")
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        if method == "minmax":
            lo, hi = self.lo, self.hi
        elif method == "l2":
            lo, hi, _ = self.l2_range()
        else:
            cdf = np.cumsum(self.counts) / self.counts.sum()
            e = self.edges
            lo = e[np.searchsorted(cdf, (100 - percentile) / 100)]
            hi = e[min(self.bins, np.searchsorted(cdf, percentile / 100) + 1)]
        scale, zp = _from_range(np.array(lo), np.array(hi), self.symmetric, self.signed)
        return _make(scale, zp, self.signed, None)


def quantize_per_channel(weight):
    """Symmetric int8 quantization of float weights (K, ...) with one scale per output channel:
    (w_q int8, scale float32 (K,)) with scale = max|w|/127 and w_q = clip(round(w/scale), ±127)
    (ties to even); a channel of zeros gets scale 1."""
    w = np.asarray(weight, np.float32)
    if w.ndim < 2:
        raise ValueError(f"weight must be at least 2-D (out_channels, ...), got {w.ndim}-D")
    if w.size == 0:  # the reshape below could not infer its -1 (and a max of nothing has no value)
        raise ValueError(f"weight has a zero-size dimension (shape {w.shape})")
    if not np.isfinite(w).all():
        raise ValueError("weight holds NaN or infinity")
    amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    scale = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
    scale = np.maximum(scale, np.finfo(np.float32).tiny)  # subnormal amax / 127 rounds to 0: w / 0
    q = np.clip(np.rint(w / scale.reshape((-1,) + (1,) * (w.ndim - 1))), -127, 127).astype(np.int8)
    return q, scale


def split_outliers(w, *, outlier_fraction=None, threshold=None):
    """Outlier-aware int8 weights: the entries of w (out, in) with |w| > threshold (or the
    largest ``outlier_fraction`` of them by magnitude) are kept in float32 as a sparse set,
    and the rest is quantized per output row, symmetric, so the few large values no longer
    stretch every row's scale. Returns (w_q int8 (out, in) with the outliers' places zero,
    scale (out,), rows, cols, values): w ≈ scale[:, None]·w_q + the sparse part."""
    w = np.asarray(w, np.float32)
    if w.ndim != 2:
        raise ValueError(f"w must be (out, in), got shape {w.shape}")
    if (outlier_fraction is None) == (threshold is None):
        raise ValueError("give exactly one of outlier_fraction and threshold")
    a = np.abs(w)
    if threshold is None:
        if not 0 <= outlier_fraction < 1:
            raise ValueError(f"outlier_fraction must be in [0, 1), got {outlier_fraction}")
        count = int(round(outlier_fraction * w.size))
        threshold = np.inf if count == 0 else np.partition(a.ravel(), w.size - count)[w.size - count] - 0.0
        mask = a >= threshold if count else np.zeros_like(a, bool)
    else:
        mask = a > float(threshold)
    rows, cols = np.nonzero(mask)
    values = w[rows, cols].copy()
    dense = np.where(mask, 0.0, w).astype(np.float32)
    w_q, scale = quantize_per_channel(dense)
    return w_q, scale, rows.astype(np.int64), cols.astype(np.int64), values


def outlier_error(w, x, **split):
    """The relative error ‖x·Wᵀ − x·Ŵᵀ‖/‖x·Wᵀ‖ of plain per-row int8 weights and of the
    outlier split (``split``: outlier_fraction= or threshold=), on float inputs x (N, in):
    {"int8": …, "split": …, "outliers": count}."""
    w, x = np.asarray(w, np.float64), np.asarray(x, np.float64)
    ref = x @ w.T
    q, s = quantize_per_channel(w)
    plain = x @ (q * s[:, None].astype(np.float64)).T
    q2, s2, rows, cols, values = split_outliers(w, **split)
    dense = q2 * s2[:, None].astype(np.float64)
    dense[rows, cols] += values
    norm = np.linalg.norm(ref)
    return {"int8": float(np.linalg.norm(ref - plain) / norm), "split": float(np.linalg.norm(ref - x @ dense.T) / norm),
            "outliers": int(rows.size)}
