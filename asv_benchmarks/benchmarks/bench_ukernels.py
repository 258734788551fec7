"""Every microkernel of every dtype, called directly through a stride-batch Kernel (mirrors
tests/test_ukernels_<dtype>.py): the parameter is the kernel's name, as brgemm.ukernels() and
the tests spell it, so one list drives both. Single thread: a Kernel call runs on the caller.
bf16 and int8 kernels get B packed once (pack_b), as weights are; % of peak is against the
measured peak of their own instruction (FMA, vdpbf16ps, vpdpbusd, vpdpwssd).

Hot cache: the same A, B and C every call (weights reused across a minibatch). The largest
case holds 2 x 512 KiB of A and B.
"""

import ml_dtypes
import numpy as np

import brgemm

from .common import (SEED_A, SEED_B, SEED_C, ThreadPin, median_seconds_one,
                     percent_of_peak, random_f32)

# (m, n, k, batch): square tiles at two sizes, then one whose m, n and k all leave
# remainders for every MR x NR in the table (the edge tiles are the kernel's job).
SHAPES = {
    "64x64x64_b32": (64, 64, 64, 32),
    "32x32x32_b16": (32, 32, 32, 16),
    "65x65x63_b8":  (65, 65, 63, 8),
}

UKERNELS = [u["name"] for u in brgemm.ukernels()]
DTYPE = {u["name"]: u["dtype"] for u in brgemm.ukernels()}
PEAK_OP = {"f32": "fma_f32", "bf16": "dot_bf16", "u8s8": "dot_u8s8", "s16s16": "dot_s16s16"}


def operands(dtype, m, n, k, count):
    """Seeded A (count, m, k), B in the kernel's layout, and C."""
    if dtype == "u8s8":
        A = np.random.default_rng(SEED_A).integers(0, 256, (count, m, k), dtype=np.uint8)
        B = np.random.default_rng(SEED_B).integers(-128, 128, (count, k, n), dtype=np.int8)
        return A, brgemm.pack_b(B, dtype).data, np.zeros((m, n), np.int32)
    if dtype == "s16s16":  # DFP-16 mantissas over the whole int16 range
        A = np.random.default_rng(SEED_A).integers(-2 ** 15, 2 ** 15, (count, m, k), dtype=np.int16)
        B = np.random.default_rng(SEED_B).integers(-2 ** 15, 2 ** 15, (count, k, n), dtype=np.int16)
        return A, brgemm.pack_b(B, dtype).data, np.zeros((m, n), np.int32)
    A, B = random_f32((count, m, k), SEED_A), random_f32((count, k, n), SEED_B)
    C = random_f32((m, n), SEED_C)  # beta = 0 overwrites it
    if dtype == "bf16":
        A = A.astype(ml_dtypes.bfloat16)
        B = brgemm.pack_b(B.astype(ml_dtypes.bfloat16), dtype).data
    return A, B, C


def _runnable(name):
    """None if ``name`` can run here, else why not: the CPU or build lacks its ISA, or
    BRGEMM_ISA / set_isa caps the level below it."""
    info = next(u for u in brgemm.ukernels() if u["name"] == name)
    if not info["available"]:
        return f"{name}: not available on this CPU or build"
    levels = brgemm.available_isas()  # ordered, reference first
    if info["isa"] not in levels or levels.index(info["isa"]) > levels.index(brgemm.isa()):
        return f"{name}: needs {info['isa']}, active ISA is {brgemm.isa()}"
    return None


class Ukernel:
    params = [UKERNELS, list(SHAPES)]
    param_names = ["ukernel", "shape"]

    def setup(self, ukernel, shape):
        why = _runnable(ukernel)
        if why:
            raise NotImplementedError(why)
        self.pin = ThreadPin(1)
        m, n, k, count = SHAPES[shape]
        self.dtype = DTYPE[ukernel]
        self.kernel = brgemm.Kernel(m, n, k, dtype=self.dtype, batch="stride", ukernel=ukernel)
        assert self.kernel.name == ukernel  # the forced kernel is the one that runs
        self.A, self.B, self.C = operands(self.dtype, m, n, k, count)
        self.count = count
        self.flops = 2.0 * m * n * k * count

    def teardown(self, ukernel, shape):
        if hasattr(self, "pin"):  # asv calls teardown after a skipped setup too
            self.pin.restore()

    def _call(self):
        self.kernel(self.A, self.B, self.C, self.count)

    def time_brgemm(self, ukernel, shape):
        self._call()

    def track_gflops(self, ukernel, shape):
        return self.flops / median_seconds_one(self._call) / 1e9

    track_gflops.unit = "GFLOP/s (GOP/s for int8 and int16)"

    def track_percent_of_peak(self, ukernel, shape):
        # Against the measured 1-thread peak of the kernel's instruction (common.peak_gflops),
        # not a datasheet; timed first, then the peak is measured.
        gflops = self.flops / median_seconds_one(self._call) / 1e9
        return percent_of_peak(gflops, 1, op=PEAK_OP[self.dtype])

    track_percent_of_peak.unit = "%"
