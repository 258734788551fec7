"""brgemm: one batch-reduce GEMM microkernel for CPUs, and everything built on it.

    C[M×N] = beta·C + Σ_i A_i[M×K] · B_i[K×N]

The C++ core lives in ``brgemm._core``; this package re-exports it with Python signatures.
Set ``BRGEMM_ISA`` (scalar, avx2, avx512, avx512_vnni, avx512_bf16) to cap the instruction
set; an unknown or unsupported value fails here, at import, so a run never silently falls
back to another path.
"""

import os as _os

from . import _core, dfp, layout, nn
from ._api import Epilogue, Kernel, PackedB, batch_reduce, gemm, pack_b, ukernels
from ._core import available_isas, get_num_threads, set_num_threads

try:
    from importlib.metadata import version as _version

    __version__ = _version("brgemm")
except Exception:  # running from a source tree that was never installed
    __version__ = "0+unknown"


def isa():
    """The active ISA level's name: the best available one, or the cap set by set_isa."""
    return _core.isa()


def set_isa(name):
    """Cap the ISA level at ``name`` (None removes the cap).

    Raises ValueError for an unknown name or a level this CPU or build lacks; the message
    lists what is available.
    """
    _core.set_isa(name)


_env_isa = _os.environ.get("BRGEMM_ISA")
if _env_isa:
    try:
        set_isa(_env_isa)
    except ValueError as e:
        raise ValueError(f"BRGEMM_ISA={_env_isa!r}: {e}") from None

__all__ = [
    "Epilogue", "Kernel", "PackedB", "batch_reduce", "gemm", "pack_b", "ukernels",
    "isa", "set_isa", "available_isas", "set_num_threads", "get_num_threads", "nn", "dfp",
]
