"""Element-wise functions (the benchmark side of tests/test_eltwise.py), on one thread as the
bar asks: brgemm's ktanh against numpy's vectorised tanh, torch.tanh and a plain copy of the
same array (the memory-bandwidth floor), on 10⁶ and 10⁷ float32 values; the K-TanH
composites (the softmax family: bench_softmax.py). Ratios are peer time / brgemm time from the
same process; absolute times drift on a shared machine.
"""

import numpy as np

from brgemm.nn import functional as F

from .common import SEED_A, ThreadPin, import_torch, median_seconds, ratio

SIZES = {"1e6": 10 ** 6, "1e7": 10 ** 7}


class KTanh:
    """ns per element of ktanh, and np.tanh, torch.tanh and a copy relative to it."""

    params = [list(SIZES)]
    param_names = ["n"]

    def setup(self, n):
        torch = import_torch()
        self.pin = ThreadPin(1)
        rng = np.random.default_rng(SEED_A)
        self.n = SIZES[n]
        x = (rng.standard_normal(self.n) * 2).astype(np.float32)
        y = np.empty_like(x)
        self.fns = {"ktanh": lambda: F.ktanh(x, out=y), "np.tanh": lambda: np.tanh(x, out=y),
                    "copy": lambda: np.copyto(y, x), "kgelu": lambda: F.kgelu(x, out=y),
                    "ksigmoid": lambda: F.ksigmoid(x, out=y)}
        if torch is not None:
            tx, ty = torch.from_numpy(x), torch.from_numpy(y)
            self.fns["torch.tanh"] = lambda: torch.tanh(tx, out=ty)

    def teardown(self, n):
        self.pin.restore()

    def time_ktanh(self, n):
        self.fns["ktanh"]()

    def track_ns_per_element(self, n):
        return median_seconds({"ktanh": self.fns["ktanh"]})["ktanh"] / self.n * 1e9

    track_ns_per_element.unit = "ns"

    def _ratio(self, peer, ours="ktanh"):
        return ratio(self.fns, peer, ours)

    def track_ratio_vs_np_tanh(self, n):
        return self._ratio("np.tanh")

    def track_ratio_vs_torch_tanh(self, n):
        return self._ratio("torch.tanh")

    def track_ratio_vs_copy(self, n):
        return self._ratio("copy")

    def track_kgelu_ratio_vs_np_tanh(self, n):
        return self._ratio("np.tanh", "kgelu")

    for _f in (track_ratio_vs_np_tanh, track_ratio_vs_torch_tanh, track_ratio_vs_copy, track_kgelu_ratio_vs_np_tanh):
        _f.unit = "x"
