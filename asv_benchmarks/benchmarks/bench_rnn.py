"""Recurrent layers (the benchmark side of tests/test_rnn.py): brgemm.nn.LSTM and GRU forward
at I = H ∈ {256, 512, 1024}, N ∈ {1, 16, 64}, T = 50, float32 and bfloat16, and a training
step (forward + backward through time) at H = 512, N = 64, against torch.nn.LSTM / GRU in the
same process (no_grad for inference; bf16: the module in bfloat16), 1 and all threads.
Tracked: % of the measured peak and the ratio (PyTorch time / brgemm time). The bars: LSTM f32
forward 1 thread ≥ 1.2× PyTorch at N = 16 and 64 (geomean), ≥ 2× at N = 1 with H ≤ 512; GRU
f32 forward ≥ 2× (geomean); training step 2 threads LSTM ≥ 1.2×, GRU ≥ 2×; bf16 LSTM at N = 64
≥ 1.7× our f32.
"""

import ml_dtypes
import numpy as np

from brgemm.bench import RNN_STEPS, _torch_rnn
from brgemm.nn import GRU, LSTM

from .common import PeerTimed, SEED_A, ThreadPin, cpu_count, import_torch

THREADS = sorted({1, cpu_count()})
CELLS = {"lstm": (LSTM, 4), "gru": (GRU, 3)}


class RNNForward(PeerTimed):
    params = [["lstm", "gru"], [256, 512, 1024], [1, 16, 64], ["float32", "bfloat16"], THREADS]
    param_names = ["cell", "hidden", "n", "dtype", "threads"]

    def setup(self, cell, h, n, dtype, threads):
        torch = import_torch()
        self.pin = ThreadPin(threads)
        cls, gates = CELLS[cell]
        x = np.random.default_rng(SEED_A).standard_normal((RNN_STEPS, n, h), dtype=np.float32)
        m = cls(h, h, dtype=dtype, seed=SEED_A).eval()
        xi = x if dtype == "float32" else x.astype(ml_dtypes.bfloat16)
        self.flops = 2 * gates * h * 2 * h * n * RNN_STEPS
        self.peak_op = "fma_f32" if dtype == "float32" else "dot_bf16"
        self.fns = {"brgemm": lambda: m(xi)}
        if torch is not None:
            self.fns["torch"] = _torch_rnn(torch, cell, h, dtype, x)



class RNNTrainingStep(PeerTimed):
    params = [["lstm", "gru"], THREADS]
    param_names = ["cell", "threads"]

    def setup(self, cell, threads):
        torch = import_torch()
        self.pin = ThreadPin(threads)
        cls, gates = CELLS[cell]
        h, n = 512, 64
        rng = np.random.default_rng(SEED_A)
        x = rng.standard_normal((RNN_STEPS, n, h), dtype=np.float32)
        g = rng.standard_normal((RNN_STEPS, n, h), dtype=np.float32)
        m = cls(h, h, seed=SEED_A)
        self.flops = 3 * 2 * gates * h * 2 * h * n * RNN_STEPS

        def step():
            m(x)
            m.backward(g)
        self.fns = {"brgemm": step}
        if torch is not None:
            tm = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(h, h)
            xt, gt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(g)

            def tstep():
                y, _ = tm(xt)
                y.backward(gt)
            self.fns["torch"] = tstep
