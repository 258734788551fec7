"""DFP-16 (brgemm.dfp, mirrors tests/test_dfp.py and tests/test_dfp_linear.py): the conversion of a
float32 tensor to int16 mantissas, the chunked DFP-16 product, and one Linear(dtype="dfp16") and one
Conv2d(dtype="dfp16") training step (tests/test_dfp_conv.py) against the same layer in float32. One
thread; % of the measured int16 peak."""

import numpy as np

import brgemm
from brgemm import dfp
from brgemm.nn import Conv2d, Linear

from .common import SEED_A, SEED_B, ThreadPin, median_seconds_one, percent_of_peak, random_f32


class Convert:
    params = [[1 << 12, 1 << 20]]
    param_names = ["elements"]

    def setup(self, n):
        self.pin = ThreadPin(1)
        self.x = random_f32((n,), SEED_A)
        self.m = np.empty(n, np.int16)

    def teardown(self, n):
        self.pin.restore()

    def time_to_dfp16(self, n):
        dfp.to_dfp16(self.x, out=self.m)


class Matmul:
    params = [["256x1024x1024"]]
    param_names = ["shape"]

    def setup(self, shape):
        self.pin = ThreadPin(1)
        m, k, n = (int(s) for s in shape.split("x"))
        self.a = dfp.to_dfp16(random_f32((m, k), SEED_A))
        self.b = dfp.to_dfp16(random_f32((k, n), SEED_B) * np.float32(0.03))
        self.c = np.empty((m, n), np.float32)
        self.flops = 2.0 * m * n * k

    def teardown(self, shape):
        self.pin.restore()

    def _call(self):
        dfp.matmul(self.a, self.b, out=self.c)

    def time_matmul(self, shape):
        self._call()

    def track_percent_of_int16_peak(self, shape):
        return percent_of_peak(self.flops / median_seconds_one(self._call) / 1e9, 1, op="dot_s16s16")

    track_percent_of_int16_peak.unit = "%"


class LinearStep:
    params = [["float32", "dfp16"]]
    param_names = ["dtype"]

    def setup(self, dtype):
        self.pin = ThreadPin(1)
        self.layer = Linear(1024, 1024, dtype=dtype, seed=0)
        self.x = random_f32((256, 1024), SEED_A)
        self.gy = random_f32((256, 1024), SEED_B)

    def teardown(self, dtype):
        self.pin.restore()

    def time_forward_backward(self, dtype):
        self.layer(self.x)
        self.layer.backward(self.gy)


class Conv2dStep:
    """Issue 23's layer: 128 → 128 3×3 on 28 × 28, N = 16, forward + ∂x + ∂W (float32 direct: the
    same pass set)."""
    params = [["float32", "dfp16"]]
    param_names = ["dtype"]

    def setup(self, dtype):
        self.pin = ThreadPin(1)
        self.layer = Conv2d(128, 128, 3, padding=1, dtype=dtype, seed=0, algorithm="direct")
        self.x = random_f32((16, 128, 28, 28), SEED_A)
        self.gy = random_f32((16, 128, 28, 28), SEED_B)
        self.flops = 3 * 2.0 * 16 * 28 * 28 * 128 * 128 * 9

    def teardown(self, dtype):
        self.pin.restore()

    def _call(self):
        self.layer(self.x)
        self.layer.backward(self.gy)

    def time_forward_backward(self, dtype):
        self._call()

    def track_percent_of_int16_peak(self, dtype):
        return percent_of_peak(self.flops / median_seconds_one(self._call) / 1e9, 1, op="dot_s16s16")

    track_percent_of_int16_peak.unit = "%"
