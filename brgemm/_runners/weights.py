"""PackedWeights: what a runner packed last, and the one check that packs again when it changed.

Weights are parameters the user may write at any time, in place or by assignment. A call first
asks whether they can have changed at all: the caller passes a ``version`` (brgemm.torch: the
tensors' identities and version counters, WeightsKey; brgemm.nn: the layer's OwnedArrays token,
which proves without reading the arrays that nothing can have written them), and the same
version as the last pack's skips everything. Otherwise the arrays are compared with what was
packed, exactly: the C++ layers keep that snapshot beside the packed copy and compare with a
parallel memcmp inside their ``refresh`` (one helper, layers/packed_weights.h; the f32 Linear
compares with its packed rows and keeps no copy), so for them ``pack`` is that ``refresh``; a
packing done in Python (the int8 Linear's ``pack_b``) keeps its copies here and compares them with
``_core.same_bytes``.
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
    """``refresh(*arrays, key=(...), version=None)`` calls ``pack(*arrays, *key)`` when the arrays
    (numpy or None) or the key's values (small values such as scales and zero points, compared
    with ==) differ from the last call's, and says whether it did. ``version``: see the module's
    docstring; equal to the last pack's (and not None), nothing is read or compared.
    ``core=True``: pack is a C++ layer's refresh, which compares its arguments with its own
    snapshot itself and says whether it packed."""

    def __init__(self, pack, core=False):
        self._pack, self._core = pack, core
        self._seen = None      # (copies of the arrays (None for None), key) of the last pack
        self._version = None   # (version, key) the packed copy is known to hold

    def current(self, version, key=()):
        """Whether the packed copy holds the arrays of ``version`` and ``key`` (so a call may skip
        refresh)."""
        return version is not None and self._version is not None and self._version == (version, key)

    def refresh(self, *arrays, key=(), version=None):
        if self.current(version, key):
            return False
        self._version = None   # until the pack below has finished
        if self._core:   # the C++ layer compares and packs in one call
            packed = self._pack(*arrays, *key)
        elif self._seen is not None and self._seen[1] == key and self._same(arrays):
            packed = False
        else:
            self._pack(*arrays, *key)
            self._seen = (tuple(None if a is None else np.array(a, order="C") for a in arrays), key)
            packed = True
        self._version = None if version is None else (version, key)
        return packed

    def forget(self):
        """Before a call that compares and packs by itself (a one-call C++ path)..."""
        self._version = None

    def mark(self, version, key=()):
        """... and after it: the packed copy holds ``version``."""
        self._version = None if version is None else (version, key)

    def _same(self, arrays):
        seen = self._seen[0]
        for a, s in zip(arrays, seen):
            if (a is None) != (s is None):
                return False
            if a is not None and (a.shape != s.shape or a.dtype != s.dtype or not a.flags.c_contiguous
                                  or not _core.same_bytes(s, a)):
                return False
        return True
