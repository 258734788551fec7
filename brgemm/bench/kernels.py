"""The kernel group of `python -m brgemm bench --kernels`: every available microkernel on one
BRGEMM call (64x64x64, batch 32, one thread), `gemm` on ordinary matrix products in f32, bf16
and int8 (with int8 activations and a fused requantization as extra rows), a GEMV on half
precision weights, and K-TanH. Peers: numpy's matmul (OpenBLAS), torch.mm, torch._int_mm and
PyTorch's quantized Linear under each engine."""

import numpy as np

from .. import Epilogue, Kernel, gemm, pack_b, ukernels
from ..peak import peak_of
from .harness import _row, compare

GEMM_SHAPES = [(64, 64, 64), (1024, 1024, 1024), (256, 1024, 1024), (64, 4096, 4096)]  # (M, K, N)
LOWP_GEMM_SHAPES = [(64, 1024, 1024), (256, 4096, 4096)]  # bf16 and int8, B packed once
PEAK_OP = {"f32": "fma_f32", "bf16": "dot_bf16", "u8s8": "dot_u8s8", "s16s16": "dot_s16s16"}
KERNEL_SHAPE = (64, 64, 64, 32)  # M, N, K, batch

def _kernel_operands(rng, dtype, m, n, k, b):
    """A (b, m, k), packed B data, C and the numpy / torch operands of the same sum as one GEMM."""
    import ml_dtypes
    if dtype == "u8s8":
        A = rng.integers(0, 256, (b, m, k), dtype=np.uint8)
        B = rng.integers(-128, 128, (b, k, n), dtype=np.int8)
        C = np.empty((m, n), np.int32)
    elif dtype == "s16s16":  # DFP-16 mantissas: the whole int16 range
        A = rng.integers(-2 ** 15, 2 ** 15, (b, m, k), dtype=np.int16)
        B = rng.integers(-2 ** 15, 2 ** 15, (b, k, n), dtype=np.int16)
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
    and a quantized Linear under each engine (u8 activations, s8 weights, u8 output); none for
    int16, which PyTorch does not multiply on the CPU."""
    if dtype == "s16s16":
        return {}
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



def ukernel_case(peers, rng, dtype, name):
    """(callables, FLOPs, bytes, case) for one microkernel on KERNEL_SHAPE: one BRGEMM call with a
    stride batch and B packed for its dtype, against the peers' same sum as one GEMM."""
    m, n, k, b = KERNEL_SHAPE
    A, Bk, C, A2, B2 = _kernel_operands(rng, dtype, m, n, k, b)
    kern = Kernel(m, n, k, dtype=dtype, ukernel=name)
    fns = {"brgemm": lambda: kern(A, Bk, C, b)}
    if dtype == "f32":
        fns["numpy"] = lambda: np.matmul(A2, B2, out=C)
    if peers.torch is not None:
        fns.update(_torch_peers(peers.torch, dtype, A2, B2, C))
    nbytes = A.itemsize * (b * m * k + b * k * n) + 4 * m * n
    return fns, 2 * m * n * k * b, nbytes, f"{name} {m}x{n}x{k} b{b}"


def gemm_case(peers, rng, dtype, M, K, N, variants=False):
    """(callables, FLOPs, bytes, case, brgemm variants) for `gemm` on one (M, K, N) product, B
    packed once in column panels for bf16 and int8 (what gemm reads fastest). ``variants``:
    int8 also as _int8_variants (timed in the same rounds, reported in their own rows)."""
    A, Bk, C, A2, B2 = _kernel_operands(rng, dtype, M, N, K, 1)
    A, B = A[0], (B2 if dtype == "f32" else pack_b(B2, dtype, layout="panels"))
    fns = {"brgemm": lambda: gemm(A, B, C)}
    if dtype == "f32":
        fns["numpy"] = lambda: np.matmul(A, B, out=C)
    extra = _int8_variants(A, B, M, N, K) if variants and dtype == "u8s8" else {}
    fns.update(extra)
    if peers.torch is not None:
        fns.update(_torch_peers(peers.torch, dtype, A2, B2, C))
    nbytes = A.itemsize * (M * K + K * N) + 4 * M * N
    return fns, 2 * M * N * K, nbytes, f"gemm {dtype} {M}x{K}x{N}", extra


def available_ukernels(dtype, log):
    """The names of dtype's microkernels this CPU runs; the others are noted as skipped."""
    names = []
    for uk in ukernels():
        if uk["dtype"] != dtype:
            continue
        if uk["available"]:
            names.append(uk["name"])
        else:
            log.note(f"skipped {uk['name']}: this CPU lacks {uk['isa']}")
    return names


