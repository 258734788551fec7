"""int8 inference layers against PyTorch's quantized engines (fbgemm, onednn, x86: the best
counts) in the same process: QuantizedLinear at (N, in, out) = (64, 1024, 1024) and
(256, 4096, 4096), QuantizedConv2d on ResNet-50's 3×3 layers at N = 16, uint8 in and out, 1 and
all threads. Tracked: % of the int8 peak and the ratio (best PyTorch time / brgemm time). The
bars: QuantizedLinear ≥ 1.2× on 2 threads, QuantizedConv2d geomean ≥ 1.1×.
"""

import numpy as np

from brgemm import layout
from brgemm.bench import CONV_LAYERS, _conv_label, _torch_qconv
from brgemm.nn import Conv2d, Linear, QuantizedConv2d, QuantizedLinear

from .common import PeerTimed, SEED_A, ThreadPin, cpu_count, import_torch

THREADS = sorted({1, cpu_count()})
LINEAR_SHAPES = {"64x1024x1024": (64, 1024, 1024), "256x4096x4096": (256, 4096, 4096)}
CONV3X3 = {_conv_label(*layer): layer for layer in CONV_LAYERS if layer[3] == 3}


def _torch_qlinear(torch, x_q, q, scale, zero, out_scale):
    import warnings
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    qx = torch.quantize_per_tensor(torch.from_numpy((x_q.astype(np.float32) - zero) * scale), scale, zero,
                                   torch.quint8)
    qw = torch.quantize_per_channel(torch.from_numpy(q.weight.astype(np.float32) * q.weight_scale[:, None]),
                                    torch.from_numpy(q.weight_scale.astype(np.float64)),
                                    torch.zeros(q.out_features, dtype=torch.long), 0, torch.qint8)
    fns = {}
    for engine in ("fbgemm", "onednn", "x86"):
        if engine not in torch.backends.quantized.supported_engines:
            continue
        torch.backends.quantized.engine = engine
        m = torch.ao.nn.quantized.Linear(q.in_features, q.out_features)
        m.set_weight_bias(qw, torch.from_numpy(q.bias))
        m.scale, m.zero_point = out_scale, 0

        def call(m=m, engine=engine):
            torch.backends.quantized.engine = engine
            return m(qx)
        fns[f"torch[{engine}]"] = call
    return fns


class QuantizedLinearForward(PeerTimed):
    peak_op = "dot_u8s8"
    params = [list(LINEAR_SHAPES), THREADS]
    param_names = ["shape", "threads"]

    def setup(self, shape, threads):
        torch = import_torch()
        self.pin = ThreadPin(threads)
        n, c, k = LINEAR_SHAPES[shape]
        rng = np.random.default_rng(SEED_A)
        scale, zero, out_scale = 0.05, 128, 0.05 * float(np.sqrt(c))
        q = QuantizedLinear.from_float(Linear(c, k, seed=SEED_A), scale, zero, out_scale)
        x_q = rng.integers(0, 256, (n, c)).astype(np.uint8)
        y = np.empty((n, k), np.uint8)
        self.flops = 2 * n * c * k
        self.fns = {"brgemm": lambda: q.forward(x_q, out=y)}
        if torch is not None:
            self.fns.update(_torch_qlinear(torch, x_q, q, scale, zero, out_scale))


class QuantizedConv2dForward(PeerTimed):
    peak_op = "dot_u8s8"
    params = [list(CONV3X3), THREADS]
    param_names = ["layer", "threads"]

    def setup(self, layer, threads):
        torch = import_torch()
        self.pin = ThreadPin(threads)
        c, k, h, r, stride = CONV3X3[layer]
        n = 16
        scale, zero, out_scale = 0.05, 128, 0.05 * float(np.sqrt(c * r * r))
        q = QuantizedConv2d.from_float(Conv2d(c, k, r, stride, r // 2, seed=SEED_A), scale, zero, out_scale)
        x_q = np.random.default_rng(SEED_A).integers(0, 256, (n, c, h, h)).astype(np.uint8)
        oh, ow = q.output_size(h, h)
        xb, yb = layout.to_blocked(x_q), np.empty((n, -(-k // q.bk), oh, ow, q.bk), np.uint8)
        self.flops = 2 * n * k * c * r * r * oh * ow
        self.fns = {"brgemm": lambda: q.forward(xb, out=yb)}
        if torch is not None:
            self.fns.update(_torch_qconv(torch, x_q, q, scale, zero, out_scale))
