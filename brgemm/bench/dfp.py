"""The DFP-16 rows of `python -m brgemm bench --kernels` (with s16s16 among --dtypes): one
training step of brgemm.nn.Linear and of brgemm.nn.Conv2d (forward, input gradient, weight
gradient) in dtype="dfp16" against the same layer in float32 (``brgemm_f32``; the convolution's
direct passes, the same pass set, and ``brgemm_f32_auto`` with its default algorithm choice) and
torch when installed, % of the measured int16 peak. The DFP-16 step includes converting every
operand (x, W, ∂y) to int16 mantissas and the int32 sums per batch element (brgemm.dfp,
layers/dfp_conv.h)."""

import numpy as np

from ..nn import Conv2d, Linear
from ..peak import peak_of
from .harness import _row, compare

DFP_LINEAR_SHAPES = [(256, 1024, 1024)]  # (N, in, out)
DFP_CONV_SHAPES = [(16, 128, 128, 28, 3)]  # (N, C, K, H = W, R = S), padding R // 2 (issue 23's bar)


def _step(layer, x, gy):
    def run():
        layer(x)
        layer.backward(gy)
    return run


def run_dfp(peers, rng, rounds, threads_list, log):
    rows = []
    for n, cin, cout in DFP_LINEAR_SHAPES:
        x = rng.standard_normal((n, cin), dtype=np.float32)
        gy = rng.standard_normal((n, cout), dtype=np.float32)
        fns = {"brgemm": _step(Linear(cin, cout, dtype="dfp16", seed=0), x, gy),
               "brgemm_f32": _step(Linear(cin, cout, seed=0), x, gy)}
        if peers.torch is not None:
            torch = peers.torch
            lin = torch.nn.Linear(cin, cout)
            tx = torch.from_numpy(x).requires_grad_()
            tg = torch.from_numpy(gy)
            fns["torch"] = lambda: lin(tx).backward(tg)
        for threads in threads_list:
            peers.set_threads(threads)
            med, rat = compare(fns, rounds, threads)
            flops = 3 * 2 * n * cin * cout
            nbytes = 4 * (2 * n * cin + 2 * n * cout + 2 * cin * cout)
            rows.append(_row(f"Linear {cin}->{cout} N={n} dfp16 fwd+bwd", threads, flops, nbytes, med, rat,
                             peak_of("dot_s16s16", threads)))
            log.row(rows[-1])
    for n, c, k, hw, r in DFP_CONV_SHAPES:
        x = rng.standard_normal((n, c, hw, hw), dtype=np.float32)
        gy = rng.standard_normal((n, k, hw, hw), dtype=np.float32)
        fns = {"brgemm": _step(Conv2d(c, k, r, padding=r // 2, dtype="dfp16", seed=0), x, gy),
               "brgemm_f32": _step(Conv2d(c, k, r, padding=r // 2, algorithm="direct", seed=0), x, gy),
               "brgemm_f32_auto": _step(Conv2d(c, k, r, padding=r // 2, seed=0), x, gy)}
        if peers.torch is not None:
            torch = peers.torch
            conv = torch.nn.Conv2d(c, k, r, padding=r // 2)
            tx = torch.from_numpy(x).requires_grad_()
            tg = torch.from_numpy(gy)
            fns["torch"] = lambda: conv(tx).backward(tg)
        for threads in threads_list:
            peers.set_threads(threads)
            med, rat = compare(fns, rounds, threads)
            flops = 3 * 2 * n * hw * hw * k * c * r * r
            nbytes = 4 * (3 * n * c * hw * hw + 3 * n * k * hw * hw + 2 * k * c * r * r)
            rows.append(_row(f"Conv2d {c}->{k} {r}x{r} {hw}x{hw} N={n} dfp16 fwd+bwd", threads, flops, nbytes, med,
                             rat, peak_of("dot_s16s16", threads)))
            log.row(rows[-1])
    return rows
