"""`python -m brgemm bench`: brgemm against numpy (OpenBLAS) and PyTorch on the same shapes and
thread counts, in the same run, as GFLOP/s, % of the measured peak, % of the roofline bound
and the ratio to each peer (peer time / brgemm time: above 1 means brgemm is faster).

Each case is timed in rounds; in every round each library runs a block of calls after a
short pause, so that the spinning worker threads one library leaves behind (OpenMP,
OpenBLAS) do not steal the cores from the next. Reported: medians over rounds."""

import argparse
import importlib.util
import json
import os
import time

import numpy as np

from . import _core, gemm, Epilogue, Kernel, pack_b, set_num_threads, get_num_threads, ukernels
from .peak import get_peak, fp32_peak, thread_counts, peak_of

GEMM_SHAPES = [(64, 64, 64), (1024, 1024, 1024), (256, 1024, 1024), (64, 4096, 4096)]  # (M, K, N)
LOWP_GEMM_SHAPES = [(64, 1024, 1024), (256, 4096, 4096)]  # bf16 and int8, B packed once
PEAK_OP = {"f32": "fma_f32", "bf16": "dot_bf16", "u8s8": "dot_u8s8"}
KERNEL_SHAPE = (64, 64, 64, 32)  # M, N, K, batch


class Peers:
    """numpy and (when installed) torch, with their thread counts pinned like brgemm's."""

    def __init__(self):
        self.torch = None
        if importlib.util.find_spec("torch") is not None:
            import torch
            self.torch = torch
        self.limits = None
        if importlib.util.find_spec("threadpoolctl") is not None:
            import threadpoolctl
            self.limits = threadpoolctl.threadpool_limits
        self._ctx = None

    def set_threads(self, n):
        set_num_threads(n)
        if self.limits is not None:
            if self._ctx is not None:
                self._ctx.unregister()
            self._ctx = self.limits(limits=n, user_api="blas")
        # Last: restoring the previous BLAS limits (unregister) also resets the OpenMP
        # default that torch reads its thread count from (measured: torch stayed at 1).
        if self.torch is not None:
            self.torch.set_num_threads(n)


def _per_call(fn, min_seconds):
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / n


# OpenBLAS's workers spin for about 0.1 s after a call (measured: a 0.05 s pause left brgemm
# on 2 threads 3x slower right after numpy), so with several threads each library's block
# starts after this pause, and then runs untimed for a while: right after an idle pause the
# first 50 ms run some 10 % slow (clocks and caches coming back).
PAUSE, WARM_AFTER_PAUSE = 0.2, 0.06


def compare(fns, rounds, threads, min_seconds=0.05):
    """fns: {library: callable}. Returns {library: median seconds per call} and
    {library: median over rounds of (its time / brgemm's time)}."""
    pause, warm = (PAUSE, WARM_AFTER_PAUSE) if threads > 1 else (0.0, 0.005)
    names = list(fns)
    for f in fns.values():
        f()  # first touch, dispatch, thread start-up
    times = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate who goes first
            time.sleep(pause)
            _per_call(fns[name], warm)
            times[name].append(_per_call(fns[name], min_seconds))
    base = np.array(times[names[0]])
    medians = {name: float(np.median(t)) for name, t in times.items()}
    ratios = {name: float(np.median(np.array(t) / base)) for name, t in times.items()}
    return medians, ratios


def _row(case, threads, flops, nbytes, medians, ratios, peak, work=None):
    """One result row. ``work``: the FLOPs actually needed when fewer than ``flops`` (a padded
    convolution's border taps read zeros, and neither library multiplies them); it bounds
    ``ceiling_vs_torch``, the ratio brgemm would reach at 100 % of the measured peak."""
    bw = get_peak()["bandwidth"]
    bandwidth = bw.get(str(threads)) or bw["1"]
    bound = max(flops / (peak * 1e9), nbytes / (bandwidth * 1e9)) if peak else None
    row = {"case": case, "threads": threads, "flops": flops, "bytes": nbytes, "peak_gflops": peak}
    for lib, t in medians.items():
        row[f"{lib}_gflops"] = flops / t * 1e-9
        if lib != "brgemm":
            row[f"ratio_vs_{lib}"] = ratios[lib]
    # Several torch paths (int8: _int_mm and quantized Linear per engine): the torch column
    # shows the best of them, and says which.
    torch_paths = [lib for lib in medians if lib.startswith("torch")]
    if torch_paths:
        best = min(torch_paths, key=lambda lib: medians[lib])
        row["torch_gflops"], row["ratio_vs_torch"], row["torch_best"] = (
            row[f"{best}_gflops"], ratios[best], best)
        if peak:
            row["ceiling_vs_torch"] = medians[best] * peak * 1e9 / (work or flops)
    row["percent_of_peak"] = 100 * row["brgemm_gflops"] / peak if peak else None
    row["percent_of_roofline"] = 100 * bound / medians["brgemm"] if bound else None
    return row


def geomean(values):
    values = [v for v in values if v is not None]
    return float(np.exp(np.mean(np.log(values)))) if values else float("nan")


def bar_line(title, rows, bar=None, lowest=False):
    """A bar's summary line from its rows: the ratio to PyTorch (the geomean when several rows),
    and what the ratio would be with brgemm at 100 % of the measured peak. A bar above that
    ceiling cannot be met on this machine, whatever the code does."""
    if not rows or any("ratio_vs_torch" not in r for r in rows):
        return f"  {title}: no PyTorch rows"
    got = geomean(r["ratio_vs_torch"] for r in rows)
    ceiling = geomean(r.get("ceiling_vs_torch") for r in rows)
    what = "geomean " if len(rows) > 1 else ""
    line = f"  {title}: {what}{got:.2f}x (at the peak: {ceiling:.2f}x)"
    if lowest and len(rows) > 1:
        low = min(rows, key=lambda r: r["ratio_vs_torch"])
        line += f", lowest {low['ratio_vs_torch']:.2f}x (at the peak: {low.get('ceiling_vs_torch', float('nan')):.2f}x)"
    if bar:
        line += f"; bar {bar}x" + ("" if ceiling >= bar else ", above the ceiling")
    return line


def _kernel_operands(rng, dtype, m, n, k, b):
    """A (b, m, k), packed B data, C and the numpy / torch operands of the same sum as one GEMM."""
    import ml_dtypes
    if dtype == "u8s8":
        A = rng.integers(0, 256, (b, m, k), dtype=np.uint8)
        B = rng.integers(-128, 128, (b, k, n), dtype=np.int8)
        C = np.empty((m, n), np.int32)
    else:
        A = rng.standard_normal((b, m, k), dtype=np.float32)
        B = rng.standard_normal((b, k, n), dtype=np.float32)
        C = np.empty((m, n), np.float32)
        if dtype == "bf16":
            A, B = A.astype(ml_dtypes.bfloat16), B.astype(ml_dtypes.bfloat16)
    A2 = np.ascontiguousarray(A.transpose(1, 0, 2).reshape(m, b * k))
    B2 = np.ascontiguousarray(B.reshape(b * k, n))
    Bk = B if dtype == "f32" else pack_b(B, dtype).data
    return A, Bk, C, A2, B2


