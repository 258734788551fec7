"""Dropout (the benchmark side of tests/test_dropout.py): brgemm.nn.functional.dropout on the
activations of the LSTM language model's layers (T·N × H = 700 × 650 float32) and on a 4096 x
4096 array, p = 0.5, on 1 and 2 threads, against torch.nn.functional.dropout in training mode
and a plain copy of the same array (the memory-bandwidth floor). Ratios are peer time / brgemm
time from the same process; absolute times drift on a shared machine.
"""

import numpy as np

from brgemm.nn import functional as F

from .common import SEED_A, ThreadPin, import_torch, ratio


class Dropout:
    """Dropout of a float32 array at p = 0.5: brgemm's time, and PyTorch's (training mode) and a
    plain copy's relative to it."""

    params = [["700x650", "4096x4096"], [1, 2]]
    param_names = ["shape", "threads"]

    def setup(self, shape, threads):
        torch = import_torch()
        self.pin = ThreadPin(threads)
        rows, cols = (int(v) for v in shape.split("x"))
        x = np.random.default_rng(SEED_A).standard_normal((rows, cols)).astype(np.float32)
        out = np.empty_like(x)
        self.fns = {"brgemm": lambda: F.dropout(x, 0.5, 1234, out=out), "copy": lambda: np.copyto(out, x)}
        if torch is not None:
            tx = torch.from_numpy(x)
            self.fns["torch"] = lambda: torch.nn.functional.dropout(tx, 0.5, True)

    def teardown(self, shape, threads):
        self.pin.restore()

    def time_dropout(self, shape, threads):
        self.fns["brgemm"]()

    def track_ratio_vs_torch(self, shape, threads):
        return ratio(self.fns, "torch")

    def track_ratio_vs_copy(self, shape, threads):
        return ratio(self.fns, "copy")

    track_ratio_vs_torch.unit = "x"
    track_ratio_vs_copy.unit = "x"
