"""The int8 zero-point offsets the core computes (brgemm.h, "int8 zero points"), called directly.

With zero points za (A) and zb (B), Σ (a − za)(b − zb) = Σ a·b − za·colsum_j − zb·rowsum_i +
K·za·zb, and the s8s8 kernels' column term is −(za + 128)·colsum_j. The oracle is the same
formula in exact Python integers, reduced modulo 2^32 to int32 as the accumulator wraps.
The products through Epilogue (test_epilogue.py) and QuantizedConv2d (test_quantized_conv.py)
use these offsets; here each is checked alone, extremes and wrap-around included.
"""

import numpy as np
import pytest

from brgemm import _core


def wrap32(v):
    """Exact integers → int32, modulo 2^32."""
    return ((np.asarray(v, dtype=object) + 2**31) % 2**32 - 2**31).astype(np.int32)


def oracle(A, colsum, za, zb, dtype):
    count, m, k = A.shape
    shifted = za + 128 if dtype == "s8s8" else za
    rowsum = A.astype(object).sum(axis=(0, 2))
    col = count * k * za * zb - shifted * colsum.astype(object).sum(axis=0)
    return wrap32(-zb * rowsum), wrap32(col)


CASES = {  # dtype, batch, m, k, rows of colsum, n, za, zb
    "u8s8_plain": ("u8s8", 3, 5, 7, 3, 9, 11, -4),
    "u8s8_a_only": ("u8s8", 1, 2, 3, 1, 4, 255, 0),
    "u8s8_b_only": ("u8s8", 2, 6, 5, 2, 3, 0, 127),
    "u8s8_none": ("u8s8", 2, 4, 4, 2, 4, 0, 0),
    "s8s8_shift_only": ("s8s8", 2, 3, 4, 2, 5, 0, 0),
    "s8s8_shift_cancels": ("s8s8", 2, 3, 4, 2, 5, -128, 9),
    "s8s8_extremes": ("s8s8", 4, 7, 33, 4, 17, 127, -128),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_offsets_match_exact_integers(case, rng):
    dtype, count, m, k, rows, n, za, zb = case
    a_type = np.uint8 if dtype == "u8s8" else np.int8
    info = np.iinfo(a_type)
    A = rng.integers(info.min, info.max + 1, size=(count, m, k)).astype(a_type)
    colsum = rng.integers(-(2**31), 2**31, size=(rows, n)).astype(np.int32)  # wraps when summed
    row, col = _core._zero_point_offsets(A, colsum, za, zb, dtype)
    want_row, want_col = oracle(A, colsum, za, zb, dtype)
    np.testing.assert_array_equal(row, want_row)
    np.testing.assert_array_equal(col, want_col)


def test_offsets_wrap_on_the_largest_values():
    # Every product at its extreme: the sums leave int32 and must wrap as the accumulator does.
    A = np.full((8, 3, 1000), 255, dtype=np.uint8)
    colsum = np.full((8, 4), 2**31 - 1, dtype=np.int32)
    row, col = _core._zero_point_offsets(A, colsum, 255, -128, "u8s8")
    want_row, want_col = oracle(A, colsum, 255, -128, "u8s8")
    np.testing.assert_array_equal(row, want_row)
    np.testing.assert_array_equal(col, want_col)


def test_offsets_refuse_float_dtypes():
    with pytest.raises(ValueError, match="^dtype must be 'u8s8' or 's8s8'"):
        _core._zero_point_offsets(np.zeros((1, 1, 1), np.float32), np.zeros((1, 1), np.int32), 0, 0, "f32")
