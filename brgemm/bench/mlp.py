"""The fully-connected group of `python -m brgemm bench --mlp`: Linear forward and a 3-layer
MLP (forward, training step) in f32 and bf16, against the same layers in PyTorch."""

import numpy as np

from ..peak import peak_of
from .harness import _row, compare, ratio_summary
MLP_SIZES, MLP_BATCH = [1024, 1024, 1024, 1024], 256
LINEAR_SHAPES = [(256, 1024, 1024), (256, 4096, 4096)]  # (N, in, out)


def mlp_flops(train):
    """FLOPs of the MLP rows: the layers' products, 2·N·in·out each; a training step is three
    times that less the first layer's input gradient (the input needs none)."""
    products = [2 * MLP_BATCH * MLP_SIZES[i] * MLP_SIZES[i + 1] for i in range(len(MLP_SIZES) - 1)]
    return 3 * sum(products) - products[0] if train else sum(products)


def _torch_mlp(torch, sizes, dtype, x, g):
    """PyTorch's side of the MLP rows: the same layers, ReLU between them, plain SGD; bf16 as
    autocast (f32 master weights, bf16 products), like brgemm's bf16 layers."""
    layers = []
    for i in range(len(sizes) - 1):
        layers += [torch.nn.Linear(sizes[i], sizes[i + 1])] + ([torch.nn.ReLU()] if i + 2 < len(sizes) else [])
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=1e-6)
    xt, gt = torch.from_numpy(x), torch.from_numpy(g)
    cast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if dtype == "bfloat16" else torch.no_grad

    def forward():
        with torch.no_grad(), cast():
            model(xt)

    def step():
        opt.zero_grad()
        if dtype == "bfloat16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = model(xt)
        else:
            y = model(xt)
        y.backward(gt.to(y.dtype))
        opt.step()
    return forward, step


def run_mlp(peers, rng, rounds, threads_list, log):
    """Linear forward and the 3-layer MLP (forward, training step) against PyTorch, f32 and bf16.
    A training step is forward, backward without the input's gradient (PyTorch skips it too,
    x needing none), and an SGD update: 8 products of 2·N·in·out FLOP for 3 layers."""
    import ml_dtypes
    from ..nn import MLP, Linear
    rows = []
    bf16 = ml_dtypes.bfloat16
    for threads in threads_list:
        peers.set_threads(threads)
        for dtype, peak_op in (("float32", "fma_f32"), ("bfloat16", "dot_bf16")):
            peak = peak_of(peak_op, threads)
            # Linear forward (eval: bias fused into the epilogue), out= on both sides.
            for n, c, k in LINEAR_SHAPES:
                lin = Linear(c, k, dtype=dtype, seed=0).eval()
                x = rng.standard_normal((n, c), dtype=np.float32)
                xin = x if dtype == "float32" else x.astype(bf16)
                y = np.empty((n, k), np.float32 if dtype == "float32" else bf16)
                fns = {"brgemm": lambda: lin.forward(xin, out=y)}
                if dtype == "float32" and (n, c, k) == LINEAR_SHAPES[-1]:
                    # bf16 is also timed against our own f32 layer: keep that one for the bf16 row
                    f32_lin, f32_x, f32_y = lin, x, y
                if dtype == "bfloat16" and (n, c, k) == LINEAR_SHAPES[-1]:
                    fns["brgemm_float32"] = lambda: f32_lin.forward(f32_x, out=f32_y)
                if peers.torch is not None:
                    torch = peers.torch
                    tdt = torch.float32 if dtype == "float32" else torch.bfloat16
                    tw = torch.from_numpy(lin.weight).to(tdt)
                    tb, tx = torch.from_numpy(lin.bias).to(tdt), torch.from_numpy(x).to(tdt)
                    ty = torch.empty((n, k), dtype=tdt)
                    fns["torch"] = lambda: torch.addmm(tb, tx, tw.t(), out=ty)
                med, rat = compare(fns, rounds, threads)
                plain = {lib: t for lib, t in med.items() if lib != "brgemm_float32"}
                rows.append(_row(f"Linear {dtype} fwd {n}x{c}x{k}", threads, 2 * n * c * k,
                                 (2 if dtype == "bfloat16" else 4) * (n * c + c * k + n * k), plain, rat, peak))
                if "brgemm_float32" in rat:
                    rows[-1]["ratio_vs_brgemm_float32"] = rat["brgemm_float32"]
                log.row(rows[-1])
            # The 3-layer MLP, 1024 wide, N = 256: forward (eval) and a training step.
            n = MLP_BATCH
            x = rng.standard_normal((n, MLP_SIZES[0]), dtype=np.float32)
            g = (rng.standard_normal((n, MLP_SIZES[-1]), dtype=np.float32) * 1e-3)
            mlp = MLP(MLP_SIZES, activation="relu", dtype=dtype, seed=0)
            y = np.empty((n, MLP_SIZES[-1]), np.float32 if dtype == "float32" else bf16)

            def infer():
                mlp.eval().forward(x, out=y)

            def step():
                mlp.train().forward(x, out=y)
                mlp.backward(g, input_grad=False)
                mlp.apply_sgd(1e-6)
                mlp.zero_grad()
            for case, fn, flops, torch_fn in (("fwd", infer, mlp_flops(False), 0),
                                              ("train step", step, mlp_flops(True), 1)):
                fns = {"brgemm": fn}
                if peers.torch is not None:
                    fns["torch"] = _torch_mlp(peers.torch, MLP_SIZES, dtype, x, g)[torch_fn]
                med, rat = compare(fns, rounds, threads)
                params = sum(MLP_SIZES[i] * MLP_SIZES[i + 1] for i in range(len(MLP_SIZES) - 1))
                rows.append(_row(f"MLP 3x1024 N={n} {dtype} {case}", threads, flops,
                                 4 * (params + n * sum(MLP_SIZES)), med, rat, peak))
                log.row(rows[-1])
    return rows



def mlp_summary(rows):
    """Summary lines of measured ratios: the MLP rows against PyTorch, and bf16 Linear against
    our own f32 layer."""
    lines = []
    for t in sorted({r["threads"] for r in rows}):
        mine = [r for r in rows if r["threads"] == t]
        for dtype in ("float32", "bfloat16"):
            got = [r for r in mine if f" {dtype} " in r["case"]]
            if got:
                lines.append(ratio_summary(f"Linear and MLP {dtype}, {t} thread(s), vs PyTorch", got))
        lines += [f"  {r['case']}, {t} thread(s): {r['ratio_vs_brgemm_float32']:.2f}x our float32"
                  for r in mine if "ratio_vs_brgemm_float32" in r]
    return lines
