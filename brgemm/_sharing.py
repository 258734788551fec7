"""Trained weight sharing (Han et al. 2016, "Deep Compression"): the weights of a layer clustered
into 2^b centroids by k-means, stored as b-bit indices and the codebook; the centroids fine-tuned
by the gradients summed per cluster; products on the shared weights through the "codebook panels"
packing (brgemm/codebook.h), whose kernels widen the indices in registers.

Clustering and packing run once, in numpy (off the hot path); the product is one C++ call.
"""

import numpy as np

from . import _core


HISTOGRAM_ABOVE, HISTOGRAM_BINS = 1 << 20, 1 << 16


def bits_arg(bits):
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"bits must be an int in 2..8, got {bits!r}")
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in 2..8, got {bits}")
    return int(bits)


def share_weights(weight, bits, iters=30):
    """Clusters ``weight`` (any shape, float) into 2^bits centroids; returns ``(codebook, indices)``:
    float32 (2^bits,), ascending, and uint8 indices of weight's shape, so codebook[indices] ≈ weight.

    k-means in one dimension with linear initialisation (centroids spaced evenly between the
    smallest and largest weight, which Han et al. found keeps the large, rare weights best), then
    Lloyd iterations (each weight to its nearest centroid, each centroid to its cluster's mean;
    an emptied cluster keeps its centroid) until the assignment stops changing or ``iters``."""
    bits = bits_arg(bits)
    w = np.asarray(weight)
    if w.size == 0 or not np.issubdtype(w.dtype, np.floating):
        raise ValueError(f"weight must be a non-empty float array, got {w.dtype} of shape {w.shape}")
    flat = w.astype(np.float64).ravel()
    if not np.isfinite(flat).all():
        raise ValueError("weight must be finite")
    lo, hi = flat.min(), flat.max()
    centroids = np.linspace(lo, hi, 1 << bits)
    # Many weights: Lloyd's iterations run on a fine histogram (each bin's count and exact sum,
    # its members moved together), then one exact assignment; the centroids differ from the exact
    # iteration's by at most a bin's width where a boundary cuts a bin.
    if flat.size > HISTOGRAM_ABOVE and hi > lo:
        scale = (HISTOGRAM_BINS - 1) / (hi - lo)
        which = ((flat - lo) * scale).astype(np.int64)
        values = np.bincount(which, weights=flat, minlength=HISTOGRAM_BINS)
        weights = np.bincount(which, minlength=HISTOGRAM_BINS).astype(np.float64)
        where = np.divide(values, weights, out=lo + np.arange(HISTOGRAM_BINS) / scale, where=weights > 0)
    else:
        where, weights, values = flat, None, flat
    idx = None
    for _ in range(max(1, int(iters))):
        # sorted centroids: the nearest one is found between the midpoints
        new = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, where).astype(np.uint8)
        if idx is not None and np.array_equal(new, idx):
            break
        idx = new
        counts = np.bincount(idx, weights=weights, minlength=centroids.size)
        sums = np.bincount(idx, weights=values, minlength=centroids.size)
        centroids = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        centroids.sort()   # means of ordered clusters stay ordered; kept for safety
    if weights is not None:
        idx = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, flat).astype(np.uint8)
    return centroids.astype(np.float32), idx.reshape(w.shape)


def centroid_gradients(indices, weight_grad, bits):
    """The gradient of each centroid: the sum of the weight gradients of its cluster (float32
    (2^bits,)), what fine-tuning the shared weights descends along."""
    bits = bits_arg(bits)
    indices, weight_grad = np.asarray(indices), np.asarray(weight_grad)
    if indices.shape != weight_grad.shape:
        raise ValueError(f"weight_grad must have the indices' shape {indices.shape}, got {weight_grad.shape}")
    return np.bincount(indices.ravel(), weights=weight_grad.ravel().astype(np.float64),
                       minlength=1 << bits).astype(np.float32)


class SharedWeights:
    """B (k × n) as shared weights packed once ("codebook panels", brgemm/codebook.h): b-bit
    indices (nibbles for b ≤ 4, bytes above) in panels of 64 columns, and the codebook.
    ``brgemm.gemm(A, shared)`` computes A · codebook[indices] with the indices widened in
    registers. The codebook may be fine-tuned in place (:meth:`fine_tune`); the indices stay."""

    def __init__(self, codebook, indices):
        indices = np.asarray(indices)
        if indices.ndim != 2 or indices.size == 0:
            raise ValueError(f"indices must be a non-empty 2-D (k, n) array, got shape {indices.shape}")
        codebook = np.asarray(codebook, np.float32)
        if codebook.ndim != 1 or codebook.size not in (4, 8, 16, 32, 64, 128, 256):
            raise ValueError(f"codebook must hold 2^bits values for bits in 2..8, got shape {codebook.shape}")
        self.bits = int(codebook.size).bit_length() - 1
        if not np.issubdtype(indices.dtype, np.integer) or indices.min() < 0 or indices.max() >= codebook.size:
            raise ValueError(f"indices must be integers in [0, {codebook.size})")
        self.k, self.n = indices.shape
        self.codebook = np.array(codebook, order="C")
        self.data = _core.codebook_pack(np.ascontiguousarray(indices, np.uint8), self.bits)

    @property
    def nbytes(self):
        """Bytes of the packed indices (what a product streams) and the codebook."""
        return self.data.nbytes + self.codebook.nbytes

    def fine_tune(self, indices, weight_grad, lr):
        """codebook −= lr · the cluster sums of ``weight_grad`` (for the plain (k, n) ``indices``
        this was packed from): Deep Compression's centroid update."""
        self.codebook -= np.float32(lr) * centroid_gradients(indices, weight_grad, self.bits)

    def decode(self):
        """B as float32 (k, n), for reference."""
        out = np.empty((self.k, self.n), np.float32)
        eye = np.eye(self.k, dtype=np.float32)
        return self.gemm(eye, out)

    def gemm(self, A, C=None, bias=None):
        """C = A · codebook[B] (+ bias), A float32 (m, k); C float32 (m, n), new when None."""
        if C is None:
            A = np.asarray(A)
            C = np.empty((A.shape[0] if A.ndim == 2 else 0, self.n), np.float32)
        _core.codebook_gemm(A, self.data, self.bits, self.n, self.codebook, bias, C)
        return C

    def __repr__(self):
        return f"SharedWeights(k={self.k}, n={self.n}, bits={self.bits})"


def pack_shared(codebook, indices):
    """:class:`SharedWeights` for B = codebook[indices], indices (k, n) in gemm's orientation
    (for a Linear weight (out, in) from :func:`share_weights`, pass ``indices.T``)."""
    return SharedWeights(codebook, indices)
