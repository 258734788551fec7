"""The machine's measured ceiling (`python -m brgemm peak`): register-only FMA / VDPBF16PS /
VPDPBUSD / VPDPWSSD loops (int16 without VNNI: VPMADDWD + VPADDD) and a triad for memory bandwidth, on 1 and on all cores. Every benchmark
reports its GFLOP/s as a percentage of these numbers, so they are measured, not assumed.

Results are cached per machine (CPU model, features, core count) in
``$BRGEMM_CACHE_DIR`` or ``~/.cache/brgemm``; ``refresh=True`` measures again."""

import hashlib
import json
import os
import platform

from . import _core

OPS = (("fma_f32", "fp32 FMA", "GFLOP/s"),
       ("dot_bf16", "bf16 vdpbf16ps", "GFLOP/s"),
       ("dot_u8s8", "int8 vpdpbusd", "GOP/s"),
       ("dot_s16s16", "int16 vpdpwssd", "GOP/s"))


def _cpu_identity():
    model, flags = "", ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not model:
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = value.strip()
                    break
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), flags


def _cache_file():
    model, flags = _cpu_identity()
    key = hashlib.sha1(f"{model}|{flags}|{os.cpu_count()}|{_core.detected_isa()}".encode()).hexdigest()[:12]
    folder = os.environ.get("BRGEMM_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "brgemm")
    return os.path.join(folder, f"peak-{key}.json")


def thread_counts():
    """1 and all cores (just 1 on a single-core machine)."""
    n = os.cpu_count() or 1
    return [1] if n == 1 else [1, n]


def measure(seconds=0.3, bandwidth_bytes=64 << 20):
    """Measure now. Returns {"cpu": ..., op: {threads: value or None}, "bandwidth": {threads: GB/s}}."""
    result = {"cpu": _cpu_identity()[0], "isa": _core.detected_isa(), "threads": thread_counts()}
    for op, _, _ in OPS:
        values = {}
        for t in thread_counts():
            # The best of three short runs: noise on a shared machine only ever slows a
            # register-only loop down, so the ceiling is the fastest run.
            best = max(_core.measure_peak(op, t, seconds / 3) for _ in range(3))
            values[str(t)] = best if best > 0 else None
        result[op] = values
    result["bandwidth"] = {str(t): _core.measure_bandwidth(t, bandwidth_bytes, 5) for t in thread_counts()}
    return result


def get_peak(refresh=False):
    """The cached peak for this machine, measured on first use (a few seconds)."""
    path = _cache_file()
    if not refresh:
        try:
            with open(path) as f:
                cached = json.load(f)
            if all(op in cached for op, _, _ in OPS):  # a cache from before an op was added is measured again
                return cached
        except (OSError, ValueError):
            pass
    result = measure()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
    except OSError:
        pass  # a read-only home still gets the numbers, just not cached
    return result


def peak_of(op, threads):
    """GFLOP/s (GOP/s) of `op` on `threads` cores: measured for 1 and all cores; in between,
    scaled linearly from one core; None where the CPU lacks the op."""
    p = get_peak()[op]
    if str(threads) in p and p[str(threads)]:
        return p[str(threads)]
    return p["1"] * threads if p.get("1") else None


def fp32_peak(threads):
    return peak_of("fma_f32", threads)


def report(result):
    lines = [f"CPU: {result['cpu']}  (best ISA: {result['isa']})", ""]
    threads = result["threads"]
    head = f"{'':24}" + "".join(f"{f'{t} core' + ('s' if t > 1 else ''):>14}" for t in threads)
    lines.append(head)
    for op, label, unit in OPS:
        vals = result[op]
        cells = "".join(f"{(f'{vals[str(t)]:.1f}' if vals.get(str(t)) else 'n/a'):>14}" for t in threads)
        lines.append(f"{label + ' (' + unit + ')':24}{cells}")
    bw = result["bandwidth"]
    lines.append(f"{'triad bandwidth (GB/s)':24}" + "".join(f"{bw[str(t)]:>14.1f}" for t in threads))
    return "\n".join(lines)
