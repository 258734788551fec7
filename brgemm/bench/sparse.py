"""The compressed-weights group of `python -m brgemm bench --sparse`: a pruned Linear (4096 → 4096,
N = 64, float32) forward at several block sparsities and a training step, against our own dense
packing of the same weights, PyTorch's dense product and PyTorch's block-sparse (BSR) product of
the same matrix; a pruned 3×3 Conv2d (256 → 256 on 14 × 14, N = 16) against our dense packing
and PyTorch's conv2d; a pruned LSTM's training step (512 → 512, T = 20, N = 64) against our dense
packing of the same weights and torch.nn.LSTM; the crossover rows, where the sparse packing is forced on nearly dense weights to
show where it stops paying; the GEMV on shared weights (codebook panels) against our GEMV on
float16 weights; and the GEMV on ternary weights (2 bits per weight and residual level, u8
activations) against our int8-weight GEMV (QuantizedLinear at N = 1)."""

import warnings

import numpy as np

from ..peak import peak_of
from .harness import _row, compare

SPARSE_SHAPE = (64, 4096, 4096)      # (N, in, out)
SPARSITIES = (0.5, 0.75, 0.9)        # fractions of the 64 × 64 weight blocks pruned
CROSSOVER = (0.0, 0.03, 0.06, 0.1)   # pruned fractions of the crossover rows (sparse packing forced)
TRAIN_SPARSITY = 0.9
CONV_SHAPE = (16, 256, 256, 14)      # (N, C, K, H = W) of the 3×3 (padding 1) block-sparse rows
CONV_SPARSITIES = (0.75, 0.9)        # fractions of the (bk × bc, all taps) weight blocks pruned
SHARED_GEMV = (8192, 8192)           # (K, N) of the GEMV rows on shared weights
SHARED_BITS = (2, 4, 5, 8)
TERNARY_LEVELS = (1, 2, 3)           # levels (ternary + residuals) of the ternary GEMV rows, every block present
RNN_SHAPE = (512, 512, 20, 64)       # (H, I, T, N) of the pruned LSTM's training-step rows
RNN_SPARSITIES = (0.75, 0.9)         # fractions of the (16 units × 4 gates, 64 inputs) weight blocks pruned


def _layer(c, k, sparsity, packing):
    from ..nn import Linear
    lin = Linear(c, k, seed=0)
    if sparsity:
        lin.prune(sparsity)
    lin.packing = packing
    return lin


def _torch_fns(torch, lin, x):
    """PyTorch's dense F.linear and its BSR product (weight.to_sparse_bsr of our block shape)."""
    w, b, xt = torch.from_numpy(lin.weight.copy()), torch.from_numpy(lin.bias.copy()), torch.from_numpy(x)
    fns = {"torch": lambda: torch.nn.functional.linear(xt, w, b)}
    if lin.sparsity:
        with warnings.catch_warnings():   # "Sparse BSR tensor support is in beta state"
            warnings.simplefilter("ignore")
            bsr = w.to_sparse_bsr((64, 64))
        fns["torch_bsr"] = lambda: torch.nn.functional.linear(xt, bsr, b)
    return fns


def pruned_lstm(frac, packing, seed=0):
    """An LSTM of RNN_SHAPE pruned by magnitude in the blocks its products skip (prune(frac,
    block="gates"): 16 units × all 4 gates × 64 inputs of W_ih and W_hh). prune()'s default
    blocks are per gate: at 90 % only about 0.9⁴ of these would be empty."""
    from ..nn import LSTM
    h, i, _, _ = RNN_SHAPE
    lstm = LSTM(i, h, seed=seed)
    lstm.prune(frac, block="gates")
    lstm.packing = packing
    return lstm


