"""brgemm.quant.ternarize (Kundu et al., "Ternary Residual Networks", SysML 2018): per block, the
threshold and α are the least-squares optimum (checked against a search over every threshold
and a fine grid of α); residual levels lower the error until the per-block target; dropping
levels at inference time gives the coarser weights back; the errors name their argument."""

import numpy as np
import pytest

from brgemm.quant import Ternary, ternarize


def brute_force(w):
    """The smallest ‖w − α·sign(w)·[|w| > T]‖² over every distinct T and α on a fine grid."""
    best = np.sum(w * w)
    for t in np.concatenate([[0.0], np.abs(w)]):
        code = np.sign(w) * (np.abs(w) > t)
        for alpha in np.linspace(0, np.abs(w).max(), 2001):
            best = min(best, np.sum((w - alpha * code) ** 2))
    return best


@pytest.mark.parametrize("seed", range(4))
def test_level_0_is_the_least_squares_ternary(seed):
    w = np.random.default_rng(seed).standard_normal((1, 8))
    t = ternarize(w, block=8, max_residuals=0)
    got = np.sum((w - t.dequantize()) ** 2)
    assert set(np.unique(t.codes)) <= {-1, 0, 1}
    assert got <= brute_force(w[0]) + 1e-6  # the grid's optimum can only be worse
    kept = t.codes[0, 0] != 0  # α is the mean magnitude of what is kept, T separates it
    assert np.isclose(t.alpha[0, 0, 0], np.abs(w[0, kept]).mean())
    assert np.abs(w[0, kept]).min() > np.abs(w[0, ~kept]).max(initial=-1)


def test_residuals_reach_the_error_target(rng):
    w = rng.standard_normal((6, 5, 3, 3)).astype(np.float32)  # a conv weight: blocks over C·R·S
    t = ternarize(w, block=16, max_residuals=4, error_target=0.05)
    assert isinstance(t, Ternary) and t.codes.shape == (t.levels, 6, 48) and t.alpha.shape == (t.levels, 6, 3)
    errs = [np.linalg.norm(t.dequantize(r) - w) for r in range(t.levels)]
    assert all(a > b for a, b in zip(errs, errs[1:])), errs  # every level helps
    full = (t.dequantize() - w).reshape(6, -1)
    flat = w.reshape(6, -1)
    for j in range(3):  # every block within the target, or out of levels
        e = np.linalg.norm(full[:, 16 * j:16 * j + 16], axis=1) / np.linalg.norm(flat[:, 16 * j:16 * j + 16], axis=1)
        assert np.all((e <= 0.05 + 1e-6) | (t.levels == 5))
    assert t.dequantize(0).dtype == np.float32 and t.dequantize(0).shape == w.shape
    assert t.dequantize(99).tobytes() == t.dequantize().tobytes()


def test_blocks_stop_once_they_meet_the_target(rng):
    w = rng.standard_normal((4, 64))
    w[0] = np.sign(w[0]) * 0.3  # exactly ternary: one level suffices
    t = ternarize(w, block=64, max_residuals=3, error_target=0.01)
    assert t.blocks_per_level()[0] == 4 and t.blocks_per_level()[1] == 3
    assert (t.alpha[1:, 0] == 0).all() and np.allclose(t.dequantize(0)[0], w[0])


def test_ragged_last_block_and_zeros():
    w = np.zeros((2, 10))
    w[1, :3] = [1.0, -2.0, 0.5]
    t = ternarize(w, block=4, max_residuals=1)
    assert t.codes.shape == (t.levels, 2, 12) and not t.codes[:, 0].any() and not t.codes[:, :, 10:].any()
    assert np.allclose(t.dequantize()[0], 0)


@pytest.mark.parametrize("kw, error, match", [
    (dict(weight=np.ones((2, 3), np.int32)), TypeError, "^weight must be a floating-point array"),
    (dict(weight=np.ones(3)), ValueError, "^weight must have shape"),
    (dict(weight=np.full((2, 2), np.nan)), ValueError, "^weight holds NaN"),
    (dict(block=0), ValueError, "^block must be an integer"),
    (dict(max_residuals=-1), ValueError, "^max_residuals must be an integer"),
    (dict(error_target=1.5), ValueError, "^error_target must be in"),
])
def test_errors_name_the_argument(kw, error, match):
    args = dict(weight=np.ones((2, 3)), block=2)
    args.update(kw)
    with pytest.raises(error, match=match):
        ternarize(**args)
    with pytest.raises(ValueError, match="^residuals must be a non-negative integer"):
        ternarize(np.ones((2, 3))).dequantize(-1)
