"""BatchNorm2d training (torch.ops.brgemm.batch_norm_blocked and its backward operator) on ResNet-50
training activations, N = 8, against PyTorch's best eager equivalent on channels_last tensors:
``F.batch_norm`` (batch statistics, running ones updated) then ``+= residual`` and ``relu_`` in
place; backward: autograd through that graph (threshold, add, native_batch_norm_backward).

Tracked: brgemm's time, the peer/brgemm ratio, and brgemm's traffic in GB/s against the triad
bandwidth (the bytes each pass must move: forward = statistics read of x, then x, residual in
and y out; backward with residual and ReLU = grad, y, x in and the pre-ReLU gradient out, then
that gradient and x in and dx out). Ratios are from the same process, alternating A B | B A.

As a script (python -m benchmarks.bench_batch_norm from asv_benchmarks/, brgemm importable):
``[threads[,threads]] [dtype] [rounds]`` prints the table, each a median of alternating rounds;
``accuracy`` prints the variance's relative error of the shifted one-pass and the two-pass
statistics (and of the unshifted E[x²] − E[x]² in double) against long double, with the bound;
``two_pass [threads]`` times the forward with each.
"""

import sys

from .common import ThreadPin, import_torch, median_seconds

SHAPES = {"256x56x56": (8, 256, 56, 56), "64x56x56": (8, 64, 56, 56), "512x28x28": (8, 512, 28, 28),
          "1024x14x14": (8, 1024, 14, 14), "2048x7x7": (8, 2048, 7, 7)}


def cases(shape_name, dtype_name="float32"):
    """{name: fn} for the forward and backward of brgemm and the peer, and the bytes each brgemm
    call moves."""
    torch = import_torch()
    import torch.nn.functional as F

    import brgemm.torch  # noqa: F401

    ops = torch.ops.brgemm
    dt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype_name]
    n, c, h, w = SHAPES[shape_name]
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(n, c, h, w, generator=g) + 0.5).to(dt)
    r = torch.randn(n, c, h, w, generator=g).to(dt)
    gy = torch.randn(n, c, h, w, generator=g).to(dt)
    weight, bias = torch.randn(c, generator=g), torch.randn(c, generator=g)
    xb, rb, gyb = ops.to_blocked(x), ops.to_blocked(r), ops.to_blocked(gy)
    out, mean, var = ops.batch_norm_blocked(xb, weight, bias, 1e-5, rb, True, c)

    xc, rc, gyc = (t.contiguous(memory_format=torch.channels_last) for t in (x, r, gy))
    rm, rv = torch.zeros(c), torch.ones(c)

    def peer_forward():
        y = F.batch_norm(xc, rm, rv, weight, bias, True, 0.1, 1e-5)
        y += rc
        return y.relu_()

    xg, wg, bg, rg = xc.clone().requires_grad_(), weight.clone().requires_grad_(), bias.clone().requires_grad_(), \
        rc.clone().requires_grad_()
    yg = torch.relu(F.batch_norm(xg, None, None, wg, bg, True, 0.1, 1e-5) + rg)

    fns = {
        "brgemm forward": lambda: ops.batch_norm_blocked(xb, weight, bias, 1e-5, rb, True, c),
        "torch forward": peer_forward,
        "brgemm backward": lambda: ops.batch_norm_blocked_backward(gyb, xb, out, weight, mean, var, 1e-5, True, True),
        "torch backward": lambda: torch.autograd.grad(yg, (xg, wg, bg, rg), gyc, retain_graph=True),
    }
    size = xb.numel() * xb.element_size()
    return fns, {"forward": 4 * size, "backward": 7 * size}


class BatchNormTraining:
    """Forward and backward of conv → BN → + residual → ReLU's BN part, brgemm against PyTorch."""

    params = [list(SHAPES), ["float32"], [1, 2]]
    param_names = ["shape", "dtype", "threads"]

    def setup(self, shape, dtype, threads):
        if import_torch() is None:
            raise NotImplementedError("torch is not installed")
        self.pin = ThreadPin(threads)
        self.fns, self.bytes = cases(shape, dtype)

    def teardown(self, shape, dtype, threads):
        self.pin.restore()

    def time_forward(self, shape, dtype, threads):
        self.fns["brgemm forward"]()

    def time_backward(self, shape, dtype, threads):
        self.fns["brgemm backward"]()

    def _ratio(self, which):
        t = median_seconds({k: self.fns[f"{k} {which}"] for k in ("brgemm", "torch")})
        return t["torch"] / t["brgemm"]

    def track_ratio_vs_torch_forward(self, shape, dtype, threads):
        return self._ratio("forward")

    def track_ratio_vs_torch_backward(self, shape, dtype, threads):
        return self._ratio("backward")

    def track_gbps_forward(self, shape, dtype, threads):
        return self.bytes["forward"] / median_seconds({"f": self.fns["brgemm forward"]})["f"] / 1e9

    def track_gbps_backward(self, shape, dtype, threads):
        return self.bytes["backward"] / median_seconds({"f": self.fns["brgemm backward"]})["f"] / 1e9

    track_gbps_forward.unit = track_gbps_backward.unit = "GB/s"


