"""Magnitude pruning (Han et al. 2015, "Learning both Weights and Connections"): zero the weights
of smallest magnitude, one by one or in blocks, and keep them zero while the layer trains on.

A mask is computed once per :meth:`Prunable.prune` call (numpy, off the hot path); training holds
it in the layer's SGD step (pruned weights are set to zero, not updated). Pruning in blocks of the
kernels' own shape, one bk × bc weight block of the BRGEMM's B (64 × 64 for layers of 64 features
or more), lets the product skip whole batch entries (layers/linear.h); any other shape, 1 × 1 for
unstructured pruning, only zeroes weights.
"""

import numpy as np


def amount_arg(amount):
    try:
        amount = float(amount)
    except (TypeError, ValueError):
        raise TypeError(f"amount must be a number in [0, 1), got {amount!r}") from None
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"amount must be in [0, 1) (the fraction of weights zeroed), got {amount}")
    return amount


def block_arg(block, shape, default):
    """(rows, cols) of a block of the 2-D ``shape``: ``default`` (the kernels' own, edge blocks
    partial) for None; an int b for b × b; otherwise a pair, each dividing its dimension."""
    if block is None:
        return tuple(default)
    if isinstance(block, (int, np.integer)) and not isinstance(block, bool):
        block = (int(block), int(block))
    try:
        rows, cols = (int(b) for b in block)
    except (TypeError, ValueError):
        raise TypeError(f"block must be None, an int or a pair of ints, got {block!r}") from None
    if rows < 1 or cols < 1:
        raise ValueError(f"block must be positive, got {(rows, cols)}")
    if shape[0] % rows or shape[1] % cols:
        raise ValueError(f"block {(rows, cols)} must divide the weight matrix {tuple(shape)} (out, in)")
    return rows, cols


def magnitude_mask(w, amount, block, previous=None):
    """A boolean mask of 2-D ``w`` that zeroes the blocks of (rows, cols) of smallest mean square
    (edge blocks partial) that make up the nearest to ``amount`` of its weights; pruned ones of
    ``previous`` first, so that iterative pruning only adds to the mask."""
    rows, cols = block
    out, inp = w.shape
    ob, ib = -(-out // rows), -(-inp // cols)
    padded = np.zeros((ob * rows, ib * cols), np.float64)
    padded[:out, :inp] = np.square(w, dtype=np.float64)
    if previous is not None:
        padded[:out, :inp][~previous] = -np.inf   # already pruned: first again
    sums = padded.reshape(ob, rows, ib, cols).sum(axis=(1, 3))
    counts = np.outer(np.minimum(rows, out - rows * np.arange(ob)), np.minimum(cols, inp - cols * np.arange(ib)))
    score, counts = (sums / counts).ravel(), counts.ravel()
    # the smallest blocks first, as many as bring the weights zeroed closest to amount·size
    order = np.argsort(score, kind="stable")
    zeroed = np.concatenate(([0], np.cumsum(counts[order])))
    pruned = int(np.argmin(np.abs(zeroed - amount * w.size)))
    keep = np.ones(score.size, bool)
    keep[order[:pruned]] = False
    keep = keep.reshape(ob, ib).repeat(rows, axis=0).repeat(cols, axis=1)[:out, :inp]
    return keep if previous is None else keep & previous


class Prunable:
    """``prune``, ``mask`` and ``sparsity`` for a layer whose weight, seen as (out, rest) rows,
    is pruned; the layer applies ``_mask`` in its SGD step."""

    _mask = None

    def _prune_matrix(self, weight):
        """The layer's weight as the 2-D matrix pruning sees (out, in): Linear's own; a
        convolution's (K, C·R·S)."""
        return weight.reshape(weight.shape[0], -1)

    def _prune_block(self):
        """The kernels' own block of the pruned matrix (rows, cols)."""
        return (1, 1)

    def _set_mask(self, keep):
        """Hands the mask to the layer's SGD step (the C++ layers keep their own copy)."""

    def prune(self, amount, block=None):
        """Zeroes the fraction ``amount`` of the weights of smallest magnitude and keeps them zero
        through training; returns the mask (bool, weight's shape, False where pruned).

        ``block``: None prunes whole blocks of the kernels' own shape (skipped by the product);
        an int b or a pair (rows, cols) prunes blocks of that shape (1 for single weights) of the
        (out, in) weight matrix. Called again with a larger amount, it prunes more (the pruned
        weights stay pruned): prune → retrain → prune more, as Han et al. 2015 do."""
        amount = amount_arg(amount)
        w = self._weight
        matrix = self._prune_matrix(w)
        block = block_arg(block, matrix.shape, self._prune_block())
        previous = None if self._mask is None else self._mask.reshape(matrix.shape)
        keep = np.ascontiguousarray(magnitude_mask(matrix, amount, block, previous)).reshape(w.shape)
        self._mask = keep
        self._set_mask(keep)
        self._weight = np.where(keep, w, np.float32(0))
        return keep.copy()

    @property
    def mask(self):
        """The pruning mask (bool, weight's shape, False where pruned), or None if never pruned."""
        return None if self._mask is None else self._mask.copy()

    @property
    def sparsity(self):
        """The fraction of the weights the mask zeroes (0.0 before any :meth:`prune`)."""
        return 0.0 if self._mask is None else 1.0 - np.count_nonzero(self._mask) / self._mask.size
