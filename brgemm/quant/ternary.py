"""Ternary weights with residual blocks (Kundu et al., "Ternary Residual Networks", SysML 2018):
each block of ``block`` consecutive weights of an output channel becomes α·Ŵ with Ŵ ∈ {−1, 0, 1}
and a threshold T (Ŵ = sign(w)·[|w| > T]) that minimise ‖w − αŴ‖²; where a block's relative
error stays above the target, its residual w − αŴ is ternarized again, up to ``max_residuals``
times. Dropping residual levels at inference time trades accuracy for compute.

This is the offline step (a weight is ternarized once), in numpy over all blocks at once.
"""

from dataclasses import dataclass

import numpy as np


def _ternarize_blocks(r):
    """(codes int8, α float64) for every row of r (blocks × block): the least-squares ternary.

    For a fixed number k of kept weights the best ones are the k largest |w|, with α their mean;
    the error is ‖w‖² − (Σ_{top k}|w|)²/k, so k maximises S_k²/k over the sorted magnitudes. T lies
    between the k-th and (k+1)-th largest |w|; α is then the mean |w| of what |w| > T keeps."""
    a = np.sort(np.abs(r), axis=1)[:, ::-1]
    s = np.cumsum(a, axis=1)
    k = np.argmax(s * s / np.arange(1, r.shape[1] + 1), axis=1)  # index of the last kept magnitude
    rows = np.arange(r.shape[0])
    below = np.where(k + 1 < r.shape[1], a[rows, np.minimum(k + 1, r.shape[1] - 1)], 0.0)
    t = (a[rows, k] + below) / 2  # strictly between the kept and the dropped magnitudes (or 0)
    keep = np.abs(r) > t[:, None]
    n = keep.sum(axis=1)
    alpha = np.where(n > 0, (np.abs(r) * keep).sum(axis=1) / np.maximum(n, 1), 0.0)
    return (np.sign(r) * keep).astype(np.int8), alpha


@dataclass
class Ternary:
    """A ternarized weight: ``codes`` (levels, out, K) int8 in {−1, 0, 1} over the flattened input
    dimensions (K padded to whole blocks), ``alpha`` (levels, out, K/block) float32 (0 where a
    block has no such level), ``shape`` of the weight, ``block``. Level 0 is the ternary weight,
    the others its residual blocks."""

    codes: np.ndarray
    alpha: np.ndarray
    shape: tuple
    block: int

    @property
    def levels(self):
        return self.codes.shape[0]

    def blocks_per_level(self):
        """How many blocks each level holds (level 0: all of them)."""
        return (self.alpha != 0).reshape(self.levels, -1).sum(axis=1)

    def dequantize(self, residuals=None):
        """Σ_level α·Ŵ as a float32 array of the weight's shape, with at most ``residuals``
        residual levels (None: all of them; 0: the plain ternary weight)."""
        if residuals is None:
            residuals = self.levels - 1
        if not isinstance(residuals, (int, np.integer)) or isinstance(residuals, bool) or residuals < 0:
            raise ValueError(f"residuals must be a non-negative integer, got {residuals!r}")
        lv = min(residuals + 1, self.levels)
        scale = np.repeat(self.alpha[:lv], self.block, axis=2)
        w = (scale * self.codes[:lv]).sum(axis=0)
        k = int(np.prod(self.shape[1:]))
        return w[:, :k].reshape(self.shape).astype(np.float32)


def ternarize(weight, block=64, max_residuals=2, error_target=0.1):
    """Ternarize ``weight`` (out, ...) per block of ``block`` consecutive weights of each output
    channel; add residual levels (at most ``max_residuals``) to every block whose relative error
    ‖w − ŵ‖ / ‖w‖ is still above ``error_target``. Returns a :class:`Ternary`."""
    w = np.asarray(weight)
    if not np.issubdtype(w.dtype, np.floating):
        raise TypeError(f"weight must be a floating-point array, got {w.dtype}")
    if w.ndim < 2 or w.size == 0:
        raise ValueError(f"weight must have shape (out, ...) with at least 2 non-empty dimensions, got {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError("weight holds NaN or infinity")
    for name, v, lo in (("block", block, 1), ("max_residuals", max_residuals, 0)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
            raise ValueError(f"{name} must be an integer ≥ {lo}, got {v!r}")
    error_target = float(error_target)
    if not 0 <= error_target < 1:
        raise ValueError(f"error_target must be in [0, 1), got {error_target}")
    out, k = w.shape[0], int(np.prod(w.shape[1:]))
    nb = -(-k // block)
    blocks = np.zeros((out, nb * block))
    blocks[:, :k] = w.reshape(out, k)
    blocks = blocks.reshape(out * nb, block)
    norm2 = (blocks * blocks).sum(axis=1)
    residual = blocks.copy()
    codes, alphas = [], []
    active = np.ones(out * nb, bool)
    for _ in range(max_residuals + 1):
        c, a = _ternarize_blocks(residual)
        c[~active] = 0
        a[~active] = 0
        codes.append(c)
        alphas.append(a)
        residual -= a[:, None] * c
        err2 = (residual * residual).sum(axis=1)
        active &= err2 > error_target ** 2 * norm2
        if not active.any():
            break
    return Ternary(np.stack(codes).reshape(len(codes), out, nb * block),
                   np.stack(alphas).astype(np.float32).reshape(len(codes), out, nb), tuple(w.shape), int(block))
