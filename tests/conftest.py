"""Fixtures shared by the brgemm tests.

- ``isa``: every ISA level in turn, forced with brgemm.set_isa and restored afterwards. A
  level this CPU or build lacks is *skipped* with the reason (``pytest -ra`` lists it); it
  is never silently passed.
- ``ukernel``: every microkernel of brgemm.ukernels() (the X-macro list), skipped with the
  reason when it cannot run here. While it runs, any ISA cap is lifted so that the kernel
  can be forced by name.
"""

import os

import numpy as np
import pytest

import brgemm
from brgemm import _core

ISA_LEVELS = ("scalar", "avx2", "avx512", "avx512_vnni", "avx512_bf16")
ALL_UKERNELS = brgemm.ukernels()
UKERNELS = [u for u in ALL_UKERNELS if u["dtype"] == "f32"]  # the f32 family (test_ukernels_f32.py)


def restore_isa():
    """Back to the session's state: the BRGEMM_ISA cap if one was set, else no cap."""
    brgemm.set_isa(os.environ.get("BRGEMM_ISA") or None)


def isa_unavailable_reason(level):
    """None if ``level`` can be forced here, else why not."""
    if level in brgemm.available_isas():
        return None
    built = _core.built_isas()
    if level not in built:
        return f"ISA {level}: left out of this build (built: {', '.join(built)})"
    return (f"ISA {level}: not supported by this CPU/OS (detected: {_core.detected_isa()})")


def ukernel_unavailable_reason(info):
    if info["available"]:
        return None
    return f"{info['name']}: " + (isa_unavailable_reason(info["isa"]) or "not available")


@pytest.fixture(params=ISA_LEVELS)
def isa(request):
    level = request.param
    why = isa_unavailable_reason(level)
    if why:
        pytest.skip(why)
    brgemm.set_isa(level)
    try:
        yield level
    finally:
        restore_isa()


def ukernel_params():
    """pytest.param per microkernel, id = its name (the name is the specification)."""
    return [pytest.param(u, id=u["name"]) for u in UKERNELS]


def require_ukernel(info):
    """Skips (with the reason) unless ``info``'s ukernel can run; lifts any ISA cap."""
    why = ukernel_unavailable_reason(info)
    if why:
        pytest.skip(why)
    brgemm.set_isa(None)


@pytest.fixture(params=ukernel_params())
def ukernel(request):
    info = request.param
    require_ukernel(info)
    try:
        yield info
    finally:
        restore_isa()


@pytest.fixture
def rng(request):
    """A generator seeded from the test's id: fixed across runs, different across tests."""
    import zlib

    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def threads_restored():
    """Restores brgemm's thread count after the test."""
    before = brgemm.get_num_threads()
    try:
        yield before
    finally:
        brgemm.set_num_threads(before)


def subprocess_env(**extra):
    """The environment for a child Python that must import this same brgemm."""
    import sys

    env = {k: v for k, v in os.environ.items() if k != "BRGEMM_ISA"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(brgemm.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in sys.path if p and os.path.isdir(p)])
    env.update(extra)
    return env