def _run_sparse_lstm(peers, rng, rounds, threads, log):
    """A pruned LSTM's training step (forward and backward through time, float32) against our
    dense packing of the same weights and masks and torch.nn.LSTM (dense); FLOPs of the kept
    weights only (forward, backward data and weight gradient: 3 × 2·T·N per kept weight)."""
    h, i, t, n = RNN_SHAPE
    x = rng.standard_normal((t, n, i), dtype=np.float32)
    g = rng.standard_normal((t, n, h), dtype=np.float32)
    peak = peak_of("fma_f32", threads)
    rows = []
    for frac in RNN_SPARSITIES:
        layers = {name: pruned_lstm(frac, packing) for name, packing in (("brgemm", "auto"), ("brgemm_dense", "dense"))}

        def step(lstm):
            lstm.zero_grad()
            lstm(x)
            lstm.backward(g)
        fns = {name: (lambda lstm=lstm: step(lstm)) for name, lstm in layers.items()}
        if peers.torch is not None:
            torch = peers.torch
            tm = torch.nn.LSTM(i, h)
            with torch.no_grad():
                for name, v in layers["brgemm"].parameters().items():
                    getattr(tm, name).copy_(torch.from_numpy(v))
            xt, gt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(g)

            def torch_step():
                tm.zero_grad()
                tm(xt)[0].backward(gt)
            fns["torch"] = torch_step
        med, rat = compare(fns, rounds, threads)
        kept = sum(int(np.count_nonzero(m)) for m in layers["brgemm"].mask.values())
        row = _row(f"LSTM f32 train step H={h} I={i} T={t} N={n} {frac:.0%} block-sparse", threads,
                   3 * 2 * t * n * kept, 4 * (kept + t * n * (i + h)), med, rat, peak)
        row["ratio_vs_brgemm_dense"] = rat["brgemm_dense"]
        rows.append(row)
        log.row(row)
    return rows


def _sparse_row(case, threads, n, c, k, kept, med, rat, peak):
    """FLOPs and bytes of the work the kept weights need (the pruned blocks are neither read nor
    multiplied): 2·N·kept, and x, the kept weights and y once."""
    row = _row(case, threads, 2 * n * kept, 4 * (n * c + kept + n * k), med, rat, peak)
    if "brgemm_dense" in rat:
        row["ratio_vs_brgemm_dense"] = rat["brgemm_dense"]
    return row


def run_sparse(peers, rng, rounds, threads_list, log):
    n, c, k = SPARSE_SHAPE
    x = rng.standard_normal((n, c), dtype=np.float32)
    g = rng.standard_normal((n, k), dtype=np.float32) * 1e-3
    rows = []
    for threads in threads_list:
        peers.set_threads(threads)
        peak = peak_of("fma_f32", threads)
        for sparsity in SPARSITIES:
            lin, dense = _layer(c, k, sparsity, "auto"), _layer(c, k, sparsity, "dense")
            y, yd = np.empty((n, k), np.float32), np.empty((n, k), np.float32)
            lin.eval(), dense.eval()
            fns = {"brgemm": lambda: lin.forward(x, out=y), "brgemm_dense": lambda: dense.forward(x, out=yd)}
            if peers.torch is not None:
                fns.update(_torch_fns(peers.torch, lin, x))
            med, rat = compare(fns, rounds, threads)
            kept = int(np.count_nonzero(lin.mask))
            rows.append(_sparse_row(f"Linear f32 fwd {n}x{c}x{k} {sparsity:.0%} block-sparse", threads, n, c, k,
                                    kept, med, rat, peak))
            log.row(rows[-1])

        # against our dense layer unpruned (a pruned one packed dense already skips the masked
        # blocks' weight gradient and update)
        lin, dense = _layer(c, k, TRAIN_SPARSITY, "auto"), _layer(c, k, 0.0, "dense")

        def step(layer):
            layer.forward(x)
            layer.backward(g)
            layer.apply_sgd(1e-6)
            layer.zero_grad()
        fns = {"brgemm": lambda: step(lin), "brgemm_dense": lambda: step(dense)}
        if peers.torch is not None:
            torch = peers.torch
            tl = torch.nn.Linear(c, k)
            opt = torch.optim.SGD(tl.parameters(), lr=1e-6)
            xt, gt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(g)

            def torch_step():
                opt.zero_grad()
                tl(xt).backward(gt)
                opt.step()
            fns["torch"] = torch_step
        med, rat = compare(fns, rounds, threads)
        kept = int(np.count_nonzero(lin.mask))
        rows.append(_sparse_row(f"Linear f32 train step {n}x{c}x{k} {TRAIN_SPARSITY:.0%} block-sparse", threads,
                                n, c, k, 3 * kept, med, rat, peak))
        log.row(rows[-1])

        # The crossover: sparse packing forced on weights with few pruned blocks.
        for sparsity in CROSSOVER:
            lin, dense = _layer(c, k, sparsity, "sparse"), _layer(c, k, sparsity, "dense")
            y, yd = np.empty((n, k), np.float32), np.empty((n, k), np.float32)
            lin.eval(), dense.eval()
            med, rat = compare({"brgemm": lambda: lin.forward(x, out=y),
                                "brgemm_dense": lambda: dense.forward(x, out=yd)}, rounds, threads)
            kept = c * k if not sparsity else int(np.count_nonzero(lin.mask))
            rows.append(_sparse_row(f"crossover: sparse packing, {sparsity:.0%} of blocks pruned", threads,
                                    n, c, k, kept, med, rat, peak))
            log.row(rows[-1])
        rows += _run_sparse_conv(peers, rng, rounds, threads, log)
        rows += _run_sparse_lstm(peers, rng, rounds, threads, log)
        rows += _run_shared_gemv(peers, rng, rounds, threads, log)
        rows += _run_ternary_gemv(peers, rng, rounds, threads, log)
    return rows


