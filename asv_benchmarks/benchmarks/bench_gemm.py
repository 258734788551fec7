"""brgemm.gemm against its peers on the same shapes and thread counts, in the same run
(the benchmark side of the gemm tests in tests/test_batch_reduce_gemm.py). Absolute times
drift on a shared machine; GemmVsPeers times brgemm and one peer back to back in one
process and reports their ratio, which does not.

Hot cache: the same A, B and C every call. Peers: numpy (its bundled OpenBLAS) and torch
(oneDNN / MKL on CPU). Every library in the process is pinned to the row's thread count.
"""

import numpy as np

import brgemm

from .common import (SEED_A, SEED_B, SEED_C, ThreadPin, import_torch, median_seconds,
                     median_seconds_one, percent_of_peak, random_f32, threadpoolctl)

# M x K x N. A capped grid: a tiny product (call overhead; brgemm runs it on one thread
# whatever the row says), a short-and-wide one, a square one, and a GEMV-like one whose
# 64 MiB B streams from memory. `asv run --python=same --quick` stays under ~3 minutes.
SHAPES = {
    "64x64x64":       (64, 64, 64),
    "256x1024x1024":  (256, 1024, 1024),
    "1024x1024x1024": (1024, 1024, 1024),
    "64x4096x4096":   (64, 4096, 4096),
}
THREADS = [1, 2]
LIBRARIES = ["brgemm", "numpy", "torch"]


def _unavailable(library):
    """Why ``library`` cannot run here, or None. Imports torch when asked about it."""
    if library == "torch" and import_torch() is None:
        return "torch is not importable"
    if library == "numpy" and threadpoolctl is None:
        # Without threadpoolctl numpy's BLAS cannot be pinned, so its row would run on
        # every core whatever its thread count says; a mislabelled number is worse than none.
        return "threadpoolctl is not importable: numpy's BLAS threads cannot be pinned"
    return None


def _matmul(library, A, B, C):
    """A zero-argument callable computing C = A @ B with ``library``, writing into the
    preallocated C (no allocation inside the timing)."""
    if library == "brgemm":
        return lambda: brgemm.gemm(A, B, C)
    if library == "numpy":
        return lambda: np.matmul(A, B, out=C)
    torch = import_torch()
    tA, tB, tC = (torch.from_numpy(x) for x in (A, B, C))  # views, no copies
    return lambda: torch.mm(tA, tB, out=tC)


def _setup_row(obj, shape, threads, libraries):
    """Shared setup: skip if a library cannot run, pin threads, make seeded A, B and a
    preallocated C, and one callable per library."""
    for lib in libraries:
        why = _unavailable(lib)  # before pinning: it imports torch, which pinning then sees
        if why:
            raise NotImplementedError(why)
    obj.pin = ThreadPin(threads)
    M, K, N = SHAPES[shape]
    A = random_f32((M, K), SEED_A)
    B = random_f32((K, N), SEED_B)
    C = random_f32((M, N), SEED_C)  # overwritten: every library computes beta = 0
    obj.flops = 2.0 * M * N * K
    obj.run = {lib: _matmul(lib, A, B, C) for lib in libraries}


def _teardown_row(obj):
    if hasattr(obj, "pin"):  # asv calls teardown after a skipped setup too
        obj.pin.restore()


class Gemm:
    """One library per row: its time, rate and share of the machine's measured peak."""

    params = [list(SHAPES), THREADS, LIBRARIES]
    param_names = ["shape", "threads", "library"]
    timeout = 180

    def setup(self, shape, threads, library):
        _setup_row(self, shape, threads, [library])
        self.fn = self.run[library]

    def teardown(self, shape, threads, library):
        _teardown_row(self)

    def time_gemm(self, shape, threads, library):
        self.fn()

    def track_gflops(self, shape, threads, library):
        return self.flops / median_seconds_one(self.fn) / 1e9

    track_gflops.unit = "GFLOP/s"

    def track_percent_of_peak(self, shape, threads, library):
        # Against the measured FMA peak at this row's thread count, for every library;
        # timed first, so that the peak loop's threads are not still spinning.
        gflops = self.flops / median_seconds_one(self.fn) / 1e9
        return percent_of_peak(gflops, threads)

    track_percent_of_peak.unit = "%"


