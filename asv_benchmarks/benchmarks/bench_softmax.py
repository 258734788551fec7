"""The softmax family (the benchmark side of tests/test_softmax.py): exact and Taylor (order 2)
softmax over the rows of a 1000 x 1000 array, forward and backward, float32 and bfloat16, on 1
and 2 threads, against torch.softmax (and its backward) and a plain copy of the same array (the
memory-bandwidth floor). Ratios are peer time / brgemm time from the same process; absolute
times drift on a shared machine.
"""

import numpy as np

from brgemm.nn import functional as F

from .common import SEED_A, ThreadPin, import_torch, ratio


class Softmax:
    """The softmax family over the rows of a 1000 x 1000 array, forward and backward, float32
    and bfloat16, on 1 and 2 threads: brgemm's time, and torch.softmax's (its backward for the
    backward rows; PyTorch has no Taylor softmax) and a plain copy of the same array (the memory
    floor) relative to it."""

    params = [["exact", "taylor2"], ["forward", "backward"], ["float32", "bfloat16"], [1, 2]]
    param_names = ["kind", "direction", "dtype", "threads"]

    def setup(self, kind, direction, dtype, threads):
        import ml_dtypes
        torch = import_torch()
        self.pin = ThreadPin(threads)
        rng = np.random.default_rng(SEED_A)
        npt = np.float32 if dtype == "float32" else ml_dtypes.bfloat16
        x32 = (rng.standard_normal((1000, 1000)) * 2).astype(np.float32)
        g32 = rng.standard_normal((1000, 1000)).astype(np.float32)
        x, g = x32.astype(npt), g32.astype(npt)
        y, out = F.softmax(x), np.empty_like(x)
        ours = {("exact", "forward"): lambda: F.softmax(x), ("taylor2", "forward"): lambda: F.taylor_softmax(x),
                ("exact", "backward"): lambda: F.softmax_backward(g, y),
                ("taylor2", "backward"): lambda: F.taylor_softmax_backward(g, x)}
        self.fns = {"brgemm": ours[kind, direction], "copy": lambda: np.copyto(out, x)}
        if torch is not None:
            tdt = torch.float32 if dtype == "float32" else torch.bfloat16
            tx, tg = torch.from_numpy(x32).to(tdt), torch.from_numpy(g32).to(tdt)
            ty = torch.softmax(tx, -1)
            self.fns["torch"] = (lambda: torch.softmax(tx, -1)) if direction == "forward" else \
                (lambda: torch._softmax_backward_data(tg, ty, -1, tdt))

    def teardown(self, kind, direction, dtype, threads):
        self.pin.restore()

    def time_softmax(self, kind, direction, dtype, threads):
        self.fns["brgemm"]()

    def track_ratio_vs_torch(self, kind, direction, dtype, threads):
        return ratio(self.fns, "torch")

    def track_ratio_vs_copy(self, kind, direction, dtype, threads):
        return ratio(self.fns, "copy")

    track_ratio_vs_torch.unit = "x"
    track_ratio_vs_copy.unit = "x"
