"""The network group of `python -m brgemm bench --models`: whole image classification networks
from brgemm.bench.vision (ResNet-18 and ResNet-50; also ResNeXt-50 32x4d and MobileNetV2 with
--full or --model) at 224 x 224: inference at N = 1 and N = 16 and a training step (forward,
cross-entropy, backward, plain SGD; ResNet-18 and MobileNetV2 at N = 16, the 50-layer networks
at N = 8), float32.

brgemm's side is ``brgemm.torch.optimize(model, dtype=...)`` on a deep copy of the model, with
algorithm="auto" for inference (the float32 rows also time algorithm="direct": "brgemm direct"), or
(when the package has no optimize, or it fails on a network) the copy converted by
``brgemm.torch.convert(copy, blocked=True)``; the table's "via" column says which. Its peers, on the same weights and inputs in the same run: PyTorch eager in both
layouts (NCHW and channels_last; the faster one counts), ``torch.compile`` with --compile
(inductor; for inference compiled under no_grad with inductor's freezing), and for inference
ONNX Runtime and OpenVINO on one ONNX export per network and batch, when they are installed.

The dtype is a parameter of every case (the rows and the table carry it); --dtypes asks for
bfloat16 rows (bf16: brgemm through optimize with dtype="bfloat16", PyTorch under CPU autocast in
both layouts; the ONNX runtimes and torch.compile left out) and int8 inference rows (u8s8:
brgemm.torch.quantize calibrated on a few other images, against brgemm's own float32 network and
PyTorch eager in float32: what switching to int8 gains; % of the int8 peak).

Time (this project's 2-core machine): a ResNet-50 forward at N = 16 takes 0.6-1 s per library,
so each case runs few calls: a first one, then per round one block per library without the
warm-up block the shorter cases get (harness.compare's ``warm``)."""

import contextlib
import copy
import gc

from ..peak import peak_of
from .harness import WARM_AFTER_PAUSE, _num, _row, compare, ratio_summary, slower
from .models import _compiled, onnx_peers

#: The networks of brgemm.bench.vision (its VISION_MODELS), and the ones run without --full.
NETWORKS = ("resnet18", "resnet50", "resnext50_32x4d", "mobilenet_v2")
DEFAULT_NETWORKS = ("resnet18", "resnet50")
NETWORK_LABELS = {"resnet18": "ResNet-18", "resnet50": "ResNet-50", "resnext50_32x4d": "ResNeXt-50 32x4d",
                  "mobilenet_v2": "MobileNetV2"}
NETWORK_IMAGE = 224                 # square input images
NETWORK_CLASSES = 1000
INFERENCE_BATCHES = (1, 16)
TRAIN_BATCHES = {"resnet18": 16, "resnet50": 8, "resnext50_32x4d": 8, "mobilenet_v2": 16}
NETWORK_PASSES = ("inference", "train step")
NETWORK_DTYPES = ("float32",)       # the dtypes run_networks runs; network_case also builds bfloat16, int8
NETWORK_LR = 1e-4                   # small: the weights change every step but stay near their start
PEAK_OPS = {"float32": "fma_f32", "bfloat16": "dot_bf16", "int8": "dot_u8s8"}
INT8_CALIBRATION = 4                # images in the calibration batch of an int8 row


def network_cases(names):
    """(network, pass, batch) of every row for ``names``, in the order they run."""
    return [(name, pass_, batch) for name in names for pass_ in NETWORK_PASSES
            for batch in (INFERENCE_BATCHES if pass_ == "inference" else (TRAIN_BATCHES[name],))]


def network_label(name, pass_, batch, dtype, image=None):
    image = image or NETWORK_IMAGE
    return f"{NETWORK_LABELS[name]} N={batch} {image}x{image} {dtype} {pass_}"


def network_flops(name, pass_, batch, image=None):
    """FLOPs of one call: the convolutions and the classifier, 2 per multiply-add. A training
    step counts 3x the forward, less the first convolution's input gradient, which no library
    computes (the image needs none)."""
    from . import vision
    image = image or NETWORK_IMAGE
    forward = vision.vision_flops(name, image, NETWORK_CLASSES)
    if pass_ == "inference":
        return batch * forward
    return batch * (3 * forward - vision.layer_flops(vision.vision_layers(name, image, NETWORK_CLASSES)[0]))


