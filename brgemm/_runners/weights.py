"""PackedWeights: what a runner packed last, and the one check that packs again when it changed.

Weights are parameters the user may write at any time, in place or by assignment, so every
call compares them with what was packed (exactly: no version counter sees a write through a
numpy view). The C++ layers keep that snapshot beside the packed copy and compare with a
parallel memcmp inside their ``refresh`` (one helper, layers/packed_weights.h; the f32 Linear
compares with its packed rows and keeps no copy), so for them ``pack`` is that ``refresh``; a packing done in Python (the int8
Linear's ``pack_b``) keeps its copies here and compares them with ``_core.same_bytes``.
"""

import weakref

import numpy as np

from .. import _core


class WeightsKey:
    """Equal to an earlier key when it names the very same tensor objects (alive since: weak
    references) at the same version counters, i.e. when nothing was written into them since."""

    __slots__ = ("_refs", "_versions")

    def __init__(self, *tensors):
        self._refs = tuple(None if t is None else weakref.ref(t) for t in tensors)
        self._versions = tuple(None if t is None else t._version for t in tensors)

    def __eq__(self, other):
        if not isinstance(other, WeightsKey) or self._versions != other._versions:
            return False
        for a, b in zip(self._refs, other._refs):
            if (a is None) != (b is None) or (a is not None and (a() is None or a() is not b())):
                return False
        return True

    __hash__ = None


class PackedWeights:
    """``refresh(*arrays, key=(...))`` calls ``pack(*arrays, *key)`` when the arrays (numpy or
    None) or the key's values (small values such as scales and zero points, compared with ==)
    differ from the last call's, and says whether it did. ``core=True``: pack is a C++ layer's
    refresh, which compares its arguments with its own snapshot itself and says whether it
    packed."""

    def __init__(self, pack, core=False):
        self._pack, self._core = pack, core
        self._seen = None   # (copies of the arrays (None for None), key) of the last pack

    def refresh(self, *arrays, key=()):
        if self._core:   # the C++ layer compares and packs in one call
            return self._pack(*arrays, *key)
        if self._seen is not None and self._seen[1] == key and self._same(arrays):
            return False
        self._pack(*arrays, *key)
        self._seen = (tuple(None if a is None else np.array(a, order="C") for a in arrays), key)
        return True

    def _same(self, arrays):
        seen = self._seen[0]
        for a, s in zip(arrays, seen):
            if (a is None) != (s is None):
                return False
            if a is not None and (a.shape != s.shape or a.dtype != s.dtype or not a.flags.c_contiguous
                                  or not _core.same_bytes(s, a)):
                return False
        return True
