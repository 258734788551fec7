"""The harness every benchmark group shares (brgemm.bench): the peers with their thread counts
pinned like brgemm's, timing in rounds, one result row per case, the tables' formats, progress
on stderr and the JSON file. The groups (kernels, mlp, conv, rnn, models, ceilings, headline)
only build callables; this module times and reports them.

Each case is timed in rounds; in every round each library runs a block of calls after a
short pause, so that the spinning worker threads one library leaves behind (OpenMP,
OpenBLAS) do not steal the cores from the next. Reported: medians over rounds."""

import importlib.util
import json
import sys
import time

import numpy as np

from .. import set_num_threads
from ..peak import get_peak


class Peers:
    """numpy and (when installed) torch, with their thread counts pinned like brgemm's."""

    def __init__(self):
        self.torch = None
        if importlib.util.find_spec("torch") is not None:
            import torch
            self.torch = torch
        self.limits = None
        if importlib.util.find_spec("threadpoolctl") is not None:
            import threadpoolctl
            self.limits = threadpoolctl.threadpool_limits
        self._ctx = None

    def set_threads(self, n):
        set_num_threads(n)
        if self.limits is not None:
            if self._ctx is not None:
                self._ctx.unregister()
            self._ctx = self.limits(limits=n, user_api="blas")
        # Last: restoring the previous BLAS limits (unregister) also resets the OpenMP
        # default that torch reads its thread count from (measured: torch stayed at 1).
        if self.torch is not None:
            self.torch.set_num_threads(n)


def installed(module):
    return importlib.util.find_spec(module) is not None


def _per_call(fn, min_seconds):
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / n


# OpenBLAS's workers spin for about 0.1 s after a call (measured: a 0.05 s pause left brgemm
# on 2 threads 3x slower right after numpy), so with several threads each library's block
# starts after this pause, and then runs untimed for a while: right after an idle pause the
# first 50 ms run some 10 % slow (clocks and caches coming back).
PAUSE, WARM_AFTER_PAUSE = 0.2, 0.06


def compare(fns, rounds, threads, min_seconds=0.05, warm=None):
    """fns: {library: callable}, brgemm first. Returns {library: median seconds per call} and
    {library: median over rounds of (its time / brgemm's time)}. ``warm``: seconds each
    library runs untimed before its block in a round (default: WARM_AFTER_PAUSE with several
    threads); 0 skips that warm-up, for calls that each take far longer than the warm-up is
    meant to cover (a whole network's forward: a second or so, of which the first 50 ms run
    some 10 % slow)."""
    pause, default_warm = (PAUSE, WARM_AFTER_PAUSE) if threads > 1 else (0.0, 0.005)
    warm = default_warm if warm is None else warm
    names = list(fns)
    for f in fns.values():
        f()  # first touch, dispatch, thread start-up
    times = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate who goes first
            time.sleep(pause)
            if warm > 0:
                _per_call(fns[name], warm)
            times[name].append(_per_call(fns[name], min_seconds))
    base = np.array(times[names[0]])
    medians = {name: float(np.median(t)) for name, t in times.items()}
    ratios = {name: float(np.median(np.array(t) / base)) for name, t in times.items()}
    return medians, ratios


def is_peer(lib):
    """Another library's callable, not one of brgemm's own variants (brgemm_float32, ...) or a
    reference such as a plain copy."""
    return not lib.startswith("brgemm") and lib != "copy"


def _row(case, threads, flops, nbytes, medians, ratios, peak, work=None):
    """One result row. ``work``: the FLOPs actually needed when fewer than ``flops`` (a padded
    convolution's border taps read zeros, and neither library multiplies them); it bounds
    ``ceiling_vs_torch``, the ratio brgemm would reach at 100 % of the measured peak."""
    bw = get_peak()["bandwidth"]
    bandwidth = bw.get(str(threads)) or bw["1"]
    bound = max(flops / (peak * 1e9), nbytes / (bandwidth * 1e9)) if peak else None
    row = {"case": case, "threads": threads, "flops": flops, "bytes": nbytes, "peak_gflops": peak,
           "brgemm_seconds": medians["brgemm"]}
    for lib, t in medians.items():
        row[f"{lib}_gflops"] = flops / t * 1e-9
        if lib != "brgemm":
            row[f"ratio_vs_{lib}"] = ratios[lib]
    # Several torch paths (int8: _int_mm and quantized Linear per engine; conv: NCHW and
    # channels_last): the torch column shows the best of them, and says which.
    torch_paths = [lib for lib in medians if lib.startswith("torch")]
    if torch_paths:
        best = min(torch_paths, key=lambda lib: medians[lib])
        row["torch_gflops"], row["ratio_vs_torch"], row["torch_best"] = (
            row[f"{best}_gflops"], ratios[best], best)
        if peak:
            row["ceiling_vs_torch"] = medians[best] * peak * 1e9 / (work or flops)
    peers = [lib for lib in medians if is_peer(lib)]
    if peers:
        best = min(peers, key=lambda lib: medians[lib])
        row["best_peer"], row["best_peer_seconds"], row["ratio_vs_best_peer"] = best, medians[best], ratios[best]
    row["percent_of_peak"] = 100 * row["brgemm_gflops"] / peak if peak else None
    row["percent_of_roofline"] = 100 * bound / medians["brgemm"] if bound else None
    return row


