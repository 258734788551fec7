"""The DFP-16 rows of `python -m brgemm bench --kernels` (with s16s16 among --dtypes): one
training step of brgemm.nn.Linear (forward, input gradient, weight gradient) in dtype="dfp16"
against the same layer in float32 (``brgemm_f32``) and torch.nn.Linear when installed, % of the
measured int16 peak. The DFP-16 step includes converting every operand (x, W, ∂y) to int16
mantissas and the K-chunked int32 sums (brgemm.dfp)."""

import numpy as np

from ..nn import Linear
from ..peak import peak_of
from .harness import _row, compare

DFP_LINEAR_SHAPES = [(256, 1024, 1024)]  # (N, in, out)


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
    return rows