def _torch_peers(torch, dtype, A2, B2, C):
    """The same product in PyTorch: torch.mm (f32, bf16); for int8 torch._int_mm on s8 × s8
    and a quantized Linear under each engine (u8 activations, s8 weights, u8 output)."""
    if dtype == "f32":
        tA, tB, tC = (torch.from_numpy(x) for x in (A2, B2, C))
        return {"torch": lambda: torch.mm(tA, tB, out=tC)}
    if dtype == "bf16":
        tA = torch.from_numpy(A2.view(np.int16)).view(torch.bfloat16)
        tB = torch.from_numpy(B2.view(np.int16)).view(torch.bfloat16)
        tC = torch.empty((A2.shape[0], B2.shape[1]), dtype=torch.bfloat16)
        return {"torch": lambda: torch.mm(tA, tB, out=tC)}
    import warnings
    warnings.filterwarnings("ignore", category=UserWarning)   # the deprecated quantized API
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    peers = {}
    m, k = A2.shape
    n = B2.shape[1]
    if m > 16:  # torch._int_mm needs M > 16 on the CPU
        tA = torch.from_numpy((A2.astype(np.int16) - 128).astype(np.int8))
        tB = torch.from_numpy(B2)
        peers["torch._int_mm"] = lambda: torch._int_mm(tA, tB)
    x = torch.quantize_per_tensor(torch.from_numpy(A2.astype(np.float32)), 1.0, 0, torch.quint8)
    w = torch.quantize_per_tensor(torch.from_numpy(np.ascontiguousarray(B2.T).astype(np.float32)), 1.0, 0, torch.qint8)
    for engine in ("fbgemm", "onednn", "x86"):
        if engine not in torch.backends.quantized.supported_engines:
            continue
        torch.backends.quantized.engine = engine
        q = torch.ao.nn.quantized.Linear(k, n)
        q.set_weight_bias(w, None)
        q.scale, q.zero_point = float(k) * 64.0, 0

        def call(q=q, engine=engine):
            torch.backends.quantized.engine = engine
            return q(x)
        peers[f"torch.qlinear[{engine}]"] = call
    return peers


#: Extra int8 gemm rows: variant → (case label, peers it is compared with, output bytes).
VARIANT_ROWS = {"brgemm_s8": ("gemm s8s8", "torch._int_mm", 4),
                "brgemm_requant": ("gemm u8s8 -> u8 (requantized)", "torch.qlinear", 1)}


def _int8_variants(A, B, M, N, K):
    """The same int8 product with int8 activations (the +128 shift inside) and with a fused
    requantization to uint8 (per-column scale, bias, ReLU), as brgemm callables."""
    As = (A.astype(np.int16) - 128).astype(np.int8)
    C32, C8 = np.empty((M, N), np.int32), np.empty((M, N), np.uint8)
    scale = np.full(N, 1.0 / 64, np.float32)
    ep = Epilogue(out_dtype="uint8", scale=scale, bias=np.zeros(N, np.float32), activation="relu",
                  out_scale=float(K), out_zero_point=0)
    return {"brgemm_s8": lambda: gemm(As, B, C32), "brgemm_requant": lambda: gemm(A, B, C8, epilogue=ep)}


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
    from .nn import MLP, Linear
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
                    # the bf16 bar is against our own f32 layer: keep that one for the bf16 row
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
                extra = ""
                if "brgemm_float32" in rat:
                    rows[-1]["ratio_vs_brgemm_float32"] = rat["brgemm_float32"]
                    extra = f"  ({rat['brgemm_float32']:.2f}x our float32)"
                log(_format(rows[-1]) + extra)
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
                log(_format(rows[-1]))
    return rows


def mlp_summary(rows, log):
    """The issue's bars, from the rows, with their ceilings (see bar_line)."""
    threads = max(r["threads"] for r in rows)
    for r in rows:
        if r["threads"] == threads and r["case"] == f"MLP 3x1024 N={MLP_BATCH} float32 train step":
            log(bar_line(f"MLP training step f32, {threads} threads", [r], 1.5))
    n, c, k = LINEAR_SHAPES[-1]
    for r in rows:
        if r["case"] == f"Linear bfloat16 fwd {n}x{c}x{k}" and "ratio_vs_brgemm_float32" in r:
            log(f"  Linear bf16 fwd {n}x{c}x{k}, {r['threads']} thread(s): "
                f"{r['ratio_vs_brgemm_float32']:.2f}x our f32; bar 1.7x")


#: ResNet-50's convolutions: (C, K, H = W, R = S, stride), padding R // 2.
CONV_LAYERS = [(64, 64, 56, 3, 1), (64, 256, 56, 1, 1), (128, 128, 28, 3, 1), (256, 256, 14, 3, 1),
               (512, 512, 7, 3, 1), (3, 64, 224, 7, 2)]
CONV_BATCHES = (1, 16)


def conv_work(n, c, k, h, r, stride, pad):
    """The FLOPs of a square convolution counting only the taps that read the image (2 per
    multiply-add): a border output skips the kernel rows and columns that fall in the padding."""
    def taps(size):
        out = (size + 2 * pad - r) // stride + 1
        return sum(sum(0 <= o * stride - pad + t < size for t in range(r)) for o in range(out))
    return 2 * n * k * c * taps(h) ** 2


def _conv_label(c, k, h, r, stride):
    return f"{c}->{k} {h}x{h} {r}x{r}/{stride}"


def _log_vs_float32(row, ratios, log):
    """Logs a bf16 row, with its ratio to our own float32 layer when that was timed too."""
    extra = ""
    if "brgemm_float32" in ratios:
        row["ratio_vs_brgemm_float32"] = ratios["brgemm_float32"]
        extra = f"  ({ratios['brgemm_float32']:.2f}x our float32)"
    log(_format(row) + extra)


