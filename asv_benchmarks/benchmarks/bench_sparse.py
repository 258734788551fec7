"""Compressed weights (the benchmark side of tests/test_pruning.py and tests/test_sharing.py).

Block-sparse (pruned) Linear: 4096 → 4096, N = 64,
float32, pruned in 64 × 64 blocks by brgemm.nn.Linear.prune, forward at 50/75/90 % and a training
step at 90 %, 1 and all threads. Tracked: ratios (other time / ours) to our dense packing of the
same weights, to PyTorch's dense F.linear and to PyTorch's BSR product of the same matrix (forward),
and % of the measured peak counting only the kept blocks' FLOPs. Bars: forward ≥ 5× our dense at
90 %, ≥ 2.5× at 75 %, ≥ 2× PyTorch BSR; training step ≥ 3× dense at 90 % (2 threads).

Block-sparse Conv2d: 256 → 256, 3 × 3 on 14 × 14, N = 16, float32, pruned in (bk × bc, all taps)
blocks by brgemm.nn.Conv2d.prune, forward at 75/90 %: ratios to our dense packing of the same
weights and to PyTorch's conv2d, % of peak counting the kept weights' FLOPs.

Block-sparse LSTM training step: 512 → 512, T = 20, N = 64, float32, 75/90 % of the (16 units ×
4 gates, 64 inputs) blocks of W_ih and W_hh pruned (prune(·, block="gates"), bench.sparse.pruned_lstm):
forward, backward data and weight gradient over the kept blocks; ratios to our dense packing of
the same weights and masks and to torch.nn.LSTM, % of peak counting the kept weights' FLOPs.

GEMV 1 × 8192 → 8192 on b-bit shared weights (codebook panels), one thread: ratio to our GEMV on
float16 weights (bar at 4 bits: ≥ 2×).

GEMV 1 × 8192 → 8192 on ternary weights with 1-3 levels (brgemm.nn.TernaryLinear, u8 activations,
2 bits per weight and level), one thread: ratio to our int8-weight GEMV (QuantizedLinear at N = 1;
bar at 1 level: ≥ 2×).

Ternary Conv2d 64 → 64, 3 × 3 padding 1 on 28 × 28, N = 1, 1 and 3 dense levels
(brgemm.nn.TernaryConv2d, the benchmark side of tests/test_ternary_conv.py), one thread: ratio to
our int8 QuantizedConv2d of the same float weights (no bar: compute-bound, where ternary weights
save multiplies, not time, on this path).
"""

import warnings

import numpy as np

from brgemm import gemm, pack_b
from brgemm.bench import SHARED_BITS, SHARED_GEMV, SPARSE_SHAPE, TERNARY_LEVELS
from brgemm.bench.sparse import (CONV_SHAPE, CONV_SPARSITIES, RNN_SHAPE, RNN_SPARSITIES, pruned_lstm,
                                 ternary_gemv_layers)
from brgemm.nn import Conv2d, Linear
from brgemm.quant import pack_shared

from .common import SEED_A, SEED_B, ThreadPin, cpu_count, import_torch, median_seconds, percent_of_peak, ratio

THREADS = sorted({1, cpu_count()})


def _layer(sparsity, packing):
    _, c, k = SPARSE_SHAPE
    lin = Linear(c, k, seed=SEED_B)
    if sparsity:
        lin.prune(sparsity)
    lin.packing = packing
    return lin


class _Compared:
    """What both block-sparse classes time and report: brgemm's call, its % of the peak (of the
    kept blocks' FLOPs) and its ratios to the other entries of self.fns."""

    def teardown(self, *params):
        self.pin.restore()

    def time_sparse(self, *params):
        self.fns["brgemm"]()

    def track_percent_of_peak(self, *params):
        t = median_seconds({"brgemm": self.fns["brgemm"]})["brgemm"]
        return percent_of_peak(self.flops / t * 1e-9, params[-1])

    track_percent_of_peak.unit = "%"

    def _ratio(self, other):
        return ratio(self.fns, other)

    def track_ratio_vs_our_dense(self, *params):
        return self._ratio("brgemm_dense")

    def track_ratio_vs_torch(self, *params):
        return self._ratio("torch")

    for _f in (track_ratio_vs_our_dense, track_ratio_vs_torch):
        _f.unit = "x"


