"""Every f32 × f16-weights microkernel (A float32, B IEEE half widened in registers), called
directly by name over the named sweep (tests/shapes.py) against the float64 oracle on the
same half-precision weights: widening a half to f32 is exact, so the f32 bound applies.
Plus gemm with half weights under every ISA, and the weights' round trip through pack_b."""

import numpy as np
import pytest

import brgemm
from brgemm.testing import TOL_C, U32, make_problem
from conftest import ALL_UKERNELS, require_ukernel, restore_isa
from shapes import sweep

F16_UKERNELS = [u for u in ALL_UKERNELS if u["dtype"] == "f32f16"]


def _params():
    return [pytest.param(u, case, id=f"{u['name']}-{case.id}")
            for u in F16_UKERNELS for case in sweep(u["mr"], u["nr"])]


@pytest.fixture
def isa_restored():
    yield
    restore_isa()


def test_the_family_exists():
    assert [u["isa"] for u in F16_UKERNELS][0] == "scalar"
    assert {"scalar", "avx2", "avx512"} <= {u["isa"] for u in F16_UKERNELS}


@pytest.mark.parametrize("info, case", _params())
def test_ukernel_sweep(info, case, rng, isa_restored):
    require_ukernel(info)
    # B in half precision; the oracle reads the halves (widening them to f32 is exact)
    p = make_problem(case.m, case.n, case.k, rng=rng, dtype="f32f16", **case.problem_kwargs())
    kernel = brgemm.Kernel(case.m, case.n, case.k, ukernel=info["name"], **p.kernel_kwargs())
    assert kernel.name == info["name"] and kernel.dtype == "f32f16"
    assert p.run(kernel) is p.c
    p.check()


def test_float32_b_is_refused_by_an_f16_kernel():
    k = brgemm.Kernel(2, 2, 2, dtype="f32f16")
    with pytest.raises(TypeError, match="B must have dtype float16"):
        k(np.ones(4, np.float32), np.ones(4, np.float32), np.zeros(4, np.float32), 1)


@pytest.mark.parametrize("m, k, n", [(1, 4096, 300), (1, 7, 5), (3, 1031, 130), (16, 600, 1100)])
def test_gemm_with_half_weights(isa, m, k, n):
    rng = np.random.default_rng(k + n)
    A = rng.standard_normal((m, k), dtype=np.float32)
    W = rng.standard_normal((k, n), dtype=np.float32)
    W16 = brgemm.pack_b(W, "f32f16")  # rounds the weights to half once
    assert W16.dtype == "f32f16" and W16.data.dtype == np.float16
    np.testing.assert_array_equal(W16.data[:, :n], W.astype(np.float16))
    a, w = A.astype(np.float64), W16.data[:, :n].astype(np.float64)
    for threads in (1, 2):
        brgemm.set_num_threads(threads)
        C = brgemm.gemm(A, W16)
        assert np.all(np.abs(C - a @ w) <= TOL_C * (k + 2) * U32 * (np.abs(a) @ np.abs(w)))


def test_special_halves_widen_exactly(isa):
    # ±0, subnormals, the largest half, ±inf: the product with 1 must come back unchanged.
    vals = np.array([0.0, -0.0, 6e-8, -6e-8, 6.1e-5, 65504.0, -65504.0, np.inf, -np.inf, 1.5, -2.75],
                    dtype=np.float16)
    W16 = brgemm.pack_b(vals[None, :], "f32f16")
    C = brgemm.gemm(np.ones((1, 1), np.float32), W16)
    np.testing.assert_array_equal(C[0], vals.astype(np.float32))
    nan = brgemm.gemm(np.ones((1, 1), np.float32), brgemm.pack_b(np.array([[np.nan]], np.float16), "f32f16"))
    assert np.isnan(nan[0, 0])
