"""The headline of `python -m brgemm bench` (no group option): one row per kind of work, each
against the fastest peer installed, in about a minute on a small machine. Per dtype the fastest
microkernel on one BRGEMM call (one thread) and `gemm`; then one 3x3 and one 1x1 convolution,
one LSTM, one GRU and one small ResNet-style model through brgemm.torch.optimize. The
groups (--kernels, --conv, ...) run the full grids these rows are taken from."""

import numpy as np

from ..peak import peak_of
from .conv import CONV_LAYERS, _conv_label, forward_case as conv_forward_case
from .harness import _num, _per_call, _row, compare, slower
from .kernels import PEAK_OP, available_ukernels, gemm_case, ukernel_case
from .models import model_case
from .rnn import RNN_STEPS, forward_case as rnn_forward_case

HEADLINE_GEMM = (1024, 1024, 1024)                   # (M, K, N), every dtype
HEADLINE_CONVS = (CONV_LAYERS[0], CONV_LAYERS[1])    # ResNet-50's 3x3 and 1x1 at 56x56
HEADLINE_CONV_BATCH = 1
HEADLINE_RNN = (256, 16)                             # (H = I, N), T = RNN_STEPS: a row of --rnn's grid
HEADLINE_MODEL = "resnet_optimized"                  # optimize: the whole-network path
# Three rounds: a median still, and with the pauses between libraries (harness.PAUSE) the
# headline stays near a minute on 2 busy cores (measured with a fresh peak, load ~6: 86 s with
# five rounds and H = 512 recurrent rows, 70 s with three).
HEADLINE_ROUNDS = 3


def headline_cases(dtypes, threads_list, with_torch=True):
    """How many rows run_headline makes (for the progress count)."""
    per_threads = len(dtypes) + len(HEADLINE_CONVS) + 2 + (1 if with_torch else 0)
    return len(dtypes) + per_threads * len(threads_list)


def fastest_ukernel(peers, rng, dtype, log, seconds=0.02):
    """The name of dtype's fastest available microkernel, by a short run of each alone (the
    row then times it against the peers over the rounds, so this pick's noise stays out of
    the reported number)."""
    best, best_time = None, float("inf")
    for name in available_ukernels(dtype, log):
        fn = ukernel_case(peers, rng, dtype, name)[0]["brgemm"]
        fn()
        t = _per_call(fn, seconds)
        if t < best_time:
            best, best_time = name, t
    return best


def run_headline(peers, rng, rounds, threads_list, log, dtypes=("f32", "bf16", "u8s8", "s16s16")):
    """The headline rows: microkernels on one thread, everything else on each of threads_list."""
    rows = []
    peers.set_threads(1)
    for dtype in dtypes:
        name = fastest_ukernel(peers, rng, dtype, log)
        if name is None:
            log.note(f"no {dtype} microkernel runs on this CPU")
            continue
        fns, flops, nbytes, case = ukernel_case(peers, rng, dtype, name)
        med, rat = compare(fns, rounds, 1)
        rows.append(_row(case, 1, flops, nbytes, med, rat, peak_of(PEAK_OP[dtype], 1)))
        log.row(rows[-1])
    if peers.torch is None:
        log.note("PyTorch is not installed: the conv, LSTM and GRU rows have no peer and the model row "
                 "is skipped (pip install torch)")
    for threads in threads_list:
        peers.set_threads(threads)
        for dtype in dtypes:
            fns, flops, nbytes, case, _ = gemm_case(peers, rng, dtype, *HEADLINE_GEMM)
            med, rat = compare(fns, rounds, threads)
            rows.append(_row(case, threads, flops, nbytes, med, rat, peak_of(PEAK_OP[dtype], threads)))
            log.row(rows[-1])
        peak = peak_of("fma_f32", threads)
        n = HEADLINE_CONV_BATCH
        for layer in HEADLINE_CONVS:
            c, _, h, r, stride = layer
            x = rng.standard_normal((n, c, h, h), dtype=np.float32)
            auto = r == 3 and stride == 1  # the user's best option: Winograd where it pays
            case = conv_forward_case(peers, x, layer, "float32", algorithm="auto" if auto else "direct")
            med, rat = compare(case.fns, rounds, threads)
            rows.append(_row(f"Conv {_conv_label(*layer)} N={n} float32 fwd" + (" auto" if auto else ""), threads,
                             case.flops, case.nbytes, med, rat, peak, case.work))
            log.row(rows[-1])
        h, n = HEADLINE_RNN
        x = rng.standard_normal((RNN_STEPS, n, h), dtype=np.float32)
        for cell in ("lstm", "gru"):
            fns, flops, nbytes, case = rnn_forward_case(peers, x, cell, "float32")
            med, rat = compare(fns, rounds, threads)
            rows.append(_row(case, threads, flops, nbytes, med, rat, peak))
            log.row(rows[-1])
        if peers.torch is not None:
            fns, flops, nbytes, case, work = model_case(peers.torch, HEADLINE_MODEL, "inference", threads, log)
            med, rat = compare(fns, rounds, threads)
            rows.append(_row(case, threads, flops, nbytes, med, rat, peak, work))
            log.row(rows[-1])
    return rows


def format_headline(rows):
    """The headline table: brgemm's rate, % of the measured peak, % of the roofline bound, and
    the fastest peer with the ratio (its time / brgemm's: above 1, brgemm is faster)."""
    width = max([40] + [len(r["case"]) for r in rows])
    lines = [f"{'case':{width}} {'thr':>3} {'GFLOP/s':>8} {'%peak':>6} {'%roof':>6} {'fastest peer':>22} "
             f"{'x peer':>6}"]
    for r in rows:
        lines.append(f"{r['case']:{width}} {r['threads']:>3} {_num(r, 'brgemm_gflops', '8.1f')} "
                     f"{_num(r, 'percent_of_peak', '6.1f')} {_num(r, 'percent_of_roofline', '6.1f')} "
                     f"{r.get('best_peer', '-'):>22} {_num(r, 'ratio_vs_best_peer', '6.2f')}{slower(r)}")
    return "\n".join(lines)
