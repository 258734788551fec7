"""Every f32 microkernel, called directly through a stride-batch Kernel (mirrors
tests/test_ukernels_f32.py): the parameter is the kernel's name, as brgemm.ukernels() and
the tests spell it, so one list drives both. Single thread: a Kernel call runs on the caller.

Hot cache: the same A, B and C every call (weights reused across a minibatch). The largest
case holds 2 x 512 KiB of A and B.
"""

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

UKERNELS = [u["name"] for u in brgemm.ukernels() if u["dtype"] == "f32"]


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


class UkernelF32:
    params = [UKERNELS, list(SHAPES)]
    param_names = ["ukernel", "shape"]

    def setup(self, ukernel, shape):
        why = _runnable(ukernel)
        if why:
            raise NotImplementedError(why)
        self.pin = ThreadPin(1)
        m, n, k, count = SHAPES[shape]
        self.kernel = brgemm.Kernel(m, n, k, batch="stride", ukernel=ukernel)
        assert self.kernel.name == ukernel  # the forced kernel is the one that runs
        self.A = random_f32((count, m, k), SEED_A)
        self.B = random_f32((count, k, n), SEED_B)
        self.C = random_f32((m, n), SEED_C)  # beta = 0 overwrites it
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

    track_gflops.unit = "GFLOP/s"

    def track_percent_of_peak(self, ukernel, shape):
        # Against the measured 1-thread FMA peak (common.peak_gflops), not a datasheet;
        # timed first, then the peak is measured.
        gflops = self.flops / median_seconds_one(self._call) / 1e9
        return percent_of_peak(gflops, 1)

    track_percent_of_peak.unit = "%"