def ternary_gemv_layers(rng, levels, k, n):
    """(TernaryLinear with ``levels`` dense levels, int8 QuantizedLinear, u8 input) for K → N."""
    from ..nn import QuantizedLinear, TernaryLinear
    from ..quant import Ternary
    codes = rng.integers(-1, 2, (levels, n, k), dtype=np.int8)
    alpha = rng.random((levels, n, k // 64), dtype=np.float32) + np.float32(0.1)
    bias = np.zeros(n, np.float32)
    tern = TernaryLinear(Ternary(codes, alpha, (n, k), 64), bias, input_scale=0.02, input_zero_point=3)
    q8 = QuantizedLinear(k, n, input_scale=0.02, input_zero_point=3, seed=0)
    return tern, q8, rng.integers(0, 256, (1, k), dtype=np.uint8)


def _run_ternary_gemv(peers, rng, rounds, threads, log):
    """GEMV 1 × K → N on ternary weights (8a-2w): memory-bound, so the 2 bits per weight and level
    (+ one float32 α per 64) should show against our int8-weight GEMV (1 byte per weight)."""
    k, n = SHARED_GEMV
    rows = []
    for levels in TERNARY_LEVELS:
        tern, q8, x = ternary_gemv_layers(rng, levels, k, n)
        y, y8 = np.empty((1, n), np.float32), np.empty((1, n), np.float32)
        fns = {"brgemm": lambda: tern.forward(x, out=y), "brgemm_int8_weights": lambda: q8.forward(x, out=y8)}
        if peers.torch is not None:
            torch = peers.torch
            xt, wt = torch.from_numpy(rng.standard_normal((1, k), dtype=np.float32)), torch.zeros((k, n))
            fns["torch"] = lambda: torch.mm(xt, wt)
        med, rat = compare(fns, rounds, threads)
        rows.append(_row(f"gemv 1x{k}x{n} ternary weights, {levels} level(s)", threads, 2 * k * n * levels,
                         tern.nbytes() + k + 4 * n, med, rat, peak_of("dot_u8s8", threads)))
        rows[-1]["ratio_vs_brgemm_int8_weights"] = rat["brgemm_int8_weights"]
        log.row(rows[-1])
    return rows


def _run_sparse_conv(peers, rng, rounds, threads, log):
    """A pruned 3×3 Conv2d forward (direct, float32) against our dense packing of the same
    weights and PyTorch's conv2d; FLOPs of the kept weights only."""
    from ..nn import Conv2d
    n, c, k, hw = CONV_SHAPE
    x = rng.standard_normal((n, c, hw, hw), dtype=np.float32)
    peak = peak_of("fma_f32", threads)
    rows = []
    for sparsity in CONV_SPARSITIES:
        layers = {}
        for packing in ("auto", "dense"):
            conv = Conv2d(c, k, 3, padding=1, seed=0, algorithm="direct")
            conv.prune(sparsity)
            conv.packing = packing
            layers[packing] = conv.eval()
        y, yd = np.empty((n, k, hw, hw), np.float32), np.empty((n, k, hw, hw), np.float32)
        fns = {"brgemm": lambda: layers["auto"].forward(x, out=y),
               "brgemm_dense": lambda: layers["dense"].forward(x, out=yd)}
        if peers.torch is not None:
            torch = peers.torch
            xt, wt = torch.from_numpy(x), torch.from_numpy(layers["auto"].weight.copy())
            bt = torch.from_numpy(layers["auto"].bias.copy())
            fns["torch"] = lambda: torch.nn.functional.conv2d(xt, wt, bt, padding=1)
        med, rat = compare(fns, rounds, threads)
        kept = int(np.count_nonzero(layers["auto"].mask))
        row = _row(f"Conv2d f32 fwd {n}x{c}x{k} 3x3 {hw}x{hw} {sparsity:.0%} block-sparse", threads,
                   2 * n * hw * hw * kept, 4 * (n * (c + k) * hw * hw + kept), med, rat, peak)
        row["ratio_vs_brgemm_dense"] = rat["brgemm_dense"]
        rows.append(row)
        log.row(row)
    return rows


def _run_shared_gemv(peers, rng, rounds, threads, log):
    """GEMV 1 × K → N on b-bit shared weights: memory-bound, so the bytes of the indices should
    show against the float16-weight GEMV (both packed in 64-column panels) and PyTorch's f32."""
    from .. import gemm, pack_b
    from ..quant import pack_shared
    k, n = SHARED_GEMV
    x = rng.standard_normal((1, k), dtype=np.float32)
    w = rng.standard_normal((k, n), dtype=np.float32)
    w16 = pack_b(w, "f32f16", layout="panels")
    c = np.empty((1, n), np.float32)
    rows = []
    for bits in SHARED_BITS:
        shared = pack_shared(np.linspace(-1, 1, 1 << bits, dtype=np.float32),
                             rng.integers(0, 1 << bits, (k, n), dtype=np.uint8))
        fns = {"brgemm": lambda: gemm(x, shared, c), "brgemm_f16_weights": lambda: gemm(x, w16, c)}
        if peers.torch is not None:
            torch = peers.torch
            xt, wt = torch.from_numpy(x), torch.from_numpy(w)
            fns["torch"] = lambda: torch.mm(xt, wt)
        med, rat = compare(fns, rounds, threads)
        rows.append(_row(f"gemv 1x{k}x{n} {bits}-bit shared weights", threads, 2 * k * n,
                         shared.nbytes + 4 * (k + n), med, rat, peak_of("fma_f32", threads)))
        rows[-1]["ratio_vs_brgemm_f16_weights"] = rat["brgemm_f16_weights"]
        log.row(rows[-1])
    return rows


def sparse_summary(rows):
    """The measured ratios: the block-sparse layer against our dense packing of the same weights
    and against PyTorch's BSR and dense products."""
    lines = []
    for r in rows:
        if "ratio_vs_brgemm_f16_weights" in r:
            lines.append(f"  {r['case']}, {r['threads']} thread(s): {r['ratio_vs_brgemm_f16_weights']:.2f}x our "
                         f"float16-weight GEMV, {r.get('ratio_vs_torch', float('nan')):.2f}x PyTorch f32")
            continue
        if "ratio_vs_brgemm_int8_weights" in r:
            lines.append(f"  {r['case']}, {r['threads']} thread(s): {r['ratio_vs_brgemm_int8_weights']:.2f}x our "
                         f"int8-weight GEMV, {r.get('ratio_vs_torch', float('nan')):.2f}x PyTorch f32")
            continue
        parts = [f"{r['ratio_vs_brgemm_dense']:.2f}x our dense"]
        for lib, name in (("torch_bsr", "PyTorch BSR"), ("torch", "PyTorch dense")):
            if f"ratio_vs_{lib}" in r:
                parts.append(f"{r[f'ratio_vs_{lib}']:.2f}x {name}")
        lines.append(f"  {r['case']}, {r['threads']} thread(s): " + ", ".join(parts))
    return lines
