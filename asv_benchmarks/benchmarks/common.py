"""Shared helpers for the asv suite: seeded inputs, thread pinning, the measured peak, and
the timing used by the track_* benchmarks (which report rates and ratios, so they time
themselves rather than leaving it to asv).

Nothing here does work at import time: asv imports this module to discover benchmarks and
then runs each benchmark in a fresh interpreter, so import-time work is paid by every
process (and measuring the peak there would also run for discovery).
"""

import os
import sys
import time
from functools import lru_cache

import numpy as np

try:
    import threadpoolctl
except ImportError:  # numpy peers are then skipped (see ThreadPin)
    threadpoolctl = None

import brgemm
from brgemm import _core

# Seeds are fixed and only ever appended to, so that a result never moves because its
# inputs changed.
SEED_A = 0
SEED_B = 1
SEED_C = 2

# Between libraries, sleep this long so that threads still spinning after the previous
# library's last call do not take the cores from the next one. OpenBLAS's workers busy-wait
# for ~0.1 s: with a 0.05 s pause, brgemm on 2 threads measured 3x slower right after numpy
# (256x1024x1024), and equal to its own-process time with 0.2 s.
PAUSE_S = 0.2


def import_torch():
    """torch, or None if it is not importable. Imported on first use, not at module level:
    asv starts a fresh interpreter per benchmark and parameter set, and importing torch
    takes ~2 s, so only the rows that use it pay for it."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def random_f32(shape, seed):
    """A C-contiguous float32 array, uniform in [-1, 1), the same for the same seed."""
    rng = np.random.default_rng(seed)
    a = rng.random(shape, dtype=np.float32)
    a *= 2
    a -= 1
    return a


def cpu_count():
    """CPUs this process may run on (affinity, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@lru_cache(maxsize=None)
def peak_gflops(threads, op="fma_f32"):
    """The measured peak of ``op`` on ``threads`` threads, in GFLOP/s; None if this CPU or
    build lacks it. Measured once per thread count per process (0.2 s each)."""
    g = _core.measure_peak(op, int(threads), 0.2)
    return g if g > 0 else None


def percent_of_peak(gflops, threads, op="fma_f32"):
    peak = peak_gflops(threads, op)
    if peak is None:
        return float("nan")  # a missing peak must not look like 0 %
    return 100.0 * gflops / peak


def _sample(fn, number):
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return time.perf_counter() - t0


def _calibrate(fn, min_sample):
    """Calls per sample so that one sample lasts at least ``min_sample`` seconds (timer
    resolution and call overhead then stay small next to it)."""
    fn()  # warm-up: first-call dispatch, thread-pool start, page faults on C
    number = 1
    while True:
        dt = _sample(fn, number)
        if dt >= min_sample:
            return number
        # Aim a little past min_sample instead of doubling blindly.
        number = max(number * 2, int(number * 1.2 * min_sample / max(dt, 1e-9)) + 1)


def median_seconds(fns, repeat=5, min_sample=0.01, pause=PAUSE_S):
    """Seconds per call of each callable in ``fns`` ({name: fn}): the median of ``repeat``
    samples each, with a ``pause`` whenever the library changes.

    Rounds alternate in order, A B | B A | A B ... (after calibrating A then B): drift on a
    shared machine hits every library alike, and consecutive rounds meet on the same library,
    which halves the pauses. A single library never pauses: asv runs each benchmark in a
    fresh process, where nothing ran before it (so measure the peak after timing).
    """
    order = list(fns)
    last = [None]

    def turn(name):
        if last[0] is not None and last[0] != name:
            time.sleep(pause)
        last[0] = name

    numbers = {}
    for name in order:
        turn(name)
        numbers[name] = _calibrate(fns[name], min_sample)
    samples = {name: [] for name in order}
    for _ in range(repeat):
        order.reverse()
        for name in order:
            turn(name)
            samples[name].append(_sample(fns[name], numbers[name]) / numbers[name])
    return {name: float(np.median(s)) for name, s in samples.items()}


def ratio(fns, peer, ours="brgemm"):
    """fns[peer]'s median time over fns[ours]'s, timed together (NaN when the peer is missing,
    e.g. torch not installed)."""
    if peer not in fns:
        return float("nan")
    t = median_seconds({ours: fns[ours], peer: fns[peer]})
    return t[peer] / t[ours]


def median_seconds_one(fn, **kwargs):
    return median_seconds({"fn": fn}, **kwargs)["fn"]


class ThreadPin:
    """Pins every library in play to ``threads`` threads: brgemm, torch (if already
    imported: import it first) and numpy's BLAS (through threadpoolctl; without it numpy rows
    must be skipped). ``restore()`` undoes the BLAS limit; asv runs each benchmark in its own
    process anyway."""

    def __init__(self, threads):
        if threads > cpu_count():
            raise NotImplementedError(f"{threads} threads > {cpu_count()} CPUs available")
        brgemm.set_num_threads(threads)
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(threads)
        self._limits = None
        if threadpoolctl is not None:
            # user_api="blas" only: an "openmp" limit would also reach brgemm's libgomp.
            self._limits = threadpoolctl.threadpool_limits(limits=threads, user_api="blas")

    def restore(self):
        if self._limits is not None:
            self._limits.restore_original_limits()
            self._limits = None


class PeerTimed:
    """What the layer benchmarks track, the thread count being their last parameter: setup sets
    self.pin (a ThreadPin), self.fns ({"brgemm": fn, peer name: fn, ...}), self.flops and
    self.peak_op (the instruction whose peak the % is of)."""

    peak_op = "fma_f32"

    def teardown(self, *args):
        self.pin.restore()

    def time_brgemm(self, *args):
        self.fns["brgemm"]()

    def track_percent_of_peak(self, *args):
        t = median_seconds({"brgemm": self.fns["brgemm"]})["brgemm"]
        return percent_of_peak(self.flops / t * 1e-9, args[-1], self.peak_op)

    track_percent_of_peak.unit = "%"

    def track_ratio_vs_torch(self, *args):
        """The fastest peer's time over ours (NaN without a peer, e.g. torch not installed)."""
        if len(self.fns) < 2:
            return float("nan")
        t = median_seconds(self.fns)
        return min(v for lib, v in t.items() if lib != "brgemm") / t["brgemm"]

    track_ratio_vs_torch.unit = "x"