class GemmVsPeers:
    """t_peer / t_brgemm, both measured now in this process, rounds interleaved:
    > 1 means brgemm is faster. A class of its own rather than a method of Gemm, so that
    no process is spent on rows (numpy, torch) for which a ratio to brgemm means nothing."""

    params = [list(SHAPES), THREADS, ["numpy", "torch"]]
    param_names = ["shape", "threads", "peer"]
    timeout = 180

    def setup(self, shape, threads, peer):
        _setup_row(self, shape, threads, ["brgemm", peer])

    def teardown(self, shape, threads, peer):
        _teardown_row(self)

    def track_ratio(self, shape, threads, peer):
        t = median_seconds({"brgemm": self.run["brgemm"], peer: self.run[peer]})
        return t[peer] / t["brgemm"]

    track_ratio.unit = "x"


# bf16 and int8 on weights packed once (pack_b, in column panels), against PyTorch's paths
# for the same product: torch.mm on bfloat16; for int8 torch._int_mm and a quantized Linear per engine
# (the operands and peers are built by brgemm.bench, so both harnesses time the same thing).
LOWP_SHAPES = {"64x1024x1024": (64, 1024, 1024), "256x4096x4096": (256, 4096, 4096)}
PEAK_OP = {"bf16": "dot_bf16", "u8s8": "dot_u8s8"}


class GemmLowPrecision:
    """brgemm's rate and share of its instruction's peak, and t_best_torch / t_brgemm."""

    params = [["bf16", "u8s8"], list(LOWP_SHAPES), THREADS]
    param_names = ["dtype", "shape", "threads"]
    timeout = 300

    def setup(self, dtype, shape, threads):
        from brgemm.bench import _kernel_operands
        import_torch()  # before pinning, so that the pin reaches torch's threads too
        self.pin = ThreadPin(threads)
        M, K, N = LOWP_SHAPES[shape]
        A, _, C, A2, B2 = _kernel_operands(np.random.default_rng(SEED_A), dtype, M, N, K, 1)
        W = brgemm.pack_b(B2, dtype, layout="panels")
        self.A2, self.B2, self.C = A2, B2, C
        self.fn = lambda: brgemm.gemm(A2, W, C)
        self.flops = 2.0 * M * N * K

    def teardown(self, dtype, shape, threads):
        _teardown_row(self)

    def time_gemm(self, dtype, shape, threads):
        self.fn()

    def track_gops(self, dtype, shape, threads):
        return self.flops / median_seconds_one(self.fn) / 1e9

    track_gops.unit = "GFLOP/s (GOP/s for int8)"

    def track_percent_of_peak(self, dtype, shape, threads):
        gops = self.flops / median_seconds_one(self.fn) / 1e9
        return percent_of_peak(gops, threads, op=PEAK_OP[dtype])

    track_percent_of_peak.unit = "%"

    def track_ratio_vs_best_torch(self, dtype, shape, threads):
        torch = import_torch()
        if torch is None:
            return float("nan")
        from brgemm.bench import _torch_peers
        fns = {"brgemm": self.fn, **_torch_peers(torch, dtype, self.A2, self.B2, self.C)}
        t = median_seconds(fns)
        return min(t[lib] for lib in fns if lib != "brgemm") / t["brgemm"]

    track_ratio_vs_best_torch.unit = "x"


