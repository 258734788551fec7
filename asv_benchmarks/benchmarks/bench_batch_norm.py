"""BatchNorm2d training (torch.ops.brgemm.batch_norm_blocked and its backward operator) on ResNet-50
training activations, N = 8, against PyTorch's best eager equivalent on channels_last tensors:
``F.batch_norm`` (batch statistics, running ones updated) then ``+= residual`` and ``relu_`` in
place; backward: autograd through that graph (threshold, add, native_batch_norm_backward).

Tracked: brgemm's time, the peer/brgemm ratio, and brgemm's traffic in GB/s against the triad
bandwidth (the bytes each pass must move: forward = statistics read of x, then x, residual in
and y out; backward with residual and ReLU = grad, y, x in and the pre-ReLU gradient out, then
that gradient and x in and dx out). Ratios are from the same process, alternating A B | B A.

As a script (python -m benchmarks.bench_batch_norm from asv_benchmarks/, brgemm importable):
prints the table for 1 and 2 threads, with each median of several rounds.
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
    main(sys.argv[1:])
