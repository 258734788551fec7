"""The convolution group of `python -m brgemm bench --conv`: ResNet-50's convolutions forward
in f32 and bf16, backward in f32, and int8 inference, against PyTorch in its faster layout
(NCHW or channels_last) and its best quantized engine."""

import numpy as np

from ..peak import peak_of
from .harness import _row, compare, geomean, ratio_summary

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


def forward_case(peers, x, layer, dtype, g=None, algorithm="direct"):
    """One forward case: our layer in eval mode (``algorithm``: brgemm.nn.Conv2d's), blocked
    arrays in and out (as a chain of layers runs it), the output pre-allocated, against
    PyTorch's forward in both layouts (its conv2d has no out=). ``g``: also PyTorch's backward
    on that output gradient. Returns a namespace: conv, xb, yb, fns, torch_bwd, flops, nbytes,
    work (the taps that read the image)."""
    from types import SimpleNamespace
    from .. import layout
    from ..nn import Conv2d
    c, k, h, r, stride = layer
    n = x.shape[0]
    conv = Conv2d(c, k, r, stride, r // 2, dtype=dtype, seed=0, algorithm=algorithm).eval()
    oh, ow = conv.output_size(h, h)
    xb = layout.to_blocked(x, dtype=conv._act_dtype)
    yb = np.empty((n, -(-k // conv.bk), oh, ow, conv.bk), conv._act_dtype)
    elem = 4 if dtype == "float32" else 2
    case = SimpleNamespace(conv=conv, xb=xb, yb=yb, torch_bwd=None, flops=2 * n * k * c * r * r * oh * ow,
                           nbytes=elem * (n * c * h * h + n * k * oh * ow + k * c * r * r),
                           work=conv_work(n, c, k, h, r, stride, r // 2),
                           fns={"brgemm": lambda: conv.forward(xb, out=yb)})
    if peers.torch is not None:
        got = _torch_conv(peers.torch, x, conv, dtype, g)
        torch_fwd = got
        if g is not None:
            case.torch_bwd, torch_fwd = got
        case.fns.update(torch_fwd)
    return case


def run_conv(peers, rng, rounds, threads_list, log, batches=CONV_BATCHES):
    """ResNet-50's convolutions: forward f32 and bf16 (bf16 also against our f32), backward
    (input and weight gradients) f32, against PyTorch's faster layout; int8 inference (uint8
    in and out) against PyTorch's best quantized engine; the stride-1 3×3 layers also forward
    with algorithm="auto" (Winograd where it pays), against PyTorch and our direct form. FLOPs:
    2·N·K·C·R·S·OH·OW per product (backward: two), the direct convolution's also for Winograd
    (so its % of peak is an effective rate)."""
    from .. import layout
    from ..nn import QuantizedConv2d
    rows = []
    for threads in threads_list:
        peers.set_threads(threads)
        for n in batches:
            for layer in CONV_LAYERS:
                c, k, h, r, stride = layer
                label = _conv_label(*layer)
                x = rng.standard_normal((n, c, h, h), dtype=np.float32)
                ours = {}
                for dtype, peak_op in (("float32", "fma_f32"), ("bfloat16", "dot_bf16")):
                    g = None
                    if dtype == "float32":
                        oh = (h + 2 * (r // 2) - r) // stride + 1
                        g = rng.standard_normal((n, k, oh, oh), dtype=np.float32)
                    case = forward_case(peers, x, layer, dtype, g)
                    conv, xb, yb, fns = case.conv, case.xb, case.yb, case.fns
                    if dtype == "bfloat16":
                        fns["brgemm_float32"] = ours["float32"]
                    ours[dtype] = fns["brgemm"]
                    med, rat = compare(fns, rounds, threads)
                    plain = {lib: t for lib, t in med.items() if lib != "brgemm_float32"}
                    rows.append(_row(f"Conv {label} N={n} {dtype} fwd", threads, case.flops, case.nbytes, plain, rat,
                                     peak_of(peak_op, threads), case.work))
                    if "brgemm_float32" in rat:
                        rows[-1]["ratio_vs_brgemm_float32"] = rat["brgemm_float32"]
                    log.row(rows[-1])
                    if dtype != "float32":
                        continue
                    if r == 3 and stride == 1:  # Winograd where the layer's cost model says it pays
                        auto = forward_case(peers, x, layer, dtype, algorithm="auto")
                        fns = dict(auto.fns, brgemm_direct=ours["float32"])
                        med, rat = compare(fns, rounds, threads)
                        plain = {lib: t for lib, t in med.items() if lib != "brgemm_direct"}
                        rows.append(_row(f"Conv {label} N={n} float32 fwd auto", threads, auto.flops, auto.nbytes,
                                         plain, rat, peak_of(peak_op, threads), auto.work))
                        rows[-1]["ratio_vs_brgemm_direct"] = rat["brgemm_direct"]
                        rows[-1]["algorithm_used"] = auto.conv.algorithm_used
                        log.row(rows[-1])
                    # Backward: input and weight (and bias) gradients of the last training forward.
                    conv.train().forward(xb, out=yb)
                    gb = layout.to_blocked(g)
                    gx = np.empty(xb.shape, np.float32)
                    fns = {"brgemm": lambda conv=conv, gb=gb, gx=gx: conv.backward(gb, out=gx)}
                    if case.torch_bwd is not None:
                        fns.update(case.torch_bwd)
                    med, rat = compare(fns, rounds, threads)
                    rows.append(_row(f"Conv {label} N={n} float32 bwd", threads, 2 * case.flops, 3 * case.nbytes,
                                     med, rat, peak_of(peak_op, threads), 2 * case.work))
                    log.row(rows[-1])
                    # int8 inference: the f32 layer quantized, uint8 in, requantized uint8 out.
                    scale, zero, out_scale = 0.05, 128, 0.05 * float(np.sqrt(c * r * r))
                    qconv = QuantizedConv2d.from_float(conv, scale, zero, out_scale)
                    x_q = np.clip(np.rint(x / scale) + zero, 0, 255).astype(np.uint8)
                    xb_q = layout.to_blocked(x_q)
                    yb_q = np.empty((n, -(-k // qconv.bk)) + yb.shape[2:4] + (qconv.bk,), np.uint8)
                    fns = {"brgemm": lambda q=qconv, xb=xb_q, yb=yb_q: q.forward(xb, out=yb)}
                    if peers.torch is not None:
                        fns.update(_torch_qconv(peers.torch, x_q, qconv, scale, zero, out_scale))
                    med, rat = compare(fns, rounds, threads)
                    rows.append(_row(f"Conv {label} N={n} int8 fwd", threads, case.flops, case.nbytes // 4, med, rat,
                                     peak_of("dot_u8s8", threads), case.work))
                    log.row(rows[-1])
    return rows


def conv_summary(rows):
    """Summary lines of measured ratios: per kind of row and batch, the geomean over the layers
    against PyTorch (quantized engines for int8), and bf16 against our own f32."""
    lines = []
    for t in sorted({r["threads"] for r in rows}):
        for n in CONV_BATCHES:
            for kind in ("float32 fwd", "float32 fwd auto", "bfloat16 fwd", "float32 bwd", "int8 fwd"):
                got = [r for r in rows if r["threads"] == t and r["case"].endswith(f" N={n} {kind}")]
                if got:
                    lines.append(ratio_summary(f"{kind} N={n}, {t} thread(s), vs PyTorch", got))
            bf16 = [r["ratio_vs_brgemm_float32"] for r in rows if r["threads"] == t
                    and r["case"].endswith(f" N={n} bfloat16 fwd") and "ratio_vs_brgemm_float32" in r]
            if bf16:
                lines.append(f"  bfloat16 fwd N={n}, {t} thread(s), vs our float32: geomean {geomean(bf16):.2f}x")
            auto = [r["ratio_vs_brgemm_direct"] for r in rows if r["threads"] == t
                    and r["case"].endswith(f" N={n} float32 fwd auto") and "ratio_vs_brgemm_direct" in r]
            if auto:
                lines.append(f"  float32 fwd auto N={n}, {t} thread(s), vs our direct: geomean {geomean(auto):.2f}x")
    return lines
