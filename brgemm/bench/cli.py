"""`python -m brgemm bench`: the command line. Without a group option it runs the headline (one
row per kind of work, about a minute); --full runs every group's grid, and each group can be
picked alone. Tables go to stdout, one progress line per finished case to stderr."""

import argparse
import os
import time

import numpy as np

from .. import __version__, _core, get_num_threads
from ..peak import _cache_file, get_peak, thread_counts
from .ceilings import format_ceilings, run_ceilings
from .conv import conv_summary, run_conv
from .harness import Log, Peers, format_table, installed, write_json
from .headline import HEADLINE_ROUNDS, format_headline, headline_cases, run_headline
from .kernels import PEAK_OP, run_kernels
from .mlp import mlp_summary, run_mlp
from .models import format_models, run_torch, torch_summary
from .networks import DEFAULT_NETWORKS, NETWORKS, format_networks, networks_summary, run_networks
from .rnn import rnn_summary, run_rnn
from .sparse import run_sparse, sparse_summary

DESCRIPTION = ("brgemm against the fastest peers installed (numpy, PyTorch, ONNX Runtime, OpenVINO) on the "
               "same shapes and thread counts, in the same run: % of the measured peak, % of the roofline "
               "bound and the ratio peer time / brgemm time (above 1: brgemm is faster), medians over rounds. "
               "Without a group option: the headline table, about a minute.")

#: The groups, in the order --full runs them: option → (what it runs, table format, summary).
GROUPS = {
    "kernels": ("every microkernel, gemm in f32/bf16/int8, a GEMV on f16 weights, K-TanH, softmax (exact and Taylor)",
                lambda p, rng, a, tl, log: run_kernels(p, rng, a.rounds, tl, log, a.dtypes), format_table, None),
    "mlp": ("Linear forward, 3-layer MLP forward and training step, f32 and bf16",
            lambda p, rng, a, tl, log: run_mlp(p, rng, a.rounds, tl, log), format_table, mlp_summary),
    "conv": ("ResNet-50's convolutions: forward f32/bf16, backward f32, int8 inference, N = 1 and 16",
             lambda p, rng, a, tl, log: run_conv(p, rng, a.rounds, tl, log), format_table, conv_summary),
    "rnn": ("LSTM and GRU forward f32/bf16 over sizes and batches, training steps",
            lambda p, rng, a, tl, log: run_rnn(p, rng, a.rounds, tl, log), format_table, rnn_summary),
    "sparse": ("a pruned Linear 4096 -> 4096, N = 64, f32: forward at 50/75/90 % block sparsity and a training "
               "step at 90 %, against our dense packing, PyTorch dense and PyTorch BSR; the dense/sparse crossover; "
               "a pruned LSTM 512 -> 512 (T = 20, N = 64) training step at 75/90 % against our dense packing and "
               "torch.nn.LSTM; "
               "GEMV 1x8192x8192 on 2/4/5/8-bit shared weights against our float16-weight GEMV, and on ternary weights "
               "(1-3 levels, u8 activations) against our int8-weight GEMV",
               lambda p, rng, a, tl, log: run_sparse(p, rng, a.rounds, tl, log), format_table, sparse_summary),
    "torch": ("PyTorch models (a ResNet-style stack, an LSTM tagger, an LSTM language model) converted by "
              "brgemm.torch.convert, "
              "training step and inference, against plain PyTorch, ONNX Runtime and OpenVINO",
              lambda p, rng, a, tl, log: run_torch(p, a.rounds, tl, log, a.compile), format_models, torch_summary),
    "models": ("whole networks at 224x224 (ResNet-18, ResNet-50; with --full or --model also ResNeXt-50 "
               "32x4d and MobileNetV2), float32 inference at N = 1 and 16 and a training step, through "
               "brgemm.torch against PyTorch eager, ONNX Runtime and OpenVINO (some minutes)",
               lambda p, rng, a, tl, log: run_networks(p, a.rounds, tl, log, a.compile, a.networks,
                                                       _network_dtypes(a.dtypes)),
               format_networks, networks_summary),
    "ceilings": ("PyTorch alone on the cases that ask most of the machine: the % of the measured peak it "
                 "reaches (not part of --full)",
                 lambda p, rng, a, tl, log: run_ceilings(p, a.rounds, log), format_ceilings, None),
}
FULL = ("kernels", "mlp", "conv", "rnn", "sparse", "torch", "models")
GROUP_ROUNDS = 5
#: The groups whose default thread counts are not 1 and all cores: --models on all cores only
#: (a ResNet-50 forward at N = 16 takes a second on two cores, several on one).
GROUP_THREADS = {"models": lambda: thread_counts()[-1:]}


