"""`python -m brgemm bench --ceilings`: PyTorch alone on the cases that ask most of the machine,
its best time over the rounds and the % of the measured peak it reaches. Measurements only:
how close a mature library gets to this machine's ceiling on each case."""

import os

import numpy as np

from ..peak import peak_of
from .harness import _per_call
from .kernels import _torch_peers
from .mlp import MLP_BATCH, MLP_SIZES, _torch_mlp, mlp_flops
from .conv import conv_work
from .models import torch_model_fns
from .rnn import RNN_SIZES, RNN_STEPS


def _ceiling_cases(torch, rng):
    """(case, threads, peak op, FLOPs of the real work, PyTorch's callable) for run_ceilings."""
    cases = []

    def rnn_fwd(h, n):
        m, x = torch.nn.LSTM(h, h), torch.randn(RNN_STEPS, n, h)

        def f():
            with torch.no_grad():
                m(x)
        return f
    for h in RNN_SIZES:
        for n in (16, 64):
            cases.append((f"LSTM f32 fwd H={h} N={n}", 1, "fma_f32", 2 * 4 * h * 2 * h * n * RNN_STEPS, rnn_fwd(h, n)))
    for cell, gates in (("LSTM", 4), ("GRU", 3)):
        h, n = 512, 64
        m = (torch.nn.LSTM if cell == "LSTM" else torch.nn.GRU)(h, h)
        x, g = torch.randn(RNN_STEPS, n, h).requires_grad_(), torch.randn(RNN_STEPS, n, h)

        def step(m=m, x=x, g=g):
            m(x)[0].backward(g)
        cases.append((f"{cell} training step H=512 N=64", 2, "fma_f32", 3 * 2 * gates * h * 2 * h * n * RNN_STEPS,
                      step))
    x = rng.standard_normal((MLP_BATCH, MLP_SIZES[0]), dtype=np.float32)
    g = rng.standard_normal((MLP_BATCH, MLP_SIZES[-1]), dtype=np.float32)
    cases.append(("MLP 3x1024 N=256 f32 training step", 2, "fma_f32", mlp_flops(True),
                  _torch_mlp(torch, MLP_SIZES, "float32", x, g)[1]))
    fns, flops, _, _ = torch_model_fns(torch, "lstm", "train step")
    cases.append(("LSTM tagger f32 training step", 2, "fma_f32", flops, fns["torch"]))
    x, w = torch.randn(1, 512, 7, 7), torch.randn(512, 512, 3, 3)

    def res5():
        with torch.no_grad():
            torch.nn.functional.conv2d(x, w, padding=1)
    cases.append(("Conv 512->512 7x7 3x3 N=1 f32 fwd", 1, "fma_f32", conv_work(1, 512, 512, 7, 3, 1, 1), res5))
    m, k, n = 256, 4096, 4096
    A = rng.integers(0, 256, (m, k), dtype=np.uint8)
    B = rng.integers(-127, 128, (k, n), dtype=np.int8)
    for name, fn in _torch_peers(torch, "u8s8", A, B, None).items():
        if name.startswith("torch.qlinear"):
            cases.append((f"QuantizedLinear 256x4096x4096, {name}", 2, "dot_u8s8", 2 * m * n * k, fn))
    return cases


def run_ceilings(peers, rounds, log):
    """PyTorch alone on _ceiling_cases: its best time over the rounds (noise only slows a run
    down) and the % of the measured peak that is. Threads: each case's own count, capped by the
    machine's cores."""
    if peers.torch is None:
        log.note("--ceilings needs PyTorch: pip install torch")
        return []
    rows = []
    for name, threads, op, work, fn in _ceiling_cases(peers.torch, np.random.default_rng(0)):
        threads = min(threads, os.cpu_count() or 1)
        peers.set_threads(threads)
        fn()
        best = min(_per_call(fn, 0.2) for _ in range(rounds))
        rows.append({"case": name, "threads": threads, "flops": work, "torch_seconds": best,
                     "torch_percent_of_peak": 100 * work / best / (peak_of(op, threads) * 1e9)})
        log.row(rows[-1])
    return rows


def format_ceilings(rows):
    width = max([44] + [len(r["case"]) for r in rows])
    lines = [f"{'PyTorch alone, best of the rounds':{width}} {'thr':>3} {'ms':>9} {'%peak':>6}"]
    lines += [f"{r['case']:{width}} {r['threads']:>3} {1e3 * r['torch_seconds']:9.2f} {r['torch_percent_of_peak']:6.1f}"
              for r in rows]
    return "\n".join(lines)
