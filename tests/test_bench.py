"""The benchmark's bookkeeping (brgemm.bench): the work a padded convolution really does, the
ratio at the peak that every bar is reported with, and the bar lines. Timings are not tested
here (benchmarks prove speed); what is tested is the arithmetic the reports rest on."""

import numpy as np
import pytest

from brgemm import bench
from brgemm.nn import Conv2d
from test_conv import _taps


@pytest.mark.parametrize("h, r, stride, pad", [(7, 3, 1, 1), (14, 3, 1, 1), (56, 1, 1, 0), (224, 7, 2, 3),
                                               (5, 3, 2, 1), (1, 3, 1, 1), (9, 5, 3, 2)])
def test_conv_work_counts_the_taps_that_read_the_image(h, r, stride, pad):
    conv = Conv2d(1, 1, r, stride, pad)
    oh, ow = conv.output_size(h, h)
    ones = np.ones((1, 1, h, h))
    inside = sum(int(patch.sum()) for _, _, patch in _taps(ones, conv, oh, ow))  # padding reads zeros
    n, c, k = 3, 5, 7
    assert bench.conv_work(n, c, k, h, r, stride, pad) == 2 * n * c * k * inside
    assert bench.conv_work(n, c, k, h, r, stride, pad) <= 2 * n * c * k * r * r * oh * ow


def test_the_ceiling_is_the_ratio_at_the_peak():
    # 1 GFLOP counted, 0.8 GFLOP needed, PyTorch 10 ms, brgemm 8 ms, a 200 GFLOP/s peak:
    # at the peak brgemm would take 4 ms, 2.5x PyTorch's time.
    row = bench._row("case", 2, 1e9, 1e6, {"brgemm": 8e-3, "torch": 10e-3}, {"torch": 10 / 8}, 200.0, work=0.8e9)
    assert row["ratio_vs_torch"] == pytest.approx(1.25)
    assert row["ceiling_vs_torch"] == pytest.approx(2.5)
    assert row["percent_of_peak"] == pytest.approx(62.5)
    plain = bench._row("case", 2, 1e9, 1e6, {"brgemm": 8e-3, "torch": 10e-3}, {"torch": 10 / 8}, 200.0)
    assert plain["ceiling_vs_torch"] == pytest.approx(2.0)
    assert "ceiling_vs_torch" not in bench._row("case", 1, 1e9, 1e6, {"brgemm": 1e-3, "torch": 1e-3}, {"torch": 1.0}, None)


def test_bar_lines_say_when_a_bar_is_above_the_ceiling():
    rows = [{"ratio_vs_torch": 0.9, "ceiling_vs_torch": 1.1}, {"ratio_vs_torch": 1.6, "ceiling_vs_torch": 1.6}]
    line = bench.bar_line("title", rows, 1.2, lowest=True)
    assert "geomean 1.20x (at the peak: 1.33x)" in line
    assert "lowest 0.90x (at the peak: 1.10x)" in line
    assert line.endswith("; bar 1.2x")
    assert bench.bar_line("title", rows[:1], 1.2).endswith("bar 1.2x, above the ceiling")
    assert "no PyTorch rows" in bench.bar_line("title", [{"ceiling_vs_torch": 1.0}], 1.2)
    assert "no PyTorch rows" in bench.bar_line("title", [], 1.2)