def parse_threads(text):
    """'1,2' → [1, 2]; None → None (each mode's default)."""
    if text is None:
        return None
    try:
        threads = [int(t) for t in text.split(",")]
    except ValueError:
        raise ValueError(f"--threads must be comma-separated integers, got {text!r}") from None
    if min(threads) < 1:
        raise ValueError(f"--threads must be at least 1, got {text!r}")
    return threads


def parse_networks(text, full=False):
    """'resnet18,mobilenet_v2' → that tuple; None → every network with --full, else the default two."""
    if text is None:
        return NETWORKS if full else DEFAULT_NETWORKS
    names = tuple(n.strip() for n in text.split(","))
    if not set(names) <= set(NETWORKS):
        raise ValueError(f"--model must name some of {', '.join(NETWORKS)}, got {text!r}")
    return names


def _network_dtypes(dtypes):
    """--models: float32 always, bfloat16 and int8 inference too when --dtypes names bf16 and
    u8s8 (the default does)."""
    return ("float32",) + (("bfloat16",) if "bf16" in dtypes else ()) + (("int8",) if "u8s8" in dtypes else ())


def parse_dtypes(text):
    dtypes = tuple(d.strip() for d in text.split(","))
    if not dtypes or not set(dtypes) <= set(PEAK_OP):
        raise ValueError(f"--dtypes must name some of {', '.join(PEAK_OP)}, got {text!r}")
    return dtypes


def make_parser():
    parser = argparse.ArgumentParser(prog="python -m brgemm bench", description=DESCRIPTION)
    parser.add_argument("--full", action="store_true", help="every group below except --ceilings (many minutes)")
    for name, (what, _, _, _) in GROUPS.items():
        parser.add_argument(f"--{name}", action="store_true", help=what.replace("%", "%%"))  # argparse formats help with %
    parser.add_argument("--model", metavar="NAME[,NAME]",
                        help=f"--models: these networks ({', '.join(NETWORKS)}; default: "
                             f"{', '.join(DEFAULT_NETWORKS)}, every one with --full); implies --models")
    parser.add_argument("--compile", action="store_true",
                        help="--torch, --models: also torch.compile as a peer (--torch: on the inference rows, "
                             "compiling the ResNet-style stack takes some 20 s per thread count; --models: "
                             "inference with freezing and the training step, a minute or more per case)")
    parser.add_argument("--rounds", type=int, default=None,
                        help=f"timing rounds per case, the median reported (default: {HEADLINE_ROUNDS} for the "
                             f"headline, {GROUP_ROUNDS} for the groups)")
    parser.add_argument("--threads", default=None,
                        help="comma-separated thread counts (default: the headline and --models on all cores, "
                             "the other groups on 1 and all cores; microkernel rows always on 1)")
    parser.add_argument("--dtypes", default="f32,bf16,u8s8,s16s16",
                        help="comma-separated dtypes of the microkernel and gemm rows (f32, bf16, u8s8, s16s16); "
                             "--models runs bfloat16 rows too when bf16 is among them")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    parser.add_argument("--plot", metavar="FILE.png", help="draw the rows on a roofline chart (needs matplotlib)")
    return parser


