"""The core's transpose (brgemm.h transpose_elements, the layers' layout copies) on every ISA:
a copy, so every ISA must give numpy's transpose exactly, with the bytes around the
destination untouched. Shapes cover full register tiles (16 × 16 with AVX-512, 8 × 8 with
AVX2), the edges around them, single rows or columns, and row strides wider than a row. The
VNNI-2 pair copy (interleave_pairs_b16, bf16 and int16 operands' packing) likewise against numpy."""
import numpy as np
import pytest

from brgemm import _core

# (rows, cols, extra source row stride, extra destination row stride)
SHAPES = [(1, 1, 0, 0), (1, 37, 0, 3), (37, 1, 2, 0), (8, 8, 0, 0), (16, 16, 0, 0), (16, 64, 0, 0),
          (3136, 64, 0, 0), (7, 9, 5, 1), (17, 15, 0, 0), (33, 47, 3, 11), (49, 32, 0, 0), (196, 16, 16, 4),
          (64, 49, 0, 0), (15, 17, 1, 2)]
DTYPES = [np.uint32, np.float32, np.uint16, np.int16, np.uint8]


@pytest.mark.parametrize("rows, cols, pad_src, pad_dst", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_transpose_matches_numpy(isa, rng, dtype, rows, cols, pad_src, pad_dst):
    size = np.dtype(dtype).itemsize
    # Random bits (for float32, NaNs with payloads among them), viewed as the element type.
    wide = rng.integers(0, 256, size=(rows, (cols + pad_src) * size), dtype=np.uint8).view(dtype)
    x = wide[:, :cols]
    canvas = np.full((cols, (rows + pad_dst) * size), 0xA5, np.uint8).view(dtype)
    before = canvas.copy()
    _core.transpose(x, canvas[:, :rows])
    # Compared as bytes: NaN payloads must survive too.
    np.testing.assert_array_equal(canvas[:, :rows].view(np.uint8), np.ascontiguousarray(x.T).view(np.uint8))
    np.testing.assert_array_equal(canvas[:, rows:].view(np.uint8), before[:, rows:].view(np.uint8))


def test_transpose_rejects_bad_arrays():
    x = np.zeros((3, 5), np.float32)
    with pytest.raises(ValueError, match="out must have x's shape reversed"):
        _core.transpose(x, np.zeros((3, 5), np.float32))
    with pytest.raises(TypeError, match="x must have 1-, 2- or 4-byte elements"):
        _core.transpose(np.zeros((3, 5), np.float64), np.zeros((5, 3), np.float64))
    with pytest.raises(TypeError, match="out must have x's element size"):
        _core.transpose(x, np.zeros((5, 3), np.uint16))
    with pytest.raises(ValueError, match="x must have consecutive elements"):
        _core.transpose(np.zeros((5, 3), np.float32).T, np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match="out overlaps x"):
        buf = np.zeros((5, 5), np.float32)
        _core.transpose(buf[:3, :5], buf[:5, :3])


@pytest.mark.parametrize("rows, cols", [(2, 1), (2, 7), (2, 8), (4, 64), (7, 17), (56, 64), (3, 33)])
def test_interleave_pairs_matches_numpy(isa, rng, rows, cols):
    x = rng.integers(0, 1 << 16, size=(rows, cols), dtype=np.uint16)
    out = np.full((rows // 2, 2 * cols), 0xA5A5, np.uint16)
    _core.interleave_pairs(x, out)
    pairs = x[: rows // 2 * 2].reshape(rows // 2, 2, cols)  # an odd last row is not read
    np.testing.assert_array_equal(out, pairs.transpose(0, 2, 1).reshape(rows // 2, 2 * cols))


def test_interleave_pairs_rejects_bad_arrays():
    x = np.zeros((4, 5), np.uint16)
    with pytest.raises(ValueError, match=r"out must have shape \(2, 10\)"):
        _core.interleave_pairs(x, np.zeros((4, 5), np.uint16))
    with pytest.raises(TypeError, match="x must have 2-byte elements"):
        _core.interleave_pairs(np.zeros((4, 5), np.float32), np.zeros((2, 10), np.uint16))
    with pytest.raises(ValueError, match="x must be C-contiguous"):
        _core.interleave_pairs(np.zeros((5, 4), np.uint16).T, np.zeros((2, 10), np.uint16))
