"""Scratch: a runner's blocked arrays, kept between calls (allocating and touching fresh memory
costs ≈ 0.5 ms per MB here), and which tensor each blocked copy holds.

``holds`` lets brgemm.torch's backward find the forward's blocked input and output instead of
converting them again: it maps a scratch array's name to the identity of the tensor copied into
it (torch's (data_ptr, _version, shape, dtype), see brgemm/torch/_bridge.py)."""

import numpy as np


class Scratch:
    def __init__(self, limit):
        self._arrays, self.holds = {}, {}
        self._limit = limit   # a few shapes in rotation, not every shape ever seen

    def get(self, name, shape, dtype):
        """The array called ``name`` of this shape and np.dtype (contents undefined)."""
        key = (name, shape, dtype)
        a = self._arrays.get(key)
        if a is None:
            if len(self._arrays) > self._limit:
                self._arrays.clear()
                self.holds.clear()
            a = self._arrays[key] = np.empty(shape, dtype)
            self.holds.pop(name, None)
        return a

    def fill(self, name, a, fill, key=None, reuse=False):
        """fill(a), unless ``reuse`` and ``a`` holds the tensor of identity ``key`` already. Only
        a backward may reuse: its tensors were saved by the forward that recorded them and lived
        since, so no other tensor can have had their identity; a forward's input may sit where a
        freed one was, with the same shape and version."""
        if reuse and key is not None and self.holds.get(name) == key:
            return
        self.holds[name] = None   # while filling
        fill(a)
        self.holds[name] = key
