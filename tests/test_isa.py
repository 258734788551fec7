"""ISA levels: listing, capping with set_isa and BRGEMM_ISA (checked at import, in a child
process), the errors for unknown or unavailable levels; and the thread-count setting."""

import subprocess
import sys

import pytest

import brgemm
from brgemm import _core
from conftest import ISA_LEVELS, isa_unavailable_reason, restore_isa, subprocess_env


def test_available_isas_ascending_from_scalar():
    levels = brgemm.available_isas()
    assert levels[0] == "scalar"
    # Levels are cumulative: what is available is a prefix of the ordered list.
    assert levels == list(ISA_LEVELS[:len(levels)])
    detected = _core.detected_isa()
    built = _core.built_isas()
    assert built == list(ISA_LEVELS[:len(built)])
    assert levels == list(ISA_LEVELS[:min(ISA_LEVELS.index(detected), len(built) - 1) + 1])


def test_isa_after_set_isa(isa):
    assert brgemm.isa() == isa
    assert brgemm.Kernel(3, 3, 3).isa in ISA_LEVELS[:ISA_LEVELS.index(isa) + 1]


def test_set_isa_none_removes_the_cap():
    try:
        brgemm.set_isa("scalar")
        assert brgemm.isa() == "scalar"
        brgemm.set_isa(None)
        assert brgemm.isa() == brgemm.available_isas()[-1]
    finally:
        restore_isa()


@pytest.mark.parametrize("name", ["foo", "", "AVX2", "avx512f", "sse4", " scalar"])
def test_set_isa_unknown_name(name):
    before = brgemm.isa()
    with pytest.raises(ValueError, match=f"unknown ISA '{name}'") as info:
        brgemm.set_isa(name)
    for level in brgemm.available_isas():  # the message lists what is available
        assert level in str(info.value)
    assert brgemm.isa() == before  # a failed set_isa changes nothing


@pytest.mark.parametrize("name", [3, b"avx2", ["avx2"]])
def test_set_isa_wrong_type(name):
    with pytest.raises(TypeError, match="set_isa"):
        brgemm.set_isa(name)


def _unavailable_levels():
    levels = [lvl for lvl in ISA_LEVELS if isa_unavailable_reason(lvl)]
    if not levels:
        pytest.skip(f"this CPU and build have every ISA level (detected {_core.detected_isa()}, "
                    f"built {', '.join(_core.built_isas())}): no unavailable level to refuse")
    return levels


def test_set_isa_unavailable_level():
    """A level above what the CPU supports (or the build holds) is refused, listing what is
    available, and leaves the active level as it was."""
    before = brgemm.isa()
    for level in _unavailable_levels():
        with pytest.raises(ValueError, match=f"ISA '{level}'") as info:
            brgemm.set_isa(level)
        assert "available: " + ", ".join(brgemm.available_isas()) in str(info.value)
        assert brgemm.isa() == before


# --- BRGEMM_ISA, checked at import -------------------------------------------------------------

def _child(code, **env):
    return subprocess.run([sys.executable, "-c", code], env=subprocess_env(**env),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("level", ISA_LEVELS)
def test_env_var_valid_level(level):
    why = isa_unavailable_reason(level)
    if why:
        pytest.skip(why)
    r = _child("import brgemm; print(brgemm.isa()); print(brgemm.Kernel(5, 5, 5).isa)",
               BRGEMM_ISA=level)
    assert r.returncode == 0, r.stderr
    active, kernel_isa = r.stdout.split()
    assert active == level
    assert ISA_LEVELS.index(kernel_isa) <= ISA_LEVELS.index(level)


def test_env_var_empty_means_no_cap():
    r = _child("import brgemm; print(brgemm.isa())", BRGEMM_ISA="")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [brgemm.available_isas()[-1]]


@pytest.mark.parametrize("value", ["foo", "AVX512", "avx3"])
def test_env_var_unknown_level_fails_at_import(value):
    r = _child("import brgemm", BRGEMM_ISA=value)
    assert r.returncode != 0
    assert "ValueError" in r.stderr and "BRGEMM_ISA" in r.stderr and repr(value) in r.stderr


def test_env_var_unavailable_level_fails_at_import():
    for level in _unavailable_levels():
        r = _child("import brgemm", BRGEMM_ISA=level)
        assert r.returncode != 0
        assert "ValueError" in r.stderr and "BRGEMM_ISA" in r.stderr and repr(level) in r.stderr


# --- threads ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n, exc", [(0, ValueError), (-1, ValueError), (-(2 ** 20), ValueError),
                                    (1.5, TypeError), ("2", TypeError), (None, TypeError)])
def test_set_num_threads_rejects(threads_restored, n, exc):
    with pytest.raises(exc, match=r"\bn\b|set_num_threads"):
        brgemm.set_num_threads(n)
    assert brgemm.get_num_threads() == threads_restored


@pytest.mark.parametrize("n", [1, 2, 3, 8])
def test_set_num_threads_roundtrip(threads_restored, n):
    brgemm.set_num_threads(n)
    assert brgemm.get_num_threads() == n