class SparseLinear(_Compared):
    params = [["forward", "train_step"], [0.5, 0.75, 0.9], THREADS]
    param_names = ["case", "sparsity", "threads"]

    def setup(self, case, sparsity, threads):
        if case == "train_step" and sparsity != 0.9:
            raise NotImplementedError  # the training step is tracked at 90 % only
        torch = import_torch()
        self.pin = ThreadPin(threads)
        n, c, k = SPARSE_SHAPE
        rng = np.random.default_rng(SEED_A)
        x = rng.standard_normal((n, c), dtype=np.float32)
        g = rng.standard_normal((n, k), dtype=np.float32) * 1e-3
        # our dense layer: the same weights packed dense (forward), unpruned (training step: a
        # pruned layer packed dense already skips the masked blocks' gradient and update)
        layers = {"brgemm": _layer(sparsity, "auto"),
                  "brgemm_dense": _layer(sparsity if case == "forward" else 0.0, "dense")}
        kept = int(np.count_nonzero(layers["brgemm"].mask))
        self.fns = {}
        if case == "forward":
            self.flops = 2 * n * kept
            for name, lin in layers.items():
                y = np.empty((n, k), np.float32)
                self.fns[name] = lambda lin=lin.eval(), y=y: lin.forward(x, out=y)
            if torch is not None:
                w = torch.from_numpy(layers["brgemm"].weight.copy())
                b, xt = torch.from_numpy(layers["brgemm"].bias.copy()), torch.from_numpy(x)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    bsr = w.to_sparse_bsr((64, 64))
                self.fns["torch"] = lambda: torch.nn.functional.linear(xt, w, b)
                self.fns["torch_bsr"] = lambda: torch.nn.functional.linear(xt, bsr, b)
        else:
            self.flops = 3 * 2 * n * kept

            def step(lin):
                lin.forward(x)
                lin.backward(g)
                lin.apply_sgd(1e-6)
                lin.zero_grad()
            for name, lin in layers.items():
                self.fns[name] = lambda lin=lin: step(lin)

    def track_ratio_vs_torch_bsr(self, case, sparsity, threads):
        return self._ratio("torch_bsr")

    track_ratio_vs_torch_bsr.unit = "x"


class SparseConv2d(_Compared):
    params = [list(CONV_SPARSITIES), THREADS]
    param_names = ["sparsity", "threads"]

    def setup(self, sparsity, threads):
        torch = import_torch()
        self.pin = ThreadPin(threads)
        n, c, k, hw = CONV_SHAPE
        x = np.random.default_rng(SEED_A).standard_normal((n, c, hw, hw), dtype=np.float32)
        self.fns = {}
        for name, packing in (("brgemm", "auto"), ("brgemm_dense", "dense")):
            conv = Conv2d(c, k, 3, padding=1, seed=SEED_B, algorithm="direct")
            conv.prune(sparsity)
            conv.packing = packing
            y = np.empty((n, k, hw, hw), np.float32)
            self.fns[name] = lambda conv=conv.eval(), y=y: conv.forward(x, out=y)
        self.flops = 2 * n * hw * hw * int(np.count_nonzero(conv.mask))
        if torch is not None:
            xt, wt, bt = torch.from_numpy(x), torch.from_numpy(conv.weight.copy()), torch.from_numpy(conv.bias.copy())
            self.fns["torch"] = lambda: torch.nn.functional.conv2d(xt, wt, bt, padding=1)