def parse_args(argv=None):
    """The validated options; a bad value raises ValueError naming the option."""
    args = make_parser().parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        raise ValueError(f"--rounds must be at least 1, got {args.rounds}")
    args.threads = parse_threads(args.threads)
    args.dtypes = parse_dtypes(args.dtypes)
    if args.plot and not installed("matplotlib"):
        raise ValueError("--plot needs matplotlib: pip install matplotlib")
    args.networks = parse_networks(args.model, args.full)
    args.groups = [g for g in GROUPS if getattr(args, g) or (args.full and g in FULL)
                   or (g == "models" and args.model is not None)]
    if args.compile and not {"torch", "models"} & set(args.groups):
        raise ValueError("--compile adds a peer to the --torch and --models rows: give it with --torch, --models "
                         "or --full")
    if args.rounds is None:
        args.rounds = GROUP_ROUNDS if args.groups else HEADLINE_ROUNDS
    return args


def _peak_line(peak):
    def value(op, t):
        v = peak[op].get(str(t))
        return f"{v:.0f}" if v else "n/a"
    parts = [f"{t} core{'s' * (t > 1)}: f32 {value('fma_f32', t)}, bf16 {value('dot_bf16', t)} GFLOP/s, "
             f"int8 {value('dot_u8s8', t)}, int16 {value('dot_s16s16', t)} GOP/s, bandwidth {peak['bandwidth'][str(t)]:.0f} GB/s"
             for t in peak["threads"]]
    return "measured peak (python -m brgemm peak): " + "; ".join(parts)


def main(argv=None):
    try:
        args = parse_args(argv)
    except ValueError as e:
        make_parser().error(str(e))
    start = time.perf_counter()
    threads_before = get_num_threads()
    peers = Peers()
    log = Log()
    if not os.path.exists(_cache_file()):
        log.progress("measuring this machine's peak (once: it is cached for the next runs)")
    peak = get_peak()
    print(f"brgemm {__version__}, ISA {_core.isa()}, on {peak['cpu']} ({os.cpu_count()} cores)")
    print(_peak_line(peak))
    print(f"x <peer>: the peer's time / brgemm's time (above 1: brgemm is faster), medians over {args.rounds} rounds; "
          "* after a ratio: the fastest peer was faster on that row")
    print("%peak: of the measured peak; %roof: of the roofline bound max(FLOPs / peak, bytes / bandwidth); "
          "int8 rows count GOP/s")
    if peers.torch is None:
        log.note("PyTorch is not installed: no PyTorch peer (pip install torch)")
    if peers.limits is None:
        log.note("threadpoolctl is not installed: numpy's thread count is not pinned")
    rng = np.random.default_rng(0)
    rows = []
    try:
        if not args.groups:
            threads = args.threads or thread_counts()[-1:]
            log.total = headline_cases(args.dtypes, threads, peers.torch is not None)
            rows = run_headline(peers, rng, args.rounds, threads, log, args.dtypes)
            for row in rows:
                row["group"] = "headline"
            _print_table(format_headline(rows), [], log)
        for group in args.groups:
            _, runner, fmt, summary = GROUPS[group]
            got = runner(peers, rng, args, args.threads or GROUP_THREADS.get(group, thread_counts)(), log)
            for row in got:
                row["group"] = group
            rows += got
            _print_table(fmt(got) if got else None, summary(got) if summary and got else [], log)
    finally:
        peers.set_threads(threads_before)
    print(f"\n{len(rows)} cases in {time.perf_counter() - start:.0f} s")
    if args.json:
        write_json(args.json, peak, rows, groups=args.groups or ["headline"], rounds=args.rounds,
                   threads=sorted({r["threads"] for r in rows}))
    if args.plot:
        from .plot import plot
        plot(rows, args.plot)
        print(f"roofline chart: {os.path.abspath(args.plot)}")
    return 0


def _print_table(table, summary, log):
    """A group's table on stdout (None: the group had nothing to run), its summary lines, and the
    notes gathered so far (each once)."""
    if table:
        print("\n" + table, flush=True)
    for line in summary:
        print(line)
    for note in log.new_notes():
        print(f"  note: {note}")