def _network_bytes(model, name, pass_, batch, image):
    """4 x (parameters + the image + every convolution's output): the float32 traffic at least,
    for the roofline; 3x that for a training step."""
    from . import vision
    acts = batch * (3 * image * image + sum(layer.out_channels * layer.out_size ** 2
                                            for layer in vision.vision_layers(name, image, NETWORK_CLASSES)))
    nbytes = 4 * (sum(p.numel() for p in model.parameters()) + acts)
    return nbytes if pass_ == "inference" else 3 * nbytes


def network_call(torch, model, x, target, pass_, autocast=False):
    """The callable timed for one pass: inference (eval, no_grad) or a training step (train,
    forward, cross-entropy, backward, SGD with its own optimizer). ``autocast``: the forward under
    CPU autocast to bfloat16 (PyTorch's bf16 path)."""
    def context():
        return torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    if pass_ == "inference":
        model.eval()

        def infer():
            with torch.no_grad(), context():
                model(x)
        return infer
    if pass_ != "train step":
        raise ValueError(f"pass must be one of {NETWORK_PASSES}, got {pass_!r}")
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=NETWORK_LR)

    def step():
        opt.zero_grad()
        with context():
            loss = torch.nn.functional.cross_entropy(model(x), target)
        loss.backward()
        opt.step()
    return step


def brgemm_network(torch, model, pass_, dtype, log, label="the network", algorithm=None):
    """(brgemm's module, "optimize" or "convert"): brgemm.torch.optimize on a deep copy of
    ``model`` (set to the pass's mode first; float32 convolutions by ``algorithm``, by default
    "auto" for inference, where each stride-1 3×3 layer picks Winograd where its cost model says
    it pays, and "direct" for training, where the filters change every step and Winograd's
    transform of them did not pay: ResNet-18 N = 4 step 0.94× direct) when the package has it,
    else the copy converted by brgemm.torch.convert(blocked=True); with a note (naming
    ``label``) when optimize is missing or fails."""
    from .. import torch as bt  # here, not at the top: import brgemm must not import torch
    model.train(pass_ != "inference")
    if algorithm is None:
        algorithm = "auto" if pass_ == "inference" else "direct"
    compute = None if dtype == "float32" else dtype
    optimize = getattr(bt, "optimize", None)
    if optimize is not None:
        try:
            return optimize(copy.deepcopy(model), dtype=compute, algorithm=algorithm), "optimize"
        except Exception as e:
            log.note(f"brgemm.torch.optimize failed on {label} ({type(e).__name__}: {e}): those rows use "
                     "brgemm.torch.convert(copy, blocked=True) (via: convert)")
    else:
        log.note("brgemm.torch has no optimize yet: the network rows use brgemm.torch.convert(copy, blocked=True) "
                 "(via: convert)")
    ours = copy.deepcopy(model)
    bt.convert(ours, dtype=compute, blocked=True)
    return ours, "convert"


def _compiled_step(torch, model, x, target, log):
    """torch.compile (inductor) on a copy of the model, a training step compiled now; None with a
    note when it fails."""
    torch._dynamo.reset()  # the thread count is baked into the generated code
    step = network_call(torch, torch.compile(copy.deepcopy(model)), x, target, "train step")
    try:
        step()
    except Exception as e:
        log.note(f"torch.compile failed on a training step ({type(e).__name__}: {e}): the rows skip it")
        return None
    return step


