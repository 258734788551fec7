# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The L2 search of brgemm.quant.HistogramObserver: over every clipping range [edges[i], edges[j]]
(i < j; symmetric: -edges[j] .. edges[j] around the middle), the expected squared error of
quantizing the histogram's values to `levels` levels: a value c outside the range costs its
distance to the range squared, one inside Δ²/12 (Δ = (hi − lo)/(levels − 1), uniform rounding
noise). Values are taken at their bin's centre. With prefix sums of n, n·c and n·c² each range
costs O(1): all B(B+1)/2 ranges of a B-bin histogram in one pass."""

import operator

import numpy as np


def l2_search(const double[::1] counts, const double[::1] edges, levels, bint symmetric):
    """(lo, hi, error) of the best range."""
    cdef Py_ssize_t b = counts.shape[0], i, j, k
    # the loops below run without bounds checks: the sizes they rely on are checked here
    if b < 1 or edges.shape[0] != b + 1:
        raise ValueError(f"edges must have len(counts) + 1 = {b + 1} values for {b} bins, got {edges.shape[0]}")
    levels = operator.index(levels)
    if not 2 <= levels <= 1 << 30:
        raise ValueError(f"levels must be in 2..2**30, got {levels}")
    cdef double[::1] n0 = np.zeros(b + 1), n1 = np.zeros(b + 1), n2 = np.zeros(b + 1)
    cdef double c, lo, hi, d, err, best = 1e300, best_lo = edges[0], best_hi = edges[b]
    cdef double left, right, inside, l0, l1, l2, r0, r1, r2
    for k in range(b):
        c = 0.5 * (edges[k] + edges[k + 1])
        n0[k + 1] = n0[k] + counts[k]
        n1[k + 1] = n1[k] + counts[k] * c
        n2[k + 1] = n2[k] + counts[k] * c * c
    for i in range(b):
        for j in range(i + 1, b + 1):
            if symmetric:
                if i + j != b:  # ranges centred on the histogram's middle
                    continue
            lo = edges[i]
            hi = edges[j]
            d = (hi - lo) / (levels - 1)
            # bins k < i lie left of lo, bins k ≥ j right of hi
            l0 = n0[i]; l1 = n1[i]; l2 = n2[i]
            r0 = n0[b] - n0[j]; r1 = n1[b] - n1[j]; r2 = n2[b] - n2[j]
            left = lo * lo * l0 - 2.0 * lo * l1 + l2
            right = r2 - 2.0 * hi * r1 + hi * hi * r0
            inside = (n0[j] - n0[i]) * d * d / 12.0
            err = left + right + inside
            if err < best:
                best, best_lo, best_hi = err, lo, hi
    return best_lo, best_hi, best
