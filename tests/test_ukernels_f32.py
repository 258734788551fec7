"""Every f32 microkernel, called directly by name, over the named sweep (tests/shapes.py)
against the float64 oracle (brgemm.testing); dispatch under every forced ISA; and every
ISA's kernels agreeing with the scalar reference twin on the same inputs."""

import re

import numpy as np
import pytest

import brgemm
from brgemm.testing import assert_agree, make_problem
from conftest import ISA_LEVELS, UKERNELS, require_ukernel, restore_isa
from shapes import representative, sweep


def _sweep_params():
    params = []
    for u in UKERNELS:
        for case in sweep(u["mr"], u["nr"]):
            params.append(pytest.param(u, case, id=f"{u['name']}-{case.id}"))
    return params


@pytest.fixture
def isa_restored():
    """Restores the session's ISA cap after a test that lifted it (require_ukernel)."""
    yield
    restore_isa()


@pytest.mark.parametrize("info, case", _sweep_params())
def test_ukernel_sweep(info, case, rng, isa_restored):
    require_ukernel(info)
    p = make_problem(case.m, case.n, case.k, rng=rng, **case.problem_kwargs())
    kernel = brgemm.Kernel(case.m, case.n, case.k, ukernel=info["name"], **p.kernel_kwargs())
    assert kernel.name == info["name"]
    assert (kernel.mr, kernel.nr, kernel.isa) == (info["mr"], info["nr"], info["isa"])
    assert p.run(kernel) is p.c  # returns C, written in place
    p.check()
    if case.c_fill == "nan":
        assert np.isfinite(p.c_window()).all()


def test_ukernel_names_are_their_specification():
    assert UKERNELS, "the build has no microkernels"
    assert UKERNELS[0]["isa"] == "scalar", "the reference ukernel comes first"
    levels = [ISA_LEVELS.index(u["isa"]) for u in UKERNELS]
    assert levels == sorted(levels), "ukernels are listed in ascending ISA order"
    names = [u["name"] for u in UKERNELS]
    assert len(names) == len(set(names))
    available = set(brgemm.available_isas())
    for u in UKERNELS:
        assert u["name"] == f"ukernel_{u['dtype']}_{u['mr']}x{u['nr']}__{u['isa']}"
        assert re.fullmatch(r"ukernel_f32_\d+x\d+__[a-z0-9_]+", u["name"])
        assert u["available"] == (u["isa"] in available)


def _expected_dispatch(level):
    """The ukernel dispatch must pick under ``level``: the first one listed of the highest
    ISA at or below it."""
    cap = ISA_LEVELS.index(level)
    usable = [u for u in UKERNELS if ISA_LEVELS.index(u["isa"]) <= cap and u["available"]]
    best = max(ISA_LEVELS.index(u["isa"]) for u in usable)
    return next(u for u in usable if ISA_LEVELS.index(u["isa"]) == best)


@pytest.mark.parametrize("batch", ["stride", "offset", "address"])
def test_dispatch_under_forced_isa(isa, batch, rng):
    assert brgemm.isa() == isa
    kernel = brgemm.Kernel(9, 21, 5, batch=batch)
    assert ISA_LEVELS.index(kernel.isa) <= ISA_LEVELS.index(isa)
    want = _expected_dispatch(isa)
    assert kernel.name == want["name"]
    assert (kernel.mr, kernel.nr) == (want["mr"], want["nr"])
    # The dispatched kernel computes correctly too.
    p = make_problem(9, 21, 5, rng=rng, batch=batch, count=2, beta=0.5)
    p.run(brgemm.Kernel(9, 21, 5, **p.kernel_kwargs()))
    p.check()


def test_forcing_a_ukernel_above_the_active_isa_fails(isa):
    above = [u for u in UKERNELS if ISA_LEVELS.index(u["isa"]) > ISA_LEVELS.index(isa)]
    if not above:
        pytest.skip(f"no ukernel above {isa} in this build")
    for u in above:
        with pytest.raises(ValueError, match=rf"ukernel '{u['name']}' needs ISA {u['isa']}"):
            brgemm.Kernel(4, 4, 4, ukernel=u["name"])
    # At or below the active level, forcing works.
    for u in UKERNELS:
        if ISA_LEVELS.index(u["isa"]) <= ISA_LEVELS.index(isa):
            assert brgemm.Kernel(4, 4, 4, ukernel=u["name"]).name == u["name"]


def _agreement_params():
    params = []
    for u in UKERNELS[1:]:
        for case in representative(u["mr"], u["nr"]):
            params.append(pytest.param(u, case, id=f"{u['name']}-{case.id}"))
    return params


@pytest.mark.parametrize("info, case", _agreement_params())
def test_ukernel_agrees_with_scalar_twin(info, case, rng, isa_restored):
    """The same inputs through the scalar reference ukernel and through this one."""
    require_ukernel(info)
    ref_info = UKERNELS[0]
    p = make_problem(case.m, case.n, case.k, rng=rng, **case.problem_kwargs())
    c_ref = p.fresh_c()
    ref_kernel = brgemm.Kernel(case.m, case.n, case.k, ukernel=ref_info["name"], **p.kernel_kwargs())
    kernel = brgemm.Kernel(case.m, case.n, case.k, ukernel=info["name"], **p.kernel_kwargs())
    assert kernel.handle != ref_kernel.handle
    p.run(ref_kernel, c_ref)
    p.run(kernel)
    p.check(c_ref, what=ref_info["name"])
    p.check(what=info["name"])
    assert_agree(p.c_window(), p.c_window(c_ref), p.a_blocks, p.b_blocks, p.c0_window(), p.beta,
                 what=f"{info['name']} and {ref_info['name']}")


@pytest.mark.parametrize("batch", ["stride", "offset", "address"])
def test_isa_agrees_with_scalar(isa, batch):
    """Dispatch under ``isa`` and under scalar on the same inputs: both within the bound of
    the exact result, so within twice the bound of each other."""
    rng = np.random.default_rng(20240611)  # the same inputs for every ISA
    p = make_problem(23, 77, 37, rng=rng, batch=batch, count=3, lda=41, ldb=80, ldc=79, beta=0.5)
    results = {}
    for level in (isa, "scalar"):
        brgemm.set_isa(level)  # the fixture restores the session's cap afterwards
        c = p.fresh_c()
        kernel = brgemm.Kernel(p.m, p.n, p.k, **p.kernel_kwargs())
        assert p.run(kernel, c) is c
        p.check(c, what=f"{kernel.name} under {level}")
        results[level] = p.c_window(c)
    assert_agree(results[isa], results["scalar"], p.a_blocks, p.b_blocks, p.c0_window(), p.beta,
                 what=f"{isa} and scalar")