def network_case(torch, name, pass_, batch, threads, log, dtype="float32", compile=False, seed=0, image=None,
                 runtimes=True):
    """({library: callable}, FLOPs, bytes, case label, via) for one row: brgemm first (via:
    "optimize" or "convert", see brgemm_network), then PyTorch eager in NCHW ("torch") and
    channels_last, torch.compile when ``compile``, and for float32 inference with ``runtimes``
    ONNX Runtime and OpenVINO on ``threads`` threads (an export and two sessions: seconds). Every library starts from the same weights (the network
    from ``seed``, its batch norm randomized) and reads the same input and targets; each
    training side has its own copy of the model and its own optimizer."""
    from . import vision
    if dtype not in PEAK_OPS:
        raise ValueError(f"dtype must be one of {', '.join(PEAK_OPS)}, got {dtype!r}")
    image = image or NETWORK_IMAGE
    model = vision.vision_model(name, NETWORK_CLASSES, seed=seed, random_bn=True)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, image, image, generator=generator)
    target = torch.randint(0, NETWORK_CLASSES, (batch,), generator=generator)
    mode = "eval" if pass_ == "inference" else "train"
    if dtype == "int8":
        return _int8_case(torch, name, batch, model, x, target, log, image)
    ours, via = brgemm_network(torch, model, pass_, dtype, log, f"{NETWORK_LABELS[name]} in {mode} mode")
    bf16 = dtype == "bfloat16"
    fns = {"brgemm": network_call(torch, ours, x, target, pass_)}
    if pass_ == "inference" and dtype == "float32" and via == "optimize":  # what Winograd adds
        fns["brgemm[direct]"] = network_call(torch, brgemm_network(torch, model, pass_, dtype, log, algorithm="direct")[0],
                                             x, target, pass_)
    # NCHW on a copy, so that the plain model stays as built for the other peers (training
    # changes the weights).
    fns["torch"] = network_call(torch, copy.deepcopy(model), x, target, pass_, autocast=bf16)
    fns["torch[channels_last]"] = network_call(torch, copy.deepcopy(model).to(memory_format=torch.channels_last),
                                               x.contiguous(memory_format=torch.channels_last), target, pass_,
                                               autocast=bf16)
    if compile and bf16:
        log.note("torch.compile is not a peer of the bfloat16 network rows yet")
    elif compile:
        log.progress(f"compiling {NETWORK_LABELS[name]} N={batch} {pass_} with torch.compile")
        if pass_ == "inference":
            call = _compiled(torch, model.eval(), x, log, freezing=True)
        else:
            call = _compiled_step(torch, model.train(), x, target, log)
        if call is not None:
            fns["torch.compile"] = call
    if runtimes and pass_ == "inference" and not bf16:
        fns.update(onnx_peers(torch, model.eval(), x, threads, log))
    return (fns, network_flops(name, pass_, batch, image), _network_bytes(model, name, pass_, batch, image),
            network_label(name, pass_, batch, dtype, image), via)


def _int8_case(torch, name, batch, model, x, target, log, image):
    """An int8 inference row: brgemm.torch.quantize (calibrated on INT8_CALIBRATION other images
    of the same distribution, "l2" ranges) against brgemm's own float32 network (optimize,
    "brgemm[float32]") and PyTorch eager in float32 (both layouts): what a user switching to int8
    gains."""
    from .. import torch as bt
    log.progress(f"calibrating {NETWORK_LABELS[name]} for int8")
    generator = torch.Generator().manual_seed(1)
    calibration = [torch.randn(INT8_CALIBRATION, 3, image, image, generator=generator)]
    model.eval()
    ours = bt.quantize(copy.deepcopy(model), calibration)
    fns = {"brgemm": network_call(torch, ours, x, target, "inference"),
           "brgemm[float32]": network_call(torch, bt.optimize(copy.deepcopy(model)), x, target, "inference"),
           "torch": network_call(torch, copy.deepcopy(model), x, target, "inference"),
           "torch[channels_last]": network_call(torch, copy.deepcopy(model).to(memory_format=torch.channels_last),
                                                x.contiguous(memory_format=torch.channels_last), target,
                                                "inference")}
    return (fns, network_flops(name, "inference", batch, image),
            _network_bytes(model, name, "inference", batch, image) // 4,
            network_label(name, "inference", batch, "int8", image), "quantize")


