"""The DFP-16 product's threaded preparation (B's packing, max|b| and the rows' |a| sums, one
range per thread): the same chunks and bits as on one thread, for a product above the 4 MFLOP
rule, with rows' sums that force short chunks."""

import numpy as np

import brgemm
from brgemm import dfp


def test_two_threads_give_one_threads_bits():
    rng = np.random.default_rng(7)
    a = rng.standard_normal((130, 4098)).astype(np.float32)  # 2·130·4098·70 > 4e6; odd pair count
    b = rng.standard_normal((4098, 70)).astype(np.float32)
    a[:, :40] *= 1e4  # large mantissas in the first columns of every row: chunks shorter than K
    before = brgemm.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            brgemm.set_num_threads(threads)
            results.append((dfp.chunks(a, b), dfp.matmul(a, b)))
    finally:
        brgemm.set_num_threads(before)
    (c1, y1), (c2, y2) = results
    assert len(c1) > 2 and list(c1) == list(c2)
    np.testing.assert_array_equal(y1.view(np.int32), y2.view(np.int32))
    ref = dfp.from_dfp16(dfp.to_dfp16(a)).astype(np.float64) @ dfp.from_dfp16(dfp.to_dfp16(b)).astype(np.float64)
    np.testing.assert_allclose(y1, ref, rtol=1e-4, atol=1e-3 * np.abs(ref).max())
