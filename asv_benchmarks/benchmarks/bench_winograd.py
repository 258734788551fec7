"""Winograd convolution (the benchmark side of tests/test_winograd.py): brgemm.nn.Conv2d with
algorithm="winograd" on ResNet-50's 3×3 stride-1 layers at N = 1 and 16, forward and backward
data (∂x alone: the weight gradient stays direct), F(2×2) and F(4×4), 1 and all threads; blocked
arrays in and out, as a chain of layers runs. Tracked: ratios against our direct convolution
and against PyTorch's faster layout (NCHW or channels_last) in the same process, and the
forward's error against float64 relative to the output's magnitude. The bars (issue 21):
forward geomean ≥ 1.4× PyTorch and ≥ 1.4× direct, no layer below 1.1×; backward data geomean
≥ 1.2× direct; F(4×4) error ≤ 1e-3.
"""

import numpy as np

from brgemm import layout
from brgemm.bench import CONV_LAYERS, _conv_label, _torch_conv
from brgemm.nn import Conv2d

from .common import SEED_A, SEED_B, ThreadPin, cpu_count, import_torch, median_seconds

THREADS = sorted({1, cpu_count()})
LAYERS = {_conv_label(*layer): layer for layer in CONV_LAYERS if layer[3] == 3 and layer[4] == 1}
TILES = {"F(2x2,3x3)": "winograd2", "F(4x4,3x3)": "winograd4"}


class WinogradResNet50:
    params = [list(LAYERS), [1, 16], ["fwd", "bwd data"], list(TILES), THREADS]
    param_names = ["layer", "n", "pass", "tile", "threads"]

    def setup(self, layer, n, pass_, tile, threads):
        torch = import_torch()
        self.pin = ThreadPin(threads)
        c, k, h, r, _ = LAYERS[layer]
        rng = np.random.default_rng(SEED_A)
        x = rng.standard_normal((n, c, h, h), dtype=np.float32)
        self.x = x
        convs = {name: Conv2d(c, k, 3, 1, 1, seed=SEED_B, algorithm=algo)
                 for name, algo in (("brgemm", TILES[tile]), ("direct", "direct"))}
        self.convs = convs
        xb = layout.to_blocked(x)
        yb = np.empty((n, -(-k // convs["brgemm"].bk), h, h, convs["brgemm"].bk), np.float32)
        self.fns = {}
        if pass_ == "fwd":
            for name, conv in convs.items():
                conv.eval()
                self.fns[name] = (lambda conv_: lambda: conv_.forward(xb, out=yb))(conv)
            if torch is not None:
                self.fns.update(_torch_conv(torch, x, convs["direct"], "float32", None))
        else:
            gb = layout.to_blocked(rng.standard_normal((n, k, h, h), dtype=np.float32))
            gx = np.empty(xb.shape, np.float32)
            for name, conv in convs.items():
                conv.forward(xb, out=yb)
                # ∂x alone: the full backward minus its weight-gradient part
                self.fns[name] = (lambda conv_: lambda: conv_.backward(gb, out=gx))(conv)
                self.fns[name + " weights"] = (lambda conv_: lambda: conv_.backward(gb, input_grad=False))(conv)

    def teardown(self, layer, n, pass_, tile, threads):
        self.pin.restore()

    def time_winograd(self, layer, n, pass_, tile, threads):
        self.fns["brgemm"]()

    def _times(self):
        t = median_seconds(self.fns)
        if "brgemm weights" in t:  # backward data: subtract the weight gradient's share
            return {lib: t[lib] - t[lib + " weights"] for lib in ("brgemm", "direct")}
        return t

    def track_ratio_vs_direct(self, layer, n, pass_, tile, threads):
        t = self._times()
        return t["direct"] / t["brgemm"]

    track_ratio_vs_direct.unit = "x"

    def track_ratio_vs_torch(self, layer, n, pass_, tile, threads):
        """Forward only, against PyTorch's fastest layout."""
        if pass_ != "fwd" or len(self.fns) < 3:
            return float("nan")
        t = self._times()
        return min(v for lib, v in t.items() if lib.startswith("torch")) / t["brgemm"]

    track_ratio_vs_torch.unit = "x"

    def track_relative_error(self, layer, n, pass_, tile, threads):
        """max |y − y₆₄| / max |y₆₄| of the forward (no activation) on the first image."""
        if pass_ != "fwd" or threads != THREADS[-1]:
            return float("nan")
        conv = self.convs["brgemm"]
        x = self.x[:1]
        y = conv.forward(x).astype(np.float64)
        x64, w64 = x.astype(np.float64), conv.weight.astype(np.float64)
        xp = np.pad(x64, ((0, 0), (0, 0), (1, 1), (1, 1)))
        h = x.shape[2]
        ref = sum(np.einsum("nchw,kc->nkhw", xp[:, :, r:r + h, s:s + h], w64[:, :, r, s])
                  for r in range(3) for s in range(3)) + conv.bias[None, :, None, None]
        return float(np.abs(y - ref).max() / np.abs(ref).max())

    track_relative_error.unit = "relative"