def run_networks(peers, rounds, threads_list, log, compile=False, names=DEFAULT_NETWORKS, dtypes=NETWORK_DTYPES):
    """The network rows: every case of network_cases(names) per dtype and thread count, every
    library pinned to the row's thread count, medians over ``rounds``."""
    if peers.torch is None:
        log.note("PyTorch is not installed: no network rows (pip install torch)")
        return []
    rows = []
    for threads in threads_list:
        peers.set_threads(threads)
        for name, pass_, batch in network_cases(names):
            for dtype in dtypes:
                if dtype == "int8" and pass_ != "inference":
                    continue  # int8 is for inference
                log.progress(f"preparing {network_label(name, pass_, batch, dtype)} on {threads} thread(s)")
                fns, flops, nbytes, case, via = network_case(peers.torch, name, pass_, batch, threads, log, dtype,
                                                             compile)
                peak = peak_of(PEAK_OPS[dtype], threads)
                # A call that takes longer than the warm-up would cover needs none (see compare).
                warm = 0.0 if peak and flops / (peak * 1e9) > WARM_AFTER_PAUSE else None
                med, rat = compare(fns, rounds, threads, warm=warm)
                row = _row(case, threads, flops, nbytes, med, rat, peak)
                row.update({f"{lib}_seconds": t for lib, t in med.items()})
                # Every peer's own ratio (_row's ratio_vs_torch is PyTorch's fastest path).
                row["peer_ratios"] = {lib: r for lib, r in rat.items() if lib != "brgemm"}
                row.update({"network": name, "pass": pass_, "batch": batch, "dtype": dtype,
                            "image": NETWORK_IMAGE, "brgemm_via": via})
                rows.append(row)
                log.row(row)
                del fns
                gc.collect()  # the last case's models and sessions, before building the next
    return rows


#: The peers' names in the table's last column, in this order.
_PEER_NAMES = {"brgemm[float32]": "brgemm float32", "brgemm[direct]": "brgemm direct", "torch": "eager NCHW", "torch[channels_last]": "eager channels_last", "torch.compile": "compile",
               "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}


def format_networks(rows):
    """The network table: brgemm's time, GFLOP/s and % of the measured peak, the fastest peer with
    its time and the ratio (its time / brgemm's: above 1, brgemm is faster), then every peer's
    ratio."""
    width = max([18] + [len(NETWORK_LABELS.get(r.get("network"), "")) for r in rows])
    lines = [f"{'network':{width}} {'N':>3} {'pass':10} {'dtype':8} {'thr':>3} {'via':8} {'ms':>8} {'GFLOP/s':>8} "
             f"{'%peak':>6} {'fastest peer':>20} {'peer ms':>8} {'x peer':>6}  x each peer"]
    for r in rows:
        ratios = r.get("peer_ratios", {})
        each = "; ".join(f"{what} {ratios[lib]:.2f}" for lib, what in _PEER_NAMES.items() if lib in ratios)
        peer_ms = 1e3 * r["best_peer_seconds"] if "best_peer_seconds" in r else None
        lines.append(f"{NETWORK_LABELS.get(r['network'], r['network']):{width}} {r['batch']:>3} {r['pass']:10} "
                     f"{r['dtype']:8} {r['threads']:>3} {r['brgemm_via']:8} {1e3 * r['brgemm_seconds']:8.1f} "
                     f"{_num(r, 'brgemm_gflops', '8.1f')} {_num(r, 'percent_of_peak', '6.1f')} "
                     f"{r.get('best_peer', '-'):>20} {_num({'v': peer_ms}, 'v', '8.1f')} "
                     f"{_num(r, 'ratio_vs_best_peer', '6.2f')}{slower(r)}" + (f" {each}" if each else ""))
    return "\n".join(lines)


def networks_summary(rows):
    """Measured ratios only: per thread count and pass, against the fastest peer and against
    PyTorch's fastest path (eager in either layout, or torch.compile with --compile)."""
    lines = []
    for t in sorted({r["threads"] for r in rows}):
        for pass_ in NETWORK_PASSES:
            got = [r for r in rows if r["threads"] == t and r["pass"] == pass_]
            if got:
                lines.append(ratio_summary(f"networks' {pass_}, {t} thread(s), vs the fastest peer", got,
                                           "ratio_vs_best_peer", "the fastest peer"))
                lines.append(ratio_summary(f"networks' {pass_}, {t} thread(s), vs PyTorch's fastest path", got))
    return lines
