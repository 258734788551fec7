"""Convolutions (the benchmark side of tests/test_conv.py): brgemm.nn.Conv2d on ResNet-50's
layers at N = 1 and 16, forward float32 and bfloat16 and backward (input and weight gradients)
float32, 1 and all threads, against PyTorch's faster layout (NCHW or channels_last) in the same
process; int8 inference (QuantizedConv2d, uint8 in and out) against PyTorch's best quantized
engine (fbgemm, onednn, x86). Ours runs blocked arrays in and out, as a chain of layers does. Tracked: % of the
measured peak and ratios (peer time / brgemm time). The bars: f32 forward N = 16 geomean ≥ 1.1×
PyTorch (no layer below 0.9×); N = 1, 1 thread: res5 ≥ 2×, res4 ≥ 1.1×; bf16 forward ≥ 1.1×
PyTorch bf16 and ≥ 1.7× our f32; f32 backward geomean ≥ 1.0×.
"""

import numpy as np

from brgemm import layout
from brgemm.bench import CONV_LAYERS, _conv_label, _torch_conv, _torch_qconv
from brgemm.nn import Conv2d, QuantizedConv2d

from .common import SEED_A, SEED_B, ThreadPin, cpu_count, import_torch, median_seconds, percent_of_peak

THREADS = sorted({1, cpu_count()})
PEAK_OP = {"float32": "fma_f32", "bfloat16": "dot_bf16", "int8": "dot_u8s8"}
LAYERS = {_conv_label(*layer): layer for layer in CONV_LAYERS}


class Conv2dResNet50:
    params = [list(LAYERS), [1, 16], ["float32 fwd", "bfloat16 fwd", "float32 bwd", "int8 fwd"], THREADS]
    param_names = ["layer", "n", "pass", "threads"]

    def setup(self, layer, n, pass_, threads):
        torch = import_torch()
        self.pin = ThreadPin(threads)
        c, k, h, r, stride = LAYERS[layer]
        dtype, kind = pass_.split()
        rng = np.random.default_rng(SEED_A)
        x = rng.standard_normal((n, c, h, h), dtype=np.float32)
        conv = Conv2d(c, k, r, stride, r // 2, dtype="float32" if dtype == "int8" else dtype, seed=SEED_B)
        oh, ow = conv.output_size(h, h)
        self.flops = 2 * n * k * c * r * r * oh * ow * (2 if kind == "bwd" else 1)
        self.peak_op = PEAK_OP[dtype]
        if dtype == "int8":  # the float layer quantized, as bench --conv does
            scale, zero, out_scale = 0.05, 128, 0.05 * float(np.sqrt(c * r * r))
            q = QuantizedConv2d.from_float(conv, scale, zero, out_scale)
            x_q = np.clip(np.rint(x / scale) + zero, 0, 255).astype(np.uint8)
            xb_q, yb_q = layout.to_blocked(x_q), np.empty((n, -(-k // q.bk), oh, ow, q.bk), np.uint8)
            self.fns = {"brgemm": lambda: q.forward(xb_q, out=yb_q)}
            if torch is not None:
                self.fns.update(_torch_qconv(torch, x_q, q, scale, zero, out_scale))
            return
        xb = layout.to_blocked(x, dtype=conv._act_dtype)
        yb = np.empty((n, -(-k // conv.bk), oh, ow, conv.bk), conv._act_dtype)
        g = rng.standard_normal((n, k, oh, ow), dtype=np.float32)
        if kind == "fwd":
            conv.eval()
            self.fns = {"brgemm": lambda: conv.forward(xb, out=yb)}
        else:
            conv.forward(xb, out=yb)
            gb, gx = layout.to_blocked(g), np.empty(xb.shape, np.float32)
            self.fns = {"brgemm": lambda: conv.backward(gb, out=gx)}
        if torch is not None:
            got = _torch_conv(torch, x, conv, dtype, g if kind == "bwd" else None)
            self.fns.update(got[0] if kind == "bwd" else got)

    def teardown(self, layer, n, pass_, threads):
        self.pin.restore()

    def time_brgemm(self, layer, n, pass_, threads):
        self.fns["brgemm"]()

    def track_percent_of_peak(self, layer, n, pass_, threads):
        t = median_seconds({"brgemm": self.fns["brgemm"]})["brgemm"]
        return percent_of_peak(self.flops / t * 1e-9, threads, self.peak_op)

    track_percent_of_peak.unit = "%"

    def track_ratio_vs_torch(self, layer, n, pass_, threads):
        """Against PyTorch's fastest: NCHW or channels_last; for int8 the best engine."""
        if len(self.fns) < 2:
            return float("nan")
        t = median_seconds(self.fns)
        return min(v for lib, v in t.items() if lib != "brgemm") / t["brgemm"]

    track_ratio_vs_torch.unit = "x"