def _torch_conv(torch, x, conv, dtype, g):
    """PyTorch's forward (NCHW and channels_last: the faster counts) and backward (input and
    weight gradients, by aten's convolution_backward so that no forward is timed)."""
    tdt = torch.float32 if dtype == "float32" else torch.bfloat16
    xt = torch.from_numpy(x).to(tdt)
    wt = torch.from_numpy(conv.weight).to(tdt)
    bt = torch.from_numpy(conv.bias).to(tdt)
    stride, pad = list(conv.stride), [conv.padding[0], conv.padding[2]]
    xc, wc = xt.contiguous(memory_format=torch.channels_last), wt.contiguous(memory_format=torch.channels_last)
    F = torch.nn.functional

    def fwd(x_, w_):
        def call():
            with torch.no_grad():
                F.conv2d(x_, w_, bt, stride, pad)
        return call
    peers = {"torch": fwd(xt, wt), "torch[channels_last]": fwd(xc, wc)}
    if g is None:
        return peers
    gt = torch.from_numpy(g)
    gc = gt.contiguous(memory_format=torch.channels_last)

    def bwd(g_, x_, w_):
        return lambda: torch.ops.aten.convolution_backward(g_, x_, w_, [w_.shape[0]], stride, pad, [1, 1], False,
                                                           [0, 0], 1, [True, True, True])
    return {"torch": bwd(gt, xt, wt), "torch[channels_last]": bwd(gc, xc, wc)}, peers


def _torch_qconv(torch, x_q, conv, scale, zero, out_scale):
    """PyTorch's quantized Conv2d under each engine (quint8 channels_last input, qint8 weights
    per output channel, quint8 output), from the same integers as ours."""
    import warnings
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    xt = torch.from_numpy((x_q.astype(np.float32) - zero) * scale)
    qx = torch.quantize_per_tensor(xt, scale, zero, torch.quint8).contiguous(memory_format=torch.channels_last)
    qw = torch.quantize_per_channel(torch.from_numpy(conv.weight.astype(np.float32) * conv.weight_scale[:, None, None, None]),
                                    torch.from_numpy(conv.weight_scale.astype(np.float64)),
                                    torch.zeros(conv.out_channels, dtype=torch.long), 0, torch.qint8)
    k, c, r, s = conv.weight.shape
    peers = {}
    for engine in ("fbgemm", "onednn", "x86"):
        if engine not in torch.backends.quantized.supported_engines:
            continue
        torch.backends.quantized.engine = engine
        q = torch.ao.nn.quantized.Conv2d(c, k, (r, s), conv.stride, (conv.padding[0], conv.padding[2]))
        q.set_weight_bias(qw, torch.from_numpy(conv.bias))
        q.scale, q.zero_point = out_scale, 0

        def call(q=q, engine=engine):
            torch.backends.quantized.engine = engine
            return q(qx)
        peers[f"torch.qconv[{engine}]"] = call
    return peers


