"""Trained weight sharing (brgemm.quant.share_weights, pack_shared, brgemm/codebook.h).

The product on shared weights sums fma(a, codebook[index]) in k order on every ISA, so the vector
kernels must give the scalar twin's bits; against float64 the float32 bound of a K-term sum is
K·2⁻²³·Σ|a||w| (one more term for the bias).
"""

import numpy as np
import pytest

import brgemm
from brgemm.quant import SharedWeights, centroid_gradients, pack_shared, share_weights

SHAPES = [(1, 1, 1), (1, 70, 130), (3, 17, 64), (5, 33, 65), (6, 9, 200)]  # (m, k, n)


def reference(a, codebook, indices, bias=None):
    w = codebook.astype(np.float64)[indices]
    y = a.astype(np.float64) @ w + (0 if bias is None else bias)
    tol = (a.shape[1] + 1) * 2.0 ** -23 * (np.abs(a) @ np.abs(w) + (0 if bias is None else np.abs(bias))) + 1e-30
    return y, tol


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_product_matches_float64_and_the_scalar_twin(isa, rng, bits, shape):
    m, k, n = shape
    codebook = np.sort(rng.standard_normal(1 << bits)).astype(np.float32)
    indices = rng.integers(0, 1 << bits, (k, n)).astype(np.uint8)
    a = rng.standard_normal((m, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    shared = pack_shared(codebook, indices)
    for b in (None, bias):
        got = brgemm.gemm(a, shared, epilogue=None if b is None else brgemm.Epilogue(bias=b))
        ref, tol = reference(a, codebook, indices, b)
        assert np.all(np.abs(got - ref) <= tol)
        brgemm.set_isa("scalar")
        twin = shared.gemm(a, bias=b)
        brgemm.set_isa(isa)
        np.testing.assert_array_equal(got, twin)


def test_strided_rows_and_output(rng):
    codebook = np.linspace(-1, 1, 16, dtype=np.float32)
    indices = rng.integers(0, 16, (20, 70)).astype(np.uint8)
    a = rng.standard_normal((4, 30)).astype(np.float32)[:, :20]
    c = np.full((4, 90), np.nan, np.float32)
    pack_shared(codebook, indices).gemm(a, c[:, :70])
    ref, tol = reference(a, codebook, indices)
    assert np.all(np.abs(c[:, :70] - ref) <= tol) and np.isnan(c[:, 70:]).all()


def test_kmeans_is_converged_from_linear_initialisation(rng):
    w = np.concatenate([rng.normal(-1, 0.1, 300), rng.normal(0.5, 0.2, 700), [4.0]]).astype(np.float32)
    codebook, idx = share_weights(w, 3)
    assert codebook.shape == (8,) and idx.dtype == np.uint8 and idx.shape == w.shape
    assert np.all(np.diff(codebook) > 0)
    # Lloyd's fixed point: each weight at its nearest centroid, each centroid its cluster's mean
    nearest = np.argmin(np.abs(w[:, None] - codebook[None, :]), axis=1)
    np.testing.assert_array_equal(codebook[idx], codebook[nearest])
    for c in np.unique(idx):
        assert codebook[c] == pytest.approx(w[idx == c].mean(), rel=1e-5, abs=1e-6)
    # linear initialisation keeps the rare large weight as its own centroid
    assert codebook[-1] == pytest.approx(4.0)
    errors = [np.abs(np.take(*share_weights(w, b)) - w).max() for b in (2, 4, 6)]
    assert errors[0] > errors[1] > errors[2]


def test_centroid_fine_tuning_sums_the_gradients_by_cluster(rng):
    w = rng.standard_normal((12, 10)).astype(np.float32)
    codebook, idx = share_weights(w, 2)
    g = rng.standard_normal(w.shape).astype(np.float32)
    grads = centroid_gradients(idx, g, 2)
    for c in range(4):
        assert grads[c] == pytest.approx(g[idx == c].sum(), rel=1e-5, abs=1e-6)
    shared = pack_shared(codebook, idx.T)      # B = weightᵀ, as a Linear's product uses it
    shared.fine_tune(idx.T, g.T, 0.5)
    np.testing.assert_array_equal(shared.codebook, codebook - np.float32(0.5) * grads)
    x = rng.standard_normal((2, 10)).astype(np.float32)
    ref, tol = reference(x, shared.codebook, idx.T)
    assert np.all(np.abs(shared.gemm(x) - ref) <= tol)


def test_packed_bytes_shrink_with_bits():
    idx = np.zeros((256, 256), np.uint8)
    sizes = {b: pack_shared(np.zeros(1 << b, np.float32), idx).data.nbytes for b in (2, 4, 5, 8)}
    assert sizes[2] == sizes[4] == 256 * 256 // 2 and sizes[5] == sizes[8] == 256 * 256


def test_errors(rng):
    w = rng.standard_normal((4, 4)).astype(np.float32)
    for bits in (1, 9):
        with pytest.raises(ValueError, match="bits must be in 2..8"):
            share_weights(w, bits)
    with pytest.raises(TypeError, match="bits must be an int"):
        share_weights(w, 2.5)
    with pytest.raises(ValueError, match="indices must be integers in"):
        SharedWeights(np.zeros(4, np.float32), np.full((2, 2), 4))
    with pytest.raises(ValueError, match="codebook must hold 2\\^bits"):
        SharedWeights(np.zeros(5, np.float32), np.zeros((2, 2), np.uint8))
    shared = pack_shared(np.zeros(4, np.float32), np.zeros((4, 3), np.uint8))
    with pytest.raises(ValueError, match="beta must be 0"):
        brgemm.gemm(np.ones((1, 4), np.float32), shared, np.zeros((1, 3), np.float32), beta=1.0)
    with pytest.raises(ValueError, match="packed"):
        brgemm.gemm(np.ones((1, 5), np.float32), shared)   # k differs from the packed B's
    with pytest.raises(ValueError, match="may only add a bias"):
        brgemm.gemm(np.ones((1, 4), np.float32), shared, epilogue=brgemm.Epilogue(activation="relu"))


def test_kmeans_on_a_histogram_for_many_weights(rng, monkeypatch):
    import brgemm._sharing as sharing
    w = rng.standard_normal(20000).astype(np.float32)
    exact = share_weights(w, 4)
    monkeypatch.setattr(sharing, "HISTOGRAM_ABOVE", 1000)
    codebook, idx = share_weights(w, 4)
    nearest = np.argmin(np.abs(w[:, None] - codebook[None, :]), axis=1)
    np.testing.assert_array_equal(codebook[idx], codebook[nearest])
    width = (w.max() - w.min()) / sharing.HISTOGRAM_BINS
    assert np.abs(codebook[idx] - w).mean() <= np.abs(np.take(*exact) - w).mean() * 1.01 + width