def run_kernels(peers, rng, rounds, threads_list, log, dtypes=("f32", "bf16", "u8s8", "s16s16"), shapes=None):
    """Every available microkernel (one thread), then gemm per dtype and thread count, the GEMV
    on half precision weights and K-TanH."""
    rows = []
    peers.set_threads(1)
    for dtype in dtypes:
        for name in available_ukernels(dtype, log):
            fns, flops, nbytes, case = ukernel_case(peers, rng, dtype, name)
            med, rat = compare(fns, rounds, 1)
            rows.append(_row(case, 1, flops, nbytes, med, rat, peak_of(PEAK_OP[dtype], 1)))
            log.row(rows[-1])
    for dtype in dtypes:
        for threads in threads_list:
            peers.set_threads(threads)
            peak = peak_of(PEAK_OP[dtype], threads)
            for M, K, N in shapes or (GEMM_SHAPES if dtype == "f32" else LOWP_GEMM_SHAPES):
                fns, flops, nbytes, case, variants = gemm_case(peers, rng, dtype, M, K, N, variants=True)
                med, rat = compare(fns, rounds, threads)
                plain = {lib: t for lib, t in med.items() if lib not in variants}
                rows.append(_row(case, threads, flops, nbytes, plain, rat, peak))
                log.row(rows[-1])
                # Like for like: int8 A against torch._int_mm (s8 x s8), and a requantized uint8
                # output against the quantized Linear engines (which requantize too).
                for variant, (label, peer_prefix, out_bytes) in VARIANT_ROWS.items():
                    if variant not in med:
                        continue
                    sub = {"brgemm": med[variant]}
                    sub.update({lib: t for lib, t in med.items() if lib.startswith(peer_prefix)})
                    sub_rat = {lib: rat[lib] / rat[variant] for lib in sub if lib != "brgemm"}
                    rows.append(_row(f"{label} {M}x{K}x{N}", threads, flops, M * K + K * N + out_bytes * M * N,
                                     sub, sub_rat, peak))
                    log.row(rows[-1])
    if "s16s16" in dtypes:
        from .dfp import run_dfp
        rows += run_dfp(peers, rng, rounds, threads_list, log)
    if "f32" in dtypes:
        rows += _run_gemv(peers, rng, rounds, threads_list, log) + _run_ktanh(peers, rng, rounds, log)
    softmax_dtypes = [d for d in ("f32", "bf16") if d in dtypes]
    if softmax_dtypes:
        rows += _run_softmax(peers, rng, rounds, threads_list, log, softmax_dtypes)
    return rows


def _run_gemv(peers, rng, rounds, threads_list, log):
    """GEMV with half-precision weights: memory-bound, so half the bytes should show. Compared
    with the same product on f32 weights packed the same way (brgemm's fastest f32 path) and
    the peers on f32."""
    rows = []
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
        log.row(rows[-1])
    return rows


def _run_ktanh(peers, rng, rounds, log):
    """K-TanH on one thread against numpy's vectorised tanh, torch.tanh and a plain copy of the
    same array (the memory floor). The rate column counts G elements/s."""
    from ..nn import functional
    rows = []
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
        log.row(rows[-1])
    return rows


def _run_softmax(peers, rng, rounds, threads_list, log, dtypes, shape=(1000, 1000)):
    """The softmax family over the rows of a 1000 x 1000 array: exact and Taylor (order 2),
    forward and backward, against torch.softmax and its backward (the Taylor rows too: PyTorch
    has no Taylor softmax, the exact one is what it would replace) and a plain copy of the same
    array (the memory floor). The rate column counts G elements/s."""
    import ml_dtypes

    from ..nn import functional
    torch = peers.torch
    rows = []
    x32 = (rng.standard_normal(shape) * 2).astype(np.float32)
    g32 = rng.standard_normal(shape).astype(np.float32)
    n = x32.size
    for dtype in dtypes:
        npt = np.float32 if dtype == "f32" else ml_dtypes.bfloat16
        x, g = x32.astype(npt), g32.astype(npt)
        y, copy_out = functional.softmax(x), np.empty_like(x)
        size = x.itemsize
        ours = {("exact", "forward"): lambda: functional.softmax(x),
                ("taylor2", "forward"): lambda: functional.taylor_softmax(x),
                ("exact", "backward"): lambda: functional.softmax_backward(g, y),
                ("taylor2", "backward"): lambda: functional.taylor_softmax_backward(g, x)}
        theirs = {}
        if torch is not None:
            tdt = torch.float32 if dtype == "f32" else torch.bfloat16
            tx, tg = torch.from_numpy(x32).to(tdt), torch.from_numpy(g32).to(tdt)
            ty = torch.softmax(tx, -1)
            theirs = {"forward": lambda: torch.softmax(tx, -1),
                      "backward": lambda: torch._softmax_backward_data(tg, ty, -1, tdt)}
        for threads in threads_list:
            peers.set_threads(threads)
            for (kind, direction), fn in ours.items():
                fns = {"brgemm": fn, "copy": lambda: np.copyto(copy_out, x)}
                if direction in theirs:
                    fns["torch"] = theirs[direction]
                med, rat = compare(fns, rounds, threads)
                plain = {lib: t for lib, t in med.items() if lib != "copy"}
                arrays = 2 if direction == "forward" else 3  # x → y; (y or x, grad) → grad_x
                rows.append(_row(f"softmax {kind} {direction} {dtype} {shape[0]}x{shape[1]} (rate: G elements/s)",
                                 threads, n, arrays * size * n, plain, rat, None))
                rows[-1]["ratio_vs_copy"] = rat["copy"]
                log.row(rows[-1])
    return rows