def run_conv(peers, rng, rounds, threads_list, log, batches=CONV_BATCHES):
    """ResNet-50's convolutions: forward f32 and bf16 (bf16 also against our f32), backward
    (input and weight gradients) f32, against PyTorch's faster layout; int8 inference (uint8
    in and out) against PyTorch's best quantized engine. Our side runs blocked
    arrays in and out (as a chain of layers does), outputs pre-allocated; PyTorch's conv2d has
    no out=. FLOPs: 2·N·K·C·R·S·OH·OW per product (backward: two)."""
    from . import layout
    from .nn import Conv2d, QuantizedConv2d
    rows = []
    for threads in threads_list:
        peers.set_threads(threads)
        for n in batches:
            for c, k, h, r, stride in CONV_LAYERS:
                label = _conv_label(c, k, h, r, stride)
                x = rng.standard_normal((n, c, h, h), dtype=np.float32)
                ours = {}
                for dtype, peak_op in (("float32", "fma_f32"), ("bfloat16", "dot_bf16")):
                    conv = Conv2d(c, k, r, stride, r // 2, dtype=dtype, seed=0)
                    oh, ow = conv.output_size(h, h)
                    xb = layout.to_blocked(x, dtype=conv._act_dtype)
                    yb = np.empty((n, -(-k // conv.bk), oh, ow, conv.bk), conv._act_dtype)
                    flops, work = 2 * n * k * c * r * r * oh * ow, conv_work(n, c, k, h, r, stride, r // 2)
                    elem = 4 if dtype == "float32" else 2
                    nbytes = elem * (n * c * h * h + n * k * oh * ow + k * c * r * r)
                    conv.eval()
                    fns = {"brgemm": lambda conv=conv, xb=xb, yb=yb: conv.forward(xb, out=yb)}
                    if dtype == "bfloat16":
                        fns["brgemm_float32"] = ours["float32"]
                    g = rng.standard_normal((n, k, oh, ow), dtype=np.float32) if dtype == "float32" else None
                    torch_bwd = None
                    if peers.torch is not None:
                        got = _torch_conv(peers.torch, x, conv, dtype, g)
                        torch_bwd, torch_fwd = got if g is not None else (None, got)
                        fns.update(torch_fwd)
                    ours[dtype] = fns["brgemm"]
                    med, rat = compare(fns, rounds, threads)
                    plain = {lib: t for lib, t in med.items() if lib != "brgemm_float32"}
                    rows.append(_row(f"Conv {label} N={n} {dtype} fwd", threads, flops, nbytes, plain, rat,
                                     peak_of(peak_op, threads), work))
                    _log_vs_float32(rows[-1], rat, log)
                    if dtype != "float32":
                        continue
                    # Backward: input and weight (and bias) gradients of the last training forward.
                    conv.train().forward(xb, out=yb)
                    gb = layout.to_blocked(g)
                    gx = np.empty(xb.shape, np.float32)
                    fns = {"brgemm": lambda conv=conv, gb=gb, gx=gx: conv.backward(gb, out=gx)}
                    if torch_bwd is not None:
                        fns.update(torch_bwd)
                    med, rat = compare(fns, rounds, threads)
                    rows.append(_row(f"Conv {label} N={n} float32 bwd", threads, 2 * flops, 3 * nbytes, med, rat,
                                     peak_of(peak_op, threads), 2 * work))
                    log(_format(rows[-1]))
                    # int8 inference: the f32 layer quantized, uint8 in, requantized uint8 out.
                    scale, zero, out_scale = 0.05, 128, 0.05 * float(np.sqrt(c * r * r))
                    qconv = QuantizedConv2d.from_float(conv, scale, zero, out_scale)
                    x_q = np.clip(np.rint(x / scale) + zero, 0, 255).astype(np.uint8)
                    xb_q = layout.to_blocked(x_q)
                    yb_q = np.empty((n, -(-k // qconv.bk), oh, ow, qconv.bk), np.uint8)
                    fns = {"brgemm": lambda q=qconv, xb=xb_q, yb=yb_q: q.forward(xb, out=yb)}
                    if peers.torch is not None:
                        fns.update(_torch_qconv(peers.torch, x_q, qconv, scale, zero, out_scale))
                    med, rat = compare(fns, rounds, threads)
                    rows.append(_row(f"Conv {label} N={n} int8 fwd", threads, flops, nbytes // 4, med, rat,
                                     peak_of("dot_u8s8", threads), work))
                    log(_format(rows[-1]))
    return rows


def conv_summary(rows, log):
    """The issue's bars, from the rows: geomeans over the six layers and the named layers, each
    with its ceiling (the ratio at 100 % of the peak; see bar_line)."""
    def pick(kind, n, threads, layers=CONV_LAYERS):
        got = [r for layer in layers for r in rows
               if r["case"] == f"Conv {_conv_label(*layer)} N={n} {kind}" and r["threads"] == threads]
        return got if len(got) == len(layers) else None
    threads = max(r["threads"] for r in rows)
    for title, kind, bar in (("f32 fwd N=16 vs torch", "float32 fwd", 1.1),
                             ("bf16 fwd N=16 vs torch", "bfloat16 fwd", 1.1),
                             ("f32 bwd N=16 vs torch", "float32 bwd", 1.0),
                             ("int8 fwd N=16 vs torch quantized", "int8 fwd", None)):
        got = pick(kind, 16, threads)
        if got:
            log(bar_line(f"{title}, {threads} threads", got, bar, lowest=True))
    got = pick("int8 fwd", 16, threads, [layer for layer in CONV_LAYERS if layer[3] == 3])
    if got:
        log(bar_line(f"int8 fwd N=16 3x3 layers vs torch quantized, {threads} threads", got, 1.1))
    got = pick("bfloat16 fwd", 16, threads)
    if got and all("ratio_vs_brgemm_float32" in r for r in got):
        log(f"  bf16 fwd N=16 vs our f32, {threads} threads: geomean "
            f"{geomean(r['ratio_vs_brgemm_float32'] for r in got):.2f}x, "
            f"lowest {min(r['ratio_vs_brgemm_float32'] for r in got):.2f}x; bar 1.7x")
    for layer, bar in ((CONV_LAYERS[4], 2.0), (CONV_LAYERS[3], 1.1)):
        got = pick("float32 fwd", 1, 1, [layer])
        if got:
            log(bar_line(f"f32 fwd N=1 1 thread {_conv_label(*layer)}", got, bar))


RNN_SIZES, RNN_BATCHES, RNN_STEPS = (256, 512, 1024), (1, 16, 64), 50


def _torch_rnn(torch, cell, h, dtype, x):
    """PyTorch's module (bf16: the module and input in bfloat16) under no_grad."""
    m = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(h, h)
    xt = torch.from_numpy(x.astype(np.float32))
    if dtype == "bfloat16":
        m, xt = m.to(torch.bfloat16), xt.to(torch.bfloat16)

    def call():
        with torch.no_grad():
            m(xt)
    return call


def run_rnn(peers, rng, rounds, threads_list, log):
    """LSTM and GRU forward (I = H, T = 50) in f32 and bf16 against torch.nn.LSTM / GRU (bf16
    also against our f32), and a training step (forward + backward through time) at
    I = H = 512, N = 64 against PyTorch autograd. FLOPs per step: LSTM 8·H·(I+H)·N, GRU 6·…
    (training: three times that)."""
    import ml_dtypes
    from .nn import GRU, LSTM
    rows = []
    for threads in threads_list:
        peers.set_threads(threads)
        for cell, cls, gates in (("lstm", LSTM, 4), ("gru", GRU, 3)):
            for h in RNN_SIZES:
                for n in RNN_BATCHES:
                    x = rng.standard_normal((RNN_STEPS, n, h), dtype=np.float32)
                    flops = 2 * gates * h * 2 * h * n * RNN_STEPS
                    ours = None
                    for dtype, peak_op in (("float32", "fma_f32"), ("bfloat16", "dot_bf16")):
                        m = cls(h, h, dtype=dtype, seed=0).eval()
                        xi = x if dtype == "float32" else x.astype(ml_dtypes.bfloat16)
                        fns = {"brgemm": lambda m=m, xi=xi: m(xi)}
                        if ours is not None:
                            fns["brgemm_float32"] = ours
                        if peers.torch is not None:
                            fns["torch"] = _torch_rnn(peers.torch, cell, h, dtype, x)
                        ours = ours or fns["brgemm"]
                        med, rat = compare(fns, rounds, threads)
                        plain = {lib: t for lib, t in med.items() if lib != "brgemm_float32"}
                        rows.append(_row(f"{cell.upper()} H={h} N={n} {dtype} fwd", threads, flops,
                                         (4 if dtype == "float32" else 2) * (2 * gates * h * h), plain, rat,
                                         peak_of(peak_op, threads)))
                        _log_vs_float32(rows[-1], rat, log)
            # Training step: forward + backward through time, gradients of everything.
            h, n = 512, 64
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
            log(_format(rows[-1]))
    return rows


def rnn_summary(rows, log):
    """The issue's bars, from the rows, each with its ceiling (see bar_line)."""
    def pick(case, threads):
        return [r for r in rows if r["case"] == case and r["threads"] == threads]

    def grid(cell, threads, batches):
        got = [r for h in RNN_SIZES for n in batches for r in pick(f"{cell} H={h} N={n} float32 fwd", threads)]
        return got if len(got) == len(RNN_SIZES) * len(batches) else []
    thread_list = sorted({r["threads"] for r in rows})
    if 1 in thread_list:
        log(bar_line("LSTM f32 fwd 1 thread, N 16/64", grid("LSTM", 1, (16, 64)), 1.2))
        for h in (256, 512):
            log(bar_line(f"LSTM f32 fwd 1 thread, N=1 H={h}", pick(f"LSTM H={h} N=1 float32 fwd", 1), 2.0))
    for t in thread_list:
        log(bar_line(f"GRU f32 fwd {t} thread(s), the grid", grid("GRU", t, RNN_BATCHES), 2.0))
    threads = thread_list[-1]
    for cell, bar in (("LSTM", 1.2), ("GRU", 2.0)):
        got = pick(f"{cell} H=512 N=64 float32 training step", threads)
        if got:
            log(bar_line(f"{cell} training step (512, N=64), {threads} threads", got, bar))
    r = [x.get("ratio_vs_brgemm_float32") for h in RNN_SIZES for t in thread_list
         for x in pick(f"LSTM H={h} N=64 bfloat16 fwd", t)]
    log(f"  LSTM bf16 fwd N=64: {', '.join(f'{v:.2f}x' for v in r if v)} our f32; bar 1.7x")


# PyTorch models through brgemm.torch.convert: the same model built twice, once left in plain
# PyTorch and once a deep copy converted, timed in the same run on the same inputs. Shared with
# asv's bench_torch.py, so that both measure the same thing.

#: The ResNet-style stack: (C, K, R = S) convolutions, padding R // 2, each followed by a ReLU
#: (which convert fuses into the convolution's epilogue), then global average pooling and a
#: Linear to TORCH_CLASSES. Input (N, C, H = W) = TORCH_CONV_INPUT: a training step takes
#: 80–190 ms on this project's 2-core machine (either library, 1 or 2 threads).
TORCH_CONV_STACK = [(64, 64, 1), (64, 64, 3), (64, 256, 1), (256, 64, 1), (64, 64, 3), (64, 256, 1)]
TORCH_CONV_INPUT = (16, 64, 28)
#: The LSTM tagger: (T, N, input, hidden), one nn.LSTM layer, a Linear on every step's output.
TORCH_LSTM = (50, 64, 256, 512)
TORCH_CLASSES = 10
TORCH_MODELS = ("resnet", "resnet_blocked", "lstm")  # resnet_blocked: convert(blocked=True), the same model
TORCH_PASSES = ("train step", "inference")
TORCH_LR = 1e-4  # small: the weights change every step (so ours repack) but stay near their start


def torch_model(torch, name, seed=0):
    """(model, input, target, forward FLOPs, bytes, label) of one --torch model in plain PyTorch,
    float32, the same weights and data for the same seed (PyTorch's global RNG is left as it
    was). FLOPs count the convolutions or the LSTM, 2 per multiply-add, not the small head;
    bytes are 4 × (parameters + input + every layer's output)."""
    nn = torch.nn
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name in ("resnet", "resnet_blocked"):
            n, c0, hw = TORCH_CONV_INPUT
            layers, flops, acts = [], 0, n * c0 * hw * hw
            for c, k, r in TORCH_CONV_STACK:
                layers += [nn.Conv2d(c, k, r, padding=r // 2), nn.ReLU()]
                flops += 2 * n * k * c * r * r * hw * hw
                acts += n * k * hw * hw
            k = TORCH_CONV_STACK[-1][1]
            model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(k, TORCH_CLASSES))
            x = torch.randn(n, c0, hw, hw)
            target = torch.randint(0, TORCH_CLASSES, (n,))
            label = f"ResNet-style {len(TORCH_CONV_STACK)} convs {n}x{c0}x{hw}x{hw}" + (
                " blocked" if name == "resnet_blocked" else "")
        elif name == "lstm":
            t, n, i, h = TORCH_LSTM

            class Tagger(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.lstm, self.head = nn.LSTM(i, h), nn.Linear(h, TORCH_CLASSES)

                def forward(self, x):
                    return self.head(self.lstm(x)[0])
            model = Tagger()
            x = torch.randn(t, n, i)
            target = torch.randint(0, TORCH_CLASSES, (t, n))
            flops = 8 * h * (i + h) * n * t
            acts = t * n * (i + h + TORCH_CLASSES)
            label = f"LSTM tagger T={t} N={n} {i}->{h}"
        else:
            raise ValueError(f"model must be one of {TORCH_MODELS}, got {name!r}")
    params = sum(p.numel() for p in model.parameters())
    return model, x, target, flops, 4 * (params + acts), label


def _torch_model_call(torch, model, x, target, pass_):
    """The callable timed for one pass: a training step (forward, cross-entropy, backward, plain
    SGD) or inference (eval, no_grad)."""
    if pass_ == "inference":
        model.eval()

        def infer():
            with torch.no_grad():
                model(x)
        return infer
    if pass_ != "train step":
        raise ValueError(f"pass must be one of {TORCH_PASSES}, got {pass_!r}")
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=TORCH_LR)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        y = model(x)
        loss_fn(y.reshape(-1, TORCH_CLASSES), target.reshape(-1)).backward()
        opt.step()
    return step


def torch_model_fns(torch, name, pass_, seed=0):
    """({"brgemm": converted model's call, "torch": plain model's call}, FLOPs, bytes, label) for
    one model and pass. The converted model is a deep copy of the plain one (same starting
    weights, its own parameters and optimizer); both read the same input and target. A
    training step counts 3× the forward's FLOPs, less the first convolution's input gradient,
    which neither side computes (the input needs none)."""
    import copy
    from . import torch as bt  # here, not at the top: import brgemm must not import torch
    model, x, target, flops, nbytes, label = torch_model(torch, name, seed)
    ours = copy.deepcopy(model)
    bt.convert(ours, blocked=name == "resnet_blocked")
    fns = {"brgemm": _torch_model_call(torch, ours, x, target, pass_),
           "torch": _torch_model_call(torch, model, x, target, pass_)}
    if pass_ == "train step":
        first = 0
        if name in ("resnet", "resnet_blocked"):
            n, _, hw = TORCH_CONV_INPUT
            c, k, r = TORCH_CONV_STACK[0]
            first = 2 * n * k * c * r * r * hw * hw
        flops, nbytes = 3 * flops - first, 3 * nbytes
    return fns, flops, nbytes, f"{label} float32 {pass_}"


def torch_model_work(name, pass_):
    """The FLOPs torch_model_fns counts, but only the convolution taps that read the image (the
    bound for the ceiling; see conv_work). None for the LSTM tagger: its count is exact."""
    if name not in ("resnet", "resnet_blocked"):
        return None
    n, _, hw = TORCH_CONV_INPUT
    works = [conv_work(n, c, k, hw, r, 1, r // 2) for c, k, r in TORCH_CONV_STACK]
    return 3 * sum(works) - works[0] if pass_ == "train step" else sum(works)


TORCH_HEADER = (f"{'model: brgemm.torch.convert vs plain PyTorch':60} {'thr':>3} {'brgemm ms':>9} {'torch ms':>9} "
                f"{'x torch':>7} {'GFLOP/s':>8} {'%peak':>6}")


def _format_model(row):
    return (f"{row['case']:60} {row['threads']:>3} {1e3 * row['brgemm_seconds']:9.1f} "
            f"{1e3 * row['torch_seconds']:9.1f} {row['ratio_vs_torch']:7.2f} {row['brgemm_gflops']:8.1f} "
            f"{row['percent_of_peak'] or float('nan'):6.1f}")


def run_torch(peers, rounds, threads_list, log):
    """The --torch models (TORCH_CONV_STACK, plainly converted and with blocked=True, and
    TORCH_LSTM), training step and inference, float32, converted by brgemm.torch.convert
    against the same model in plain PyTorch; both libraries' threads pinned to the row's count.
    Logs its own table (milliseconds per call).

    Both sides allocate their outputs on every call, so page faults count: on this project's VM
    one costs ~1.4 µs, and whether glibc hands freed memory back (so the next call faults again)
    depends on what the process allocated before. Measured: plain PyTorch's ResNet-style
    inference on 1 thread faulted 18,752 times per call inside this loop (87 ms) and not at all
    alone (42 ms). MALLOC_TRIM_THRESHOLD_=-1 MALLOC_MMAP_THRESHOLD_=1000000000 in the
    environment removes the faults on both sides."""
    if peers.torch is None:
        log("  skipped the PyTorch models: torch is not installed")
        return []
    rows = []
    log("\n" + TORCH_HEADER)
    for threads in threads_list:
        peers.set_threads(threads)
        for name in TORCH_MODELS:
            for pass_ in TORCH_PASSES:
                fns, flops, nbytes, case = torch_model_fns(peers.torch, name, pass_)
                med, rat = compare(fns, rounds, threads)
                rows.append(_row(case, threads, flops, nbytes, med, rat, peak_of("fma_f32", threads),
                                 torch_model_work(name, pass_)))
                rows[-1].update({f"{lib}_seconds": t for lib, t in med.items()})
                log(_format_model(rows[-1]))
    return rows


TORCH_BAR = 1.2  # the issue's bar: a converted model's training step, float32, 2 threads


def torch_summary(rows, log):
    """The bar, from the rows: each model's training step at 2 threads."""
    steps = [r for r in rows if r["threads"] == 2 and r["case"].endswith("train step")]
    if rows and not steps:
        log(f"  the bar (training step, 2 threads, >= {TORCH_BAR}x plain PyTorch) needs --threads with 2")
    for r in steps:
        log(bar_line(f"{r['case']}, 2 threads, vs plain PyTorch", [r], TORCH_BAR))


def run(rounds=5, threads_list=None, shapes=None, log=print, dtypes=("f32", "bf16", "u8s8"), mlp=True, conv=True,
        rnn=True, torch=True):
    peers = Peers()
    threads_list = threads_list or thread_counts()
    rng = np.random.default_rng(0)
    rows = []

    # The microkernel bars: one BRGEMM call, stride batch, one thread, every available ukernel.
    m, n, k, b = KERNEL_SHAPE
    peers.set_threads(1)
    for dtype in dtypes:
        A, Bk, C, A2, B2 = _kernel_operands(rng, dtype, m, n, k, b)
        peak1 = peak_of(PEAK_OP[dtype], 1)
        for uk in ukernels():
            if uk["dtype"] != dtype:
                continue
            if not uk["available"]:
                log(f"  skipped {uk['name']}: this CPU lacks {uk['isa']}")
                continue
            kern = Kernel(m, n, k, dtype=dtype, ukernel=uk["name"])
            fns = {"brgemm": lambda: kern(A, Bk, C, b)}
            if dtype == "f32":
                fns["numpy"] = lambda: np.matmul(A2, B2, out=C)
            if peers.torch is not None:
                fns.update(_torch_peers(peers.torch, dtype, A2, B2, C))
            med, rat = compare(fns, rounds, 1)
            nbytes = A.itemsize * (b * m * k + b * k * n) + 4 * m * n
            rows.append(_row(f"brgemm {m}x{n}x{k} b{b} {uk['name']}", 1, 2 * m * n * k * b, nbytes, med, rat, peak1))
            log(_format(rows[-1]))

    # gemm: an ordinary matrix product against the peers' best.
    for dtype in dtypes:
        for threads in threads_list:
            peers.set_threads(threads)
            peak = peak_of(PEAK_OP[dtype], threads)
            for M, K, N in shapes or (GEMM_SHAPES if dtype == "f32" else LOWP_GEMM_SHAPES):
                A, Bk, C, A2, B2 = _kernel_operands(rng, dtype, M, N, K, 1)
                # Weights packed once, in column panels (what gemm reads fastest).
                A, B = A[0], (B2 if dtype == "f32" else pack_b(B2, dtype, layout="panels"))
                fns = {"brgemm": lambda: gemm(A, B, C)}
                if dtype == "f32":
                    fns["numpy"] = lambda: np.matmul(A, B, out=C)
                variants = _int8_variants(A, B, M, N, K) if dtype == "u8s8" else {}
                fns.update(variants)
                if peers.torch is not None:
                    fns.update(_torch_peers(peers.torch, dtype, A2, B2, C))
                med, rat = compare(fns, rounds, threads)
                nbytes = A.itemsize * (M * K + K * N) + 4 * M * N
                label = "gemm" if dtype == "f32" else f"gemm {dtype}"
                plain = {lib: t for lib, t in med.items() if lib not in variants}
                rows.append(_row(f"{label} {M}x{K}x{N}", threads, 2 * M * N * K, nbytes, plain, rat, peak))
                log(_format(rows[-1]))
                # Like for like: int8 A against torch._int_mm (s8 x s8), and a requantized uint8
                # output against the quantized Linear engines (which requantize too).
                for variant, (label, peer_prefix, out_bytes) in VARIANT_ROWS.items():
                    if variant not in med:
                        continue
                    sub = {"brgemm": med[variant]}
                    sub.update({lib: t for lib, t in med.items() if lib.startswith(peer_prefix)})
                    sub_rat = {lib: rat[lib] / rat[variant] for lib in sub if lib != "brgemm"}
                    rows.append(_row(f"{label} {M}x{K}x{N}", threads, 2 * M * N * K,
                                     M * K + K * N + out_bytes * M * N, sub, sub_rat, peak))
                    log(_format(rows[-1]))
    # QuantizedLinear's bar is on its product: the requantized uint8 gemm above, all threads.
    for r in rows:
        if r["case"].startswith(VARIANT_ROWS["brgemm_requant"][0]) and r["threads"] == max(threads_list):
            log(bar_line(f"{r['case']}, {r['threads']} threads (QuantizedLinear)", [r], 1.2))
    # GEMV with half-precision weights: memory-bound, so half the bytes should show. Compared
    # with the same product on f32 weights packed the same way (brgemm's fastest f32 path) and
    # the peers on f32.
    if "f32" in dtypes:
        K = N = 4096
        x = rng.standard_normal((1, K), dtype=np.float32)
        W = rng.standard_normal((K, N), dtype=np.float32)
        W32, W16 = pack_b(W, "f32", layout="panels"), pack_b(W, "f32f16", layout="panels")
        C = np.empty((1, N), np.float32)
        for threads in threads_list:
            peers.set_threads(threads)
            fns = {"brgemm": lambda: gemm(x, W16, C), "brgemm_f32_weights": lambda: gemm(x, W32, C),
                   "numpy": lambda: np.matmul(x, W, out=C)}
            if peers.torch is not None:
                fns.update(_torch_peers(peers.torch, "f32", x, W, C))
            med, rat = compare(fns, rounds, threads)
            rows.append(_row(f"gemv f16 weights 1x{K}x{N}", threads, 2 * K * N, 2 * K * N + 4 * (K + N),
                             med, rat, peak_of("fma_f32", threads)))
            log(_format(rows[-1]) + f"  (x f32 weights {rat['brgemm_f32_weights']:.2f})")
    # K-TanH on one thread (its bar): against numpy's vectorised tanh, torch.tanh and a plain
    # copy of the same array (the memory floor). The rate column counts G elements/s.
    if "f32" in dtypes:
        from .nn import functional
        peers.set_threads(1)
        for n in (10 ** 6, 10 ** 7):
            x = (rng.standard_normal(n) * 2).astype(np.float32)
            y = np.empty_like(x)
            fns = {"brgemm": lambda: functional.ktanh(x, out=y), "numpy": lambda: np.tanh(x, out=y),
                   "copy": lambda: np.copyto(y, x)}
            if peers.torch is not None:
                tx, ty = peers.torch.from_numpy(x), peers.torch.from_numpy(y)
                fns["torch"] = lambda: peers.torch.tanh(tx, out=ty)
            med, rat = compare(fns, rounds, 1)
            plain = {lib: t for lib, t in med.items() if lib != "copy"}
            rows.append(_row(f"ktanh f32 {n:.0e} (rate: G elements/s)", 1, n, 8 * n, plain, rat, None))
            rows[-1]["ratio_vs_copy"] = rat["copy"]
            log(_format(rows[-1]) + f"  (a copy: {rat['copy']:.2f}x ktanh's time)")
    if mlp:
        mlp_rows = run_mlp(peers, rng, rounds, threads_list, log)
        mlp_summary(mlp_rows, log)
        rows += mlp_rows
    if conv:
        conv_rows = run_conv(peers, rng, rounds, threads_list, log)
        conv_summary(conv_rows, log)
        rows += conv_rows
    if rnn:
        rnn_rows = run_rnn(peers, rng, rounds, threads_list, log)
        rnn_summary(rnn_rows, log)
        rows += rnn_rows
    if torch:
        torch_rows = run_torch(peers, rounds, threads_list, log)
        torch_summary(torch_rows, log)
        rows += torch_rows
    peers.set_threads(get_num_threads())
    return rows


def _ceiling_cases(torch, rng):
    """(bar, threads, peak op, FLOPs of the real work, bar ratio, PyTorch's callable) for the bars
    that ask most of the machine: what run_ceilings times."""
    cases = []

    def rnn_fwd(h, n):
        m, x = torch.nn.LSTM(h, h), torch.randn(RNN_STEPS, n, h)

        def f():
            with torch.no_grad():
                m(x)
        return f
    for h in RNN_SIZES:
        for n in (16, 64):
            cases.append((f"LSTM f32 fwd H={h} N={n} (the grid's geomean bar)", 1, "fma_f32",
                          2 * 4 * h * 2 * h * n * RNN_STEPS, 1.2, rnn_fwd(h, n)))
    for cell, gates, bar in (("LSTM", 4, 1.2), ("GRU", 3, 2.0)):
        h, n = 512, 64
        m = (torch.nn.LSTM if cell == "LSTM" else torch.nn.GRU)(h, h)
        x, g = torch.randn(RNN_STEPS, n, h).requires_grad_(), torch.randn(RNN_STEPS, n, h)

        def step(m=m, x=x, g=g):
            m(x)[0].backward(g)
        cases.append((f"{cell} training step H=512 N=64", 2, "fma_f32", 3 * 2 * gates * h * 2 * h * n * RNN_STEPS,
                      bar, step))
    x = rng.standard_normal((MLP_BATCH, MLP_SIZES[0]), dtype=np.float32)
    g = rng.standard_normal((MLP_BATCH, MLP_SIZES[-1]), dtype=np.float32)
    cases.append(("MLP 3x1024 N=256 f32 training step", 2, "fma_f32", mlp_flops(True), 1.5,
                  _torch_mlp(torch, MLP_SIZES, "float32", x, g)[1]))
    fns, flops, _, _ = torch_model_fns(torch, "lstm", "train step")
    cases.append(("LSTM tagger f32 training step (brgemm.torch)", 2, "fma_f32", flops, 1.2, fns["torch"]))
    x, w = torch.randn(1, 512, 7, 7), torch.randn(512, 512, 3, 3)

    def res5():
        with torch.no_grad():
            torch.nn.functional.conv2d(x, w, padding=1)
    cases.append(("Conv 512->512 7x7 3x3 N=1 f32 fwd", 1, "fma_f32", conv_work(1, 512, 512, 7, 3, 1, 1), 2.0, res5))
    m, k, n = 256, 4096, 4096
    A = rng.integers(0, 256, (m, k), dtype=np.uint8)
    B = rng.integers(-127, 128, (k, n), dtype=np.int8)
    engines = _torch_peers(torch, "u8s8", A, B, None)
    for name, fn in engines.items():
        if name.startswith("torch.qlinear"):
            cases.append((f"QuantizedLinear 256x4096x4096, {name}", 2, "dot_u8s8", 2 * m * n * k, 1.2, fn))
    return cases


def run_ceilings(peers, rounds, log):
    """PyTorch alone on the cases of the bars that ask most of the machine: its best time over
    the rounds, as % of the measured peak, and the % of the peak brgemm would need to be the
    bar's ratio faster (above 100: no implementation meets the bar on this machine)."""
    if peers.torch is None:
        log("  --ceilings needs PyTorch: pip install torch==2.13.0")
        return []
    rows = []
    log(f"\n{'bar case: PyTorch alone, best of the rounds':54} {'thr':>3} {'ms':>9} {'%peak':>6} {'bar':>5} "
        f"{'needs':>7}")
    for name, threads, op, work, bar, fn in _ceiling_cases(peers.torch, np.random.default_rng(0)):
        peers.set_threads(threads)
        fn()
        best = min(_per_call(fn, 0.2) for _ in range(rounds))
        pct = 100 * work / best / (peak_of(op, threads) * 1e9)
        rows.append({"case": name, "threads": threads, "torch_seconds": best, "torch_percent_of_peak": pct,
                     "bar": bar, "needs_percent_of_peak": bar * pct})
        log(f"{name:54} {threads:>3} {1e3 * best:9.2f} {pct:6.1f} {bar:5.1f} {bar * pct:6.1f}%"
            + ("  (above the peak)" if bar * pct > 100 else ""))
    # Bars on a geomean, or on PyTorch's best engine: what they need as a whole.
    grid = [r["needs_percent_of_peak"] for r in rows if r["case"].startswith("LSTM f32 fwd")]
    engines = [r["needs_percent_of_peak"] for r in rows if r["case"].startswith("QuantizedLinear")]
    for what, need in (("the LSTM grid's geomean bar needs (geomean)", geomean(grid) if grid else None),
                       ("the QuantizedLinear bar, against the best engine, needs", max(engines) if engines else None)):
        if need:
            log(f"  {what}: {need:.1f} % of the peak" + (" (above the peak)" if need > 100 else ""))
    return rows


HEADER = (f"{'case':52} {'thr':>3} {'GFLOP/s':>8} {'%peak':>6} {'%roof':>6} "
          f"{'numpy':>7} {'x numpy':>7} {'torch':>7} {'x torch':>7}")


def _format(row):
    def num(key, fmt):
        v = row.get(key)
        return format(v, fmt) if v is not None else format("-", ">" + fmt.split(".")[0])
    return (f"{row['case']:52} {row['threads']:>3} {num('brgemm_gflops', '8.1f')} "
            f"{num('percent_of_peak', '6.1f')} {num('percent_of_roofline', '6.1f')} "
            f"{num('numpy_gflops', '7.1f')} {num('ratio_vs_numpy', '7.2f')} "
            f"{num('torch_gflops', '7.1f')} {num('ratio_vs_torch', '7.2f')}"
            + (f"  ({row['torch_best']})" if row.get("torch_best", "torch") != "torch" else ""))


def plot(rows, path):
    """A roofline chart: the fp32 roofs for each thread count and every measured point."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peak = get_peak()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    ai = np.logspace(-1, 3, 200)
    for t in sorted({r["threads"] for r in rows}):
        p, bw = fp32_peak(t), peak["bandwidth"].get(str(t)) or peak["bandwidth"]["1"]
        ax.plot(ai, np.minimum(p, ai * bw), "--", color="gray" if t == 1 else "black",
                label=f"roofline, {t} thread{'s' * (t > 1)}")
    markers = {"brgemm": "o", "numpy": "s", "torch": "^"}
    for lib, marker in markers.items():
        pts = [(r["flops"] / r["bytes"], r[f"{lib}_gflops"], r["threads"]) for r in rows if f"{lib}_gflops" in r]
        for t, color in ((1, "tab:blue"), (2, "tab:orange")):
            xs = [x for x, _, th in pts if (th == 1) == (t == 1)]
            ys = [y for _, y, th in pts if (th == 1) == (t == 1)]
            if xs:
                ax.scatter(xs, ys, marker=marker, color=color if lib == "brgemm" else "none",
                           edgecolors=color, label=f"{lib}, {'1 thread' if t == 1 else 'all threads'}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("GFLOP/s")
    ax.set_title(f"brgemm fp32 on {peak['cpu']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m brgemm bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds per case (median reported)")
    parser.add_argument("--threads", type=str, default=None, help="comma-separated thread counts (default: 1 and all cores)")
    parser.add_argument("--dtypes", type=str, default="f32,bf16,u8s8",
                        help="comma-separated kernel dtypes to benchmark (f32, bf16, u8s8)")
    parser.add_argument("--mlp", action="store_true",
                        help="only the fully-connected cases: Linear forward, 3-layer MLP forward and training step")
    parser.add_argument("--conv", action="store_true",
                        help="only the convolution cases: ResNet-50 layers, forward f32/bf16 and backward f32, N = 1 and 16")
    parser.add_argument("--rnn", action="store_true",
                        help="only the recurrent cases: LSTM and GRU forward f32/bf16, training steps")
    parser.add_argument("--torch", action="store_true",
                        help="only the PyTorch models (a ResNet-style conv stack, an LSTM tagger), training step and "
                             "inference, converted by brgemm.torch.convert against plain PyTorch")
    parser.add_argument("--ceilings", action="store_true",
                        help="only PyTorch, on the cases of the bars that ask most of the machine: its best time "
                             "and the %% of the peak brgemm would need to meet each bar (run it on a quiet machine; "
                             "MALLOC_TRIM_THRESHOLD_=-1 MALLOC_MMAP_THRESHOLD_=1000000000 spares PyTorch the page "
                             "faults of fresh allocations)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    parser.add_argument("--plot", metavar="FILE.png", help="draw a roofline chart (needs matplotlib)")
    args = parser.parse_args(argv)
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        parser.error("--plot needs matplotlib: pip install matplotlib")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    threads = None
    if args.threads:
        try:
            threads = [int(t) for t in args.threads.split(",")]
        except ValueError:
            parser.error(f"--threads must be comma-separated integers, got {args.threads!r}")
        if min(threads) < 1:
            parser.error("--threads must be at least 1")

    peak = get_peak()
    print(f"brgemm {_core.isa()} on {peak['cpu']}; fp32 peak "
          + ", ".join(f"{peak['fma_f32'][str(t)]:.0f} GFLOP/s on {t} core{'s' * (t > 1)}" for t in peak["threads"])
          + f"; bandwidth {peak['bandwidth'][str(peak['threads'][-1])]:.0f} GB/s")
    peers = Peers()
    if peers.torch is None:
        print("(PyTorch not installed: no torch column. pip install torch==2.13.0)")
    if peers.limits is None:
        print("(threadpoolctl not installed: numpy's thread count is not pinned)")
    if args.torch and peers.torch is None:
        parser.error("--torch needs PyTorch: pip install torch==2.13.0")
    print("ratios are peer time / brgemm time, medians over rounds; %roof is % of the roofline bound")
    if not (args.ceilings or args.torch and not (args.mlp or args.conv or args.rnn)):  # those print their own
        print("\n" + HEADER)
    start = time.perf_counter()
    dtypes = tuple(d.strip() for d in args.dtypes.split(","))
    if not set(dtypes) <= set(PEAK_OP):
        parser.error(f"--dtypes must name f32, bf16 or u8s8, got {args.dtypes!r}")
    if args.ceilings:
        if peers.torch is None:
            parser.error("--ceilings needs PyTorch: pip install torch==2.13.0")
        rows = run_ceilings(peers, args.rounds, print)
        peers.set_threads(get_num_threads())
    elif args.mlp or args.conv or args.rnn or args.torch:
        peers, rng, tl = Peers(), np.random.default_rng(0), threads or thread_counts()
        rows = run_mlp(peers, rng, args.rounds, tl, print) if args.mlp else []
        if rows:
            mlp_summary(rows, print)
        if args.conv:
            conv_rows = run_conv(peers, rng, args.rounds, tl, print)
            conv_summary(conv_rows, print)
            rows += conv_rows
        if args.rnn:
            rnn_rows = run_rnn(peers, rng, args.rounds, tl, print)
            rnn_summary(rnn_rows, print)
            rows += rnn_rows
        if args.torch:
            torch_rows = run_torch(peers, args.rounds, tl, print)
            torch_summary(torch_rows, print)
            rows += torch_rows
        peers.set_threads(get_num_threads())
    else:
        rows = run(rounds=args.rounds, threads_list=threads, dtypes=dtypes)
    print(f"\n{len(rows)} cases in {time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"peak": peak, "rows": rows}, f, indent=1)
    if args.plot:
        plot(rows, args.plot)
        print(f"roofline chart: {os.path.abspath(args.plot)}")
    return 0