def variance_accuracy():
    """Relative error of the variance, M = 8·112·112 values per channel, against long double."""
    import numpy as np
    import torch

    import brgemm.torch  # noqa: F401
    from brgemm import _core

    g = torch.Generator().manual_seed(0)
    shape, m = (8, 16, 112, 112), 8 * 112 * 112
    cases = [(f"N(0,1) + {off:g}", torch.randn(shape, generator=g, dtype=torch.float64) + off)
             for off in (0.0, 1e4, -3e5, 1e7)]
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    x[0] += 1e4
    cases.append(("image 0 shifted by 1e4", x))
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 1e-3
    flat = x.view(8, 16, -1)
    for q in range(32):  # the rows the shifted scheme samples (32 spread over image 0) made outliers
        flat[0, :, q * 112 * 112 // 32] = 1e3
    cases.append(("sampled rows all outliers", x))
    print(f"M = {m}: max relative error of the variance over 16 channels")
    for name, x in cases:
        x = x.float()
        xl = x.numpy().astype(np.longdouble).transpose(1, 0, 2, 3).reshape(16, -1)
        xc = xl - xl.mean(1)[:, None]
        var = (xc * xc).mean(1)
        xb = torch.ops.brgemm.to_blocked(x).numpy()
        errs = [float(np.max(np.abs(_core.batch_norm_statistics(xb, 16, tp)[1] - var) / var)) for tp in (False, True)]
        xd = x.double().numpy().transpose(1, 0, 2, 3).reshape(16, -1)
        naive = float(np.max(np.abs((xd * xd).mean(1) - xd.mean(1) ** 2 - var) / var))
        bound = float(np.max(2 * (m + 5) * 2.0 ** -53 * (1 + 2 * np.abs(xc).max(1) ** 2 / var)))
        print(f"{name:28} shifted {errs[0]:.1e}  two-pass {errs[1]:.1e}  unshifted {naive:.1e}  bound {bound:.1e}")


def two_pass_time(threads):
    """The forward with the shifted one-pass statistics and with the two-pass ones (median ms)."""
    import numpy as np
    import torch

    import brgemm
    import brgemm.torch  # noqa: F401
    from brgemm import _core

    brgemm.set_num_threads(threads)
    for name, (n, c, h, w) in SHAPES.items():
        g = torch.Generator().manual_seed(0)
        x = torch.ops.brgemm.to_blocked(torch.randn(n, c, h, w, generator=g) + 0.5).numpy()
        r = torch.ops.brgemm.to_blocked(torch.randn(n, c, h, w, generator=g)).numpy()
        y, ones, zeros = np.empty_like(x), np.ones(c, np.float32), np.zeros(c, np.float32)
        mean, var = np.empty(c, np.float32), np.empty(c, np.float32)
        t = median_seconds({tp: (lambda tp=tp: _core.batch_norm_forward(x, ones, zeros, 1e-5, r, True, y, mean, var,
                                                                        two_pass=bool(tp))) for tp in ("", "two")},
                           repeat=9, pause=0)
        print(f"{name:>12} {threads} threads: shifted {t[''] * 1e3:.2f} ms, two-pass {t['two'] * 1e3:.2f} ms "
              f"({t['two'] / t['']:.2f}x)")


def main(argv):
    """The table: per shape and thread count, median ms of brgemm and torch, ratio, GB/s."""
    import brgemm
    from brgemm import _core

    threads = [int(t) for t in (argv[0].split(",") if argv else ["1", "2"])]
    dtype = argv[1] if len(argv) > 1 else "float32"
    rounds = int(argv[2]) if len(argv) > 2 else 9
    torch = import_torch()
    print(f"dtype {dtype}, medians of {rounds} alternating rounds; triad GB/s: "
          + ", ".join(f"{t} thr {_core.measure_bandwidth(t, 64 << 20, 5):.1f}" for t in threads))
    print(f"{'shape':>12} {'thr':>3} | {'fwd ms':>7} {'torch':>7} {'ratio':>5} {'GB/s':>5} | "
          f"{'bwd ms':>7} {'torch':>7} {'ratio':>5} {'GB/s':>5}")
    for t in threads:
        pin = ThreadPin(t)
        for name in SHAPES:
            fns, nbytes = cases(name, dtype)
            cols = []
            for which in ("forward", "backward"):
                ms = median_seconds({k: fns[f"{k} {which}"] for k in ("brgemm", "torch")}, repeat=rounds)
                cols.append(f"{ms['brgemm'] * 1e3:7.2f} {ms['torch'] * 1e3:7.2f} {ms['torch'] / ms['brgemm']:5.2f} "
                            f"{nbytes[which] / ms['brgemm'] / 1e9:5.1f}")
            print(f"{name:>12} {t:>3} | {cols[0]} | {cols[1]}", flush=True)
        pin.restore()
    del brgemm, torch


if __name__ == "__main__":
    if sys.argv[1:2] == ["accuracy"]:
        variance_accuracy()
    elif sys.argv[1:2] == ["two_pass"]:
        two_pass_time(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
    else:
        main(sys.argv[1:])