class GemmEpilogue:
    """What a fused epilogue costs: t_with / t_without on the same product (1.0 = free), and
    the like-for-like int8 rows against torch (int8 activations against torch._int_mm, a
    requantized uint8 output against the quantized Linear engines, which requantize too)."""

    params = [["f32_bias_relu", "bf16_to_bf16_out", "u8s8_to_u8", "s8s8"], list(LOWP_SHAPES), THREADS]
    param_names = ["case", "shape", "threads"]
    timeout = 300

    def setup(self, case, shape, threads):
        import ml_dtypes
        from brgemm.bench import _int8_variants, _kernel_operands
        import_torch()
        self.pin = ThreadPin(threads)
        M, K, N = LOWP_SHAPES[shape]
        dtype = {"s8s8": "u8s8"}.get(case.split("_")[0], case.split("_")[0])  # s8s8: A shifted below
        A, _, C, A2, B2 = _kernel_operands(np.random.default_rng(SEED_A), dtype, M, N, K, 1)
        W = B2 if dtype == "f32" else brgemm.pack_b(B2, dtype, layout="panels")
        bias = np.zeros(N, np.float32)
        self.A2, self.B2, self.C = A2, B2, C
        self.plain = lambda: brgemm.gemm(A2, W, C)
        if dtype == "f32":
            ep = brgemm.Epilogue(bias=bias, activation="relu")
            self.fused = lambda: brgemm.gemm(A2, W, C, epilogue=ep)
        elif dtype == "bf16":
            ep, Cb = brgemm.Epilogue(bias=bias, out_dtype="bfloat16"), np.empty((M, N), ml_dtypes.bfloat16)
            self.fused = lambda: brgemm.gemm(A2, W, Cb, epilogue=ep)
        else:
            variants = _int8_variants(A2, W, M, N, K)
            self.fused = variants["brgemm_requant" if case == "u8s8_to_u8" else "brgemm_s8"]
        self.peer = {"u8s8_to_u8": "torch.qlinear", "s8s8": "torch._int_mm"}.get(case)

    def teardown(self, case, shape, threads):
        _teardown_row(self)

    def track_cost_of_epilogue(self, case, shape, threads):
        t = median_seconds({"plain": self.plain, "fused": self.fused})
        return t["fused"] / t["plain"]

    track_cost_of_epilogue.unit = "x"

    def track_ratio_vs_torch(self, case, shape, threads):
        torch = import_torch()
        if torch is None or self.peer is None:
            return float("nan")
        from brgemm.bench import _torch_peers
        peers = {lib: fn for lib, fn in _torch_peers(torch, "u8s8", self.A2, self.B2, self.C).items()
                 if lib.startswith(self.peer)}
        if not peers:
            return float("nan")
        t = median_seconds({"brgemm": self.fused, **peers})
        return min(t[lib] for lib in peers) / t["brgemm"]

    track_ratio_vs_torch.unit = "x"


class GemvHalfWeights:
    """x (1, 4096) @ W (4096, 4096) with W in IEEE half, widened in registers: the product is
    bound by reading W, so half the bytes should nearly halve the time. t_f32 / t_f16 against
    brgemm's own f32 weights packed the same way (the bar: >= 1.5), and t_torch / t_f16."""

    params = [THREADS]
    param_names = ["threads"]

    def setup(self, threads):
        import_torch()
        self.pin = ThreadPin(threads)
        rng = np.random.default_rng(SEED_A)
        x = rng.standard_normal((1, 4096), dtype=np.float32)
        W = rng.standard_normal((4096, 4096), dtype=np.float32)
        W32, W16 = brgemm.pack_b(W, "f32", layout="panels"), brgemm.pack_b(W, "f32f16", layout="panels")
        C = np.empty((1, 4096), np.float32)
        self.f16 = lambda: brgemm.gemm(x, W16, C)
        self.f32 = lambda: brgemm.gemm(x, W32, C)
        self.x, self.W, self.C = x, W, C

    def teardown(self, threads):
        _teardown_row(self)

    def time_gemv_f16_weights(self, threads):
        self.f16()

    def track_speedup_over_f32_weights(self, threads):
        t = median_seconds({"f16": self.f16, "f32": self.f32})
        return t["f32"] / t["f16"]

    track_speedup_over_f32_weights.unit = "x"

    def track_ratio_vs_torch(self, threads):
        torch = import_torch()
        if torch is None:
            return float("nan")
        tx, tW, tC = (torch.from_numpy(a) for a in (self.x, self.W, self.C))
        t = median_seconds({"f16": self.f16, "torch": lambda: torch.mm(tx, tW, out=tC)})
        return t["torch"] / t["f16"]

    track_ratio_vs_torch.unit = "x"
