"""Whole networks through brgemm.torch (the asv side of `python -m brgemm bench --models`):
ResNet-18 and ResNet-50 from brgemm.bench.vision at 224 x 224, float32, inference at N = 1 and
N = 16 and a training step (forward, cross-entropy, backward, SGD; ResNet-18 at N = 16, ResNet-50
at N = 8), on all cores. brgemm's side is brgemm.torch.optimize when the package has it, else a
deep copy converted by brgemm.torch.convert(blocked=True), as the bench builds it
(brgemm.bench.network_case); the peers are PyTorch eager in NCHW and channels_last. ONNX Runtime
and OpenVINO are left to the bench: their export and sessions would cost every setup seconds.

Tracked: brgemm's time, % of the measured fp32 peak (the convolutions' and the classifier's
FLOPs, 2 per multiply-add; a training step 3x the forward less the first convolution's input
gradient) and the ratio PyTorch's faster layout's time / brgemm's time, measured in the same
process. A ResNet-50 forward at N = 16 takes about a second on two cores: few repeats.
"""

import io

from brgemm.bench import DEFAULT_NETWORKS, INFERENCE_BATCHES, TRAIN_BATCHES, Log, network_case

from .common import PeerTimed, ThreadPin, cpu_count, import_torch, median_seconds

CASES = [f"inference N={n}" for n in INFERENCE_BATCHES] + ["train step"]
THREADS = [cpu_count()]  # all cores, as the bench's --models group


class Network(PeerTimed):
    params = [list(DEFAULT_NETWORKS), CASES, THREADS]
    param_names = ["network", "case", "threads"]
    timeout = 300
    # time_brgemm: one call per sample, few samples, one process (setup builds three models).
    number, repeat, rounds, warmup_time = 1, 3, 1, 0.0

    def setup(self, network, case, threads):
        torch = import_torch()
        if torch is None:
            raise NotImplementedError("PyTorch is not installed")
        self.pin = ThreadPin(threads)  # after importing torch, so that it is pinned too
        pass_, batch = ("train step", TRAIN_BATCHES[network]) if case == "train step" else (
            "inference", int(case.split("=")[1]))
        log = Log(stream=io.StringIO())  # the notes (which path brgemm took) stay quiet
        self.fns, self.flops, _, _, _ = network_case(torch, network, pass_, batch, threads, log, runtimes=False)
        self.fns["brgemm"]()  # the first call packs the weights


class Int8Network(PeerTimed):
    """int8 inference through brgemm.torch.quantize (calibrated as the bench does), tracked as %
    of the int8 peak, against brgemm's own float32 network (what switching to int8 gains) and
    PyTorch eager in float32."""

    params = [list(DEFAULT_NETWORKS), [f"N={n}" for n in INFERENCE_BATCHES], THREADS]
    param_names = ["network", "batch", "threads"]
    timeout = 300
    number, repeat, rounds, warmup_time = 1, 3, 1, 0.0
    peak_op = "dot_u8s8"

    def setup(self, network, batch, threads):
        torch = import_torch()
        if torch is None:
            raise NotImplementedError("PyTorch is not installed")
        self.pin = ThreadPin(threads)
        log = Log(stream=io.StringIO())
        self.fns, self.flops, _, _, _ = network_case(torch, network, "inference", int(batch.split("=")[1]), threads,
                                                     log, "int8")
        self.fns["brgemm"]()  # the first call packs the weights

    def track_ratio_vs_torch(self, *args):
        t = median_seconds({lib: fn for lib, fn in self.fns.items() if lib != "brgemm[float32]"})
        return min(v for lib, v in t.items() if lib != "brgemm") / t["brgemm"]

    track_ratio_vs_torch.unit = "x"

    def track_ratio_vs_brgemm_float32(self, *args):
        t = median_seconds({lib: self.fns[lib] for lib in ("brgemm", "brgemm[float32]")})
        return t["brgemm[float32]"] / t["brgemm"]

    track_ratio_vs_brgemm_float32.unit = "x"
