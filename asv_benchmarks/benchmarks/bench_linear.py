"""Fully-connected layers (the benchmark side of tests/test_linear.py): brgemm.nn.Linear forward
and the 3-layer MLP (1024 wide, N = 256, ReLU) forward and training step, float32 and bfloat16,
1 and all threads, against PyTorch in the same process (bf16 there is autocast: f32 master
weights, bf16 products, as ours). Tracked: GFLOP/s, % of the measured peak, and ratios (peer
time / brgemm time). The bars: the f32 training step on 2 threads ≥ 1.5× PyTorch; Linear bf16
forward at (256, 4096, 4096) ≥ 1.7× our float32 layer.
"""

import ml_dtypes
import numpy as np

from brgemm.bench import MLP_BATCH, MLP_SIZES, _torch_mlp
from brgemm.nn import MLP, Linear

from .common import SEED_A, SEED_B, ThreadPin, cpu_count, import_torch, median_seconds, percent_of_peak

THREADS = sorted({1, cpu_count()})
PEAK_OP = {"float32": "fma_f32", "bfloat16": "dot_bf16"}


def _out_dtype(dtype):
    return np.float32 if dtype == "float32" else ml_dtypes.bfloat16


class LinearForward:
    """Linear(in, out) forward in eval mode (bias fused), out= preallocated on both sides."""

    params = [["float32", "bfloat16"], ["256x1024x1024", "256x4096x4096"], THREADS]
    param_names = ["dtype", "shape", "threads"]

    def setup(self, dtype, shape, threads):
        torch = import_torch()
        self.pin = ThreadPin(threads)
        n, c, k = map(int, shape.split("x"))
        self.flops = 2 * n * c * k
        rng = np.random.default_rng(SEED_A)
        x = rng.standard_normal((n, c), dtype=np.float32)
        self.fns = {}
        for dt in ("float32", dtype):  # our float32 layer too: the bf16 bar is against it
            lin = Linear(c, k, dtype=dt, seed=SEED_B).eval()
            xin, y = x.astype(_out_dtype(dt)), np.empty((n, k), _out_dtype(dt))
            self.fns[f"brgemm_{dt}"] = lambda lin=lin, xin=xin, y=y: lin.forward(xin, out=y)
        if torch is not None:
            tdt = torch.float32 if dtype == "float32" else torch.bfloat16
            tw = torch.from_numpy(lin.weight).to(tdt)
            tb, tx, ty = torch.from_numpy(lin.bias).to(tdt), torch.from_numpy(x).to(tdt), torch.empty((n, k), dtype=tdt)
            self.fns["torch"] = lambda: torch.addmm(tb, tx, tw.t(), out=ty)
        self.ours = f"brgemm_{dtype}"

    def teardown(self, dtype, shape, threads):
        self.pin.restore()

    def time_forward(self, dtype, shape, threads):
        self.fns[self.ours]()

    def track_percent_of_peak(self, dtype, shape, threads):
        t = median_seconds({self.ours: self.fns[self.ours]})[self.ours]
        return percent_of_peak(self.flops / t * 1e-9, threads, PEAK_OP[dtype])

    track_percent_of_peak.unit = "%"

    def track_ratio_vs_torch(self, dtype, shape, threads):
        if "torch" not in self.fns:
            return float("nan")
        t = median_seconds({self.ours: self.fns[self.ours], "torch": self.fns["torch"]})
        return t["torch"] / t[self.ours]

    def track_ratio_vs_our_float32(self, dtype, shape, threads):
        if dtype == "float32":
            raise NotImplementedError  # float32 against itself
        t = median_seconds({k: self.fns[k] for k in (self.ours, "brgemm_float32")})
        return t["brgemm_float32"] / t[self.ours]

    for _f in (track_ratio_vs_torch, track_ratio_vs_our_float32):
        _f.unit = "x"


class MLPStep:
    """The 3-layer MLP: forward (eval) and a training step (forward, backward without the input's
    gradient, SGD, zero_grad), as GFLOP/s and against PyTorch doing the same."""

    params = [["float32", "bfloat16"], ["forward", "train_step"], THREADS]
    param_names = ["dtype", "case", "threads"]

    def setup(self, dtype, case, threads):
        torch = import_torch()
        self.pin = ThreadPin(threads)
        n, sizes = MLP_BATCH, MLP_SIZES
        rng = np.random.default_rng(SEED_A)
        x = rng.standard_normal((n, sizes[0]), dtype=np.float32)
        g = rng.standard_normal((n, sizes[-1]), dtype=np.float32) * 1e-3
        mlp = MLP(sizes, activation="relu", dtype=dtype, seed=SEED_B)
        y = np.empty((n, sizes[-1]), _out_dtype(dtype))
        layer_flops = sum(2 * n * sizes[i] * sizes[i + 1] for i in range(len(sizes) - 1))
        if case == "forward":
            self.flops = layer_flops
            self.fns = {"brgemm": lambda: mlp.eval().forward(x, out=y)}
        else:
            self.flops = 3 * layer_flops - 2 * n * sizes[0] * sizes[1]  # no gradient for x

            def step():
                mlp.train().forward(x, out=y)
                mlp.backward(g, input_grad=False)
                mlp.apply_sgd(1e-6)
                mlp.zero_grad()
            self.fns = {"brgemm": step}
        if torch is not None:
            self.fns["torch"] = _torch_mlp(torch, sizes, dtype, x, g)[case == "train_step"]

    def teardown(self, dtype, case, threads):
        self.pin.restore()

    def time_mlp(self, dtype, case, threads):
        self.fns["brgemm"]()

    def track_gflops(self, dtype, case, threads):
        return self.flops / median_seconds({"brgemm": self.fns["brgemm"]})["brgemm"] * 1e-9

    track_gflops.unit = "GFLOP/s"

    def track_ratio_vs_torch(self, dtype, case, threads):
        if "torch" not in self.fns:
            return float("nan")
        t = median_seconds(self.fns)
        return t["torch"] / t["brgemm"]

    track_ratio_vs_torch.unit = "x"
