"""The recurrent group of `python -m brgemm bench --rnn`: LSTM and GRU forward in f32 and bf16
over a grid of sizes and batches, and a training step each, against torch.nn.LSTM / GRU."""

import numpy as np

from ..peak import peak_of
from .harness import _row, compare, geomean, ratio_summary

RNN_SIZES, RNN_BATCHES, RNN_STEPS = (256, 512, 1024), (1, 16, 64), 50
GATES = {"lstm": 4, "gru": 3}


def _torch_rnn(torch, cell, h, dtype, x, autocast=False):
    """PyTorch's module under no_grad; bf16: the module and input in bfloat16, or (autocast)
    the f32 module under CPU autocast to bfloat16."""
    m = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(h, h)
    xt = torch.from_numpy(x.astype(np.float32))
    if dtype == "bfloat16" and not autocast:
        m, xt = m.to(torch.bfloat16), xt.to(torch.bfloat16)
    cast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if autocast else torch.no_grad

    def call():
        with torch.no_grad(), cast():
            m(xt)
    return call


def forward_case(peers, x, cell, dtype):
    """(callables, FLOPs, bytes, case) for one forward pass (I = H, T and N from x's shape) of
    our layer in eval mode against PyTorch's module (bf16: also under autocast; the harness
    reports the faster). FLOPs per step: LSTM 8·H·(I+H)·N, GRU 6·…;
    bytes: the weights, read once per step."""
    import ml_dtypes
    from ..nn import GRU, LSTM
    t, n, h = x.shape
    gates = GATES[cell]
    m = (LSTM if cell == "lstm" else GRU)(h, h, dtype=dtype, seed=0).eval()
    xi = x if dtype == "float32" else x.astype(ml_dtypes.bfloat16)
    fns = {"brgemm": lambda: m(xi)}
    if peers.torch is not None:  # bf16: the faster of PyTorch's two bf16 paths is the row's torch
        fns["torch"] = _torch_rnn(peers.torch, cell, h, dtype, x)
        if dtype == "bfloat16":
            fns["torch_autocast"] = _torch_rnn(peers.torch, cell, h, dtype, x, autocast=True)
    return (fns, 2 * gates * h * 2 * h * n * t, (4 if dtype == "float32" else 2) * (2 * gates * h * h),
            f"{cell.upper()} H={h} N={n} {dtype} fwd")


def run_rnn(peers, rng, rounds, threads_list, log):
    """LSTM and GRU forward (I = H, T = 50) in f32 and bf16 against torch.nn.LSTM / GRU (bf16
    also against our f32), and a training step (forward + backward through time) at
    I = H = 512, N = 64 against PyTorch autograd (three times the forward's FLOPs)."""
    from ..nn import GRU, LSTM
    rows = []
    for threads in threads_list:
        peers.set_threads(threads)
        for cell, cls in (("lstm", LSTM), ("gru", GRU)):
            for h in RNN_SIZES:
                for n in RNN_BATCHES:
                    x = rng.standard_normal((RNN_STEPS, n, h), dtype=np.float32)
                    ours = None
                    for dtype, peak_op in (("float32", "fma_f32"), ("bfloat16", "dot_bf16")):
                        fns, flops, nbytes, case = forward_case(peers, x, cell, dtype)
                        if ours is not None:
                            fns["brgemm_float32"] = ours
                        ours = ours or fns["brgemm"]
                        med, rat = compare(fns, rounds, threads)
                        plain = {lib: t for lib, t in med.items() if lib != "brgemm_float32"}
                        rows.append(_row(case, threads, flops, nbytes, plain, rat, peak_of(peak_op, threads)))
                        if "brgemm_float32" in rat:
                            rows[-1]["ratio_vs_brgemm_float32"] = rat["brgemm_float32"]
                        log.row(rows[-1])
            # Training step: forward + backward through time, gradients of everything.
            h, n = 512, 64
            gates = GATES[cell]
            x = rng.standard_normal((RNN_STEPS, n, h), dtype=np.float32)
            g = rng.standard_normal((RNN_STEPS, n, h), dtype=np.float32)
            m = cls(h, h, seed=0)

            def step(m=m, x=x, g=g):
                m(x)
                m.backward(g)
            fns = {"brgemm": step}
            if peers.torch is not None:
                torch = peers.torch
                tm = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(h, h)
                xt, gt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(g)

                def tstep(tm=tm, xt=xt, gt=gt):
                    y, _ = tm(xt)
                    y.backward(gt)
                fns["torch"] = tstep
            med, rat = compare(fns, rounds, threads)
            rows.append(_row(f"{cell.upper()} H={h} N={n} float32 training step", threads,
                             3 * 2 * gates * h * 2 * h * n * RNN_STEPS, 8 * gates * h * h, med, rat,
                             peak_of("fma_f32", threads)))
            log.row(rows[-1])
    return rows


def rnn_summary(rows):
    """Summary lines of measured ratios: per cell, dtype and thread count, the forward grid's
    geomean against PyTorch; the training steps; bf16 against our own f32."""
    lines = []
    for t in sorted({r["threads"] for r in rows}):
        for cell in ("LSTM", "GRU"):
            for dtype in ("float32", "bfloat16"):
                got = [r for r in rows if r["threads"] == t and r["case"].startswith(cell + " ")
                       and r["case"].endswith(f"{dtype} fwd")]
                if got:
                    lines.append(ratio_summary(f"{cell} {dtype} fwd grid, {t} thread(s), vs PyTorch", got))
            got = [r for r in rows if r["threads"] == t and r["case"].startswith(cell + " ")
                   and r["case"].endswith("training step")]
            if got:
                lines.append(ratio_summary(f"{cell} training step, {t} thread(s), vs PyTorch", got))
            bf16 = [r["ratio_vs_brgemm_float32"] for r in rows if r["threads"] == t
                    and r["case"].startswith(cell + " ") and "ratio_vs_brgemm_float32" in r]
            if bf16:
                lines.append(f"  {cell} bfloat16 fwd grid, {t} thread(s), vs our float32: geomean {geomean(bf16):.2f}x")
    return lines