class SparseLSTM(_Compared):
    params = [list(RNN_SPARSITIES), THREADS]
    param_names = ["sparsity", "threads"]

    def setup(self, sparsity, threads):
        torch = import_torch()
        self.pin = ThreadPin(threads)
        h, i, t, n = RNN_SHAPE
        rng = np.random.default_rng(SEED_A)
        x = rng.standard_normal((t, n, i), dtype=np.float32)
        g = rng.standard_normal((t, n, h), dtype=np.float32)

        def step(lstm):
            lstm.zero_grad()
            lstm(x)
            lstm.backward(g)
        self.fns = {}
        for name, packing in (("brgemm", "auto"), ("brgemm_dense", "dense")):
            lstm = pruned_lstm(sparsity, packing, seed=SEED_B)
            self.fns[name] = lambda lstm=lstm: step(lstm)
        self.flops = 3 * 2 * t * n * sum(int(np.count_nonzero(m)) for m in lstm.mask.values())
        if torch is not None:
            tm = torch.nn.LSTM(i, h)
            with torch.no_grad():
                for name, v in lstm.parameters().items():
                    getattr(tm, name).copy_(torch.from_numpy(v))
            xt, gt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(g)

            def torch_step():
                tm.zero_grad()
                tm(xt)[0].backward(gt)
            self.fns["torch"] = torch_step


class SharedGEMV:
    params = [list(SHARED_BITS)]
    param_names = ["bits"]

    def setup(self, bits):
        self.pin = ThreadPin(1)
        k, n = SHARED_GEMV
        rng = np.random.default_rng(SEED_A)
        x = rng.standard_normal((1, k), dtype=np.float32)
        shared = pack_shared(np.linspace(-1, 1, 1 << bits, dtype=np.float32),
                             rng.integers(0, 1 << bits, (k, n), dtype=np.uint8))
        w16 = pack_b(rng.standard_normal((k, n), dtype=np.float32), "f32f16", layout="panels")
        c = np.empty((1, n), np.float32)
        self.fns = {"brgemm": lambda: gemm(x, shared, c), "brgemm_f16": lambda: gemm(x, w16, c)}

    def teardown(self, bits):
        self.pin.restore()

    def time_gemv(self, bits):
        self.fns["brgemm"]()

    def track_ratio_vs_our_f16_weights(self, bits):
        t = median_seconds(self.fns)
        return t["brgemm_f16"] / t["brgemm"]

    track_ratio_vs_our_f16_weights.unit = "x"


class TernaryGEMV:
    params = [list(TERNARY_LEVELS)]
    param_names = ["levels"]

    def setup(self, levels):
        self.pin = ThreadPin(1)
        k, n = SHARED_GEMV
        tern, q8, x = ternary_gemv_layers(np.random.default_rng(SEED_A), levels, k, n)
        y, y8 = np.empty((1, n), np.float32), np.empty((1, n), np.float32)
        self.fns = {"brgemm": lambda: tern.forward(x, out=y), "brgemm_int8": lambda: q8.forward(x, out=y8)}

    def teardown(self, levels):
        self.pin.restore()

    def time_gemv(self, levels):
        self.fns["brgemm"]()

    def track_ratio_vs_our_int8_weights(self, levels):
        t = median_seconds(self.fns)
        return t["brgemm_int8"] / t["brgemm"]

    track_ratio_vs_our_int8_weights.unit = "x"


class TernaryConv:
    params = [[1, 3]]
    param_names = ["levels"]

    def setup(self, levels):
        from brgemm.nn import QuantizedConv2d
        self.pin = ThreadPin(1)
        conv = Conv2d(64, 64, 3, padding=1, seed=SEED_B)
        x = np.random.default_rng(SEED_A).integers(0, 256, (1, 64, 28, 28), dtype=np.uint8)
        tern = QuantizedConv2d.from_float(conv, 0.02, 3, weights="ternary", block=64, max_residuals=levels - 1,
                                          error_target=0.0)
        q8 = QuantizedConv2d.from_float(conv, 0.02, 3)
        self.fns = {"brgemm": lambda: tern(x), "brgemm_int8": lambda: q8(x)}
        for f in self.fns.values():
            f()

    def teardown(self, levels):
        self.pin.restore()

    def time_forward(self, levels):
        self.fns["brgemm"]()

    def track_ratio_vs_our_int8_weights(self, levels):
        t = median_seconds(self.fns)
        return t["brgemm_int8"] / t["brgemm"]

    track_ratio_vs_our_int8_weights.unit = "x"