def geomean(values):
    values = [v for v in values if v is not None]
    return float(np.exp(np.mean(np.log(values)))) if values else float("nan")


def ratio_summary(title, rows, key="ratio_vs_torch", peer="PyTorch"):
    """A group's summary line, measurements only: the geomean of the rows' ratio to a peer,
    and the lowest one when there are several."""
    got = [r for r in rows if key in r]
    if not got:
        return f"  {title}: no {peer} rows"
    line = f"  {title}: " + ("geomean " if len(got) > 1 else "") + f"{geomean(r[key] for r in got):.2f}x {peer}"
    if len(got) > 1:
        low = min(got, key=lambda r: r[key])
        line += f" over {len(got)} rows, lowest {low[key]:.2f}x ({low['case']})"
    return line


class Log:
    """What a run reports as it goes: one line per finished case on stderr (stdout keeps the
    tables, so `> file` captures a clean table), and notes (a skipped peer, a missing ISA)
    that are printed once with the table."""

    def __init__(self, stream=None, total=None):
        self.stream = sys.stderr if stream is None else stream
        self.total, self.done, self.notes, self._printed = total, 0, [], 0
        self.start = time.perf_counter()

    def row(self, row):
        self.done += 1
        count = f"{self.done}/{self.total}" if self.total else f"{self.done}"
        rate = row.get("brgemm_gflops")
        what = [f"{1e3 * row['brgemm_seconds']:.3g} ms"] if row.get("brgemm_seconds") else []
        if rate is not None:
            what.append(f"{rate:.1f} GFLOP/s")
        if row.get("percent_of_peak") is not None:
            what.append(f"{row['percent_of_peak']:.0f} % of peak")
        if "torch_percent_of_peak" in row:  # --ceilings: PyTorch alone
            what.append(f"PyTorch {1e3 * row['torch_seconds']:.3g} ms, {row['torch_percent_of_peak']:.0f} % of peak")
        if "best_peer" in row:
            what.append(f"{row['ratio_vs_best_peer']:.2f}x {row['best_peer']}")
        self.progress(f"[{count}] {row['case']}, {row['threads']} thr: {', '.join(what)}")

    def note(self, text):
        if text not in self.notes:
            self.notes.append(text)
            self.progress(text)

    def new_notes(self):
        """The notes not yet printed with a table."""
        notes, self._printed = self.notes[self._printed:], len(self.notes)
        return notes

    def progress(self, text):
        """A line on stderr only, with the time since the run began."""
        print(f"bench {time.perf_counter() - self.start:5.0f} s  {text}", file=self.stream, flush=True)


def slower(row, key="ratio_vs_best_peer"):
    """The mark after a ratio: "*" below 1.0 (a peer was faster on this row), so that it stands out."""
    v = row.get(key)
    return "*" if v is not None and v == v and v < 1.0 else " "


def _num(row, key, fmt):
    v = row.get(key)
    return format(v, fmt) if v is not None else format("-", ">" + fmt.split(".")[0])


def format_table(rows):
    """The full grid's table: brgemm's rate, % of the measured peak and of the roofline bound,
    and numpy's and PyTorch's rate and ratio (peer time / brgemm time)."""
    width = max([52] + [len(r["case"]) for r in rows])
    lines = [f"{'case':{width}} {'thr':>3} {'GFLOP/s':>8} {'%peak':>6} {'%roof':>6} "
             f"{'numpy':>7} {'x numpy':>7} {'torch':>7} {'x torch':>7}"]
    for row in rows:
        extra = [f"{row['torch_best']}"] if row.get("torch_best", "torch") != "torch" else []
        # Our own other paths, and a plain copy for K-TanH: their time / this row's brgemm time.
        for key, what in (("ratio_vs_brgemm_float32", "our float32"), ("ratio_vs_brgemm_f32_weights",
                          "our f32 weights"), ("ratio_vs_brgemm_dense", "our dense"),
                          ("ratio_vs_brgemm_f16_weights", "our f16 weights"),
                          ("ratio_vs_brgemm_int8_weights", "our int8 weights"), ("ratio_vs_copy", "a copy")):
            if key in row:
                extra.append(f"{what} {row[key]:.2f}x")
        lines.append(f"{row['case']:{width}} {row['threads']:>3} {_num(row, 'brgemm_gflops', '8.1f')} "
                     f"{_num(row, 'percent_of_peak', '6.1f')} {_num(row, 'percent_of_roofline', '6.1f')} "
                     f"{_num(row, 'numpy_gflops', '7.1f')} {_num(row, 'ratio_vs_numpy', '7.2f')} "
                     f"{_num(row, 'torch_gflops', '7.1f')} {_num(row, 'ratio_vs_torch', '7.2f')}{slower(row)}"
                     + (f"  ({'; '.join(extra)})" if extra else ""))
    return "\n".join(lines)


def write_json(path, peak, rows, **about):
    """The rows as JSON, with the measured peak they are relative to and the run's settings."""
    with open(path, "w") as f:
        json.dump({"peak": peak, **about, "rows": rows}, f, indent=1)
