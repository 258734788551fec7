"""The model group of `python -m brgemm bench --torch`: small PyTorch models converted by
brgemm.torch.convert against the same models in plain PyTorch (training step and inference),
and for inference also against PyTorch in channels_last, ONNX Runtime and OpenVINO (from one
ONNX export) when they are installed."""

import copy
import os
import tempfile
import warnings

from ..peak import peak_of
from .conv import conv_work
from .harness import _row, compare, installed, ratio_summary, slower


# PyTorch models through brgemm.torch.convert: the same model built twice, once left in plain
# PyTorch and once a deep copy converted, timed in the same run on the same inputs. Shared with
# asv's bench_torch.py, so that both measure the same thing.

#: The ResNet-style stack: (C, K, R = S) convolutions, padding R // 2, each followed by a ReLU
#: (which convert fuses into the convolution's epilogue), then global average pooling and a
#: Linear to TORCH_CLASSES. Input (N, C, H = W) = TORCH_CONV_INPUT: a training step takes
#: 80–190 ms on this project's 2-core machine (either library, 1 or 2 threads).
TORCH_CONV_STACK = [(64, 64, 1), (64, 64, 3), (64, 256, 1), (256, 64, 1), (64, 64, 3), (64, 256, 1)]
TORCH_CONV_INPUT = (16, 64, 28)
#: The LSTM tagger: (T, N, input, hidden), one nn.LSTM layer, a Linear on every step's output.
TORCH_LSTM = (50, 64, 256, 512)
TORCH_CLASSES = 10
#: The LSTM language model, PyTorch's word-language-model example at its medium size: (T, N,
#: vocabulary, embedding = hidden, layers, dropout). An embedding, a 2-layer LSTM, a Linear
#: decoder to the vocabulary; dropout as the example puts it (after the embedding, between the
#: LSTM's layers, before the decoder), active in the training step only. Each step starts from
#: zero states (the example carries them over, detached: the same work).
TORCH_LM = (35, 20, 10000, 650, 2, 0.5)
# The same ResNet-style model three ways: convert (layer by layer), convert(blocked=True), and
# optimize (the whole-network path: fused and blocked from the first convolution to the head).
TORCH_MODELS = ("resnet", "resnet_blocked", "resnet_optimized", "lstm", "lstm_lm")
_RESNETS = ("resnet", "resnet_blocked", "resnet_optimized")
TORCH_PASSES = ("train step", "inference")
TORCH_LR = 1e-4  # small: the weights change every step (so ours repack) but stay near their start


def torch_model(torch, name, seed=0):
    """(model, input, target, forward FLOPs, bytes, label) of one --torch model in plain PyTorch,
    float32, the same weights and data for the same seed (PyTorch's global RNG is left as it
    was). FLOPs count the convolutions or the LSTM, 2 per multiply-add, not the small head;
    bytes are 4 × (parameters + input + every layer's output). The language model's FLOPs
    count its LSTM and its decoder (a third of its work), not the embedding's look-ups."""
    nn = torch.nn
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name in _RESNETS:
            n, c0, hw = TORCH_CONV_INPUT
            layers, flops, acts = [], 0, n * c0 * hw * hw
            for c, k, r in TORCH_CONV_STACK:
                layers += [nn.Conv2d(c, k, r, padding=r // 2), nn.ReLU()]
                flops += 2 * n * k * c * r * r * hw * hw
                acts += n * k * hw * hw
            k = TORCH_CONV_STACK[-1][1]
            model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(k, TORCH_CLASSES))
            x = torch.randn(n, c0, hw, hw)
            target = torch.randint(0, TORCH_CLASSES, (n,))
            label = f"ResNet-style {len(TORCH_CONV_STACK)} convs {n}x{c0}x{hw}x{hw}" + (
                {"resnet_blocked": " blocked", "resnet_optimized": " optimized"}.get(name, ""))
        elif name == "lstm":
            t, n, i, h = TORCH_LSTM

            class Tagger(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.lstm, self.head = nn.LSTM(i, h), nn.Linear(h, TORCH_CLASSES)

                def forward(self, x):
                    return self.head(self.lstm(x)[0])
            model = Tagger()
            x = torch.randn(t, n, i)
            target = torch.randint(0, TORCH_CLASSES, (t, n))
            flops = 8 * h * (i + h) * n * t
            acts = t * n * (i + h + TORCH_CLASSES)
            label = f"LSTM tagger T={t} N={n} {i}->{h}"
        elif name == "lstm_lm":
            t, n, v, h, layers, p = TORCH_LM

            class LanguageModel(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.drop, self.encoder = nn.Dropout(p), nn.Embedding(v, h)
                    self.lstm = nn.LSTM(h, h, layers, dropout=p)
                    self.decoder = nn.Linear(h, v)

                def forward(self, x):
                    return self.decoder(self.drop(self.lstm(self.drop(self.encoder(x)))[0]))
            model = LanguageModel()
            x = torch.randint(0, v, (t, n))
            target = torch.randint(0, v, (t, n))
            flops = layers * 8 * h * (h + h) * n * t + 2 * h * v * n * t
            acts = t * n * (1 + layers * h + h + v)  # the ids (counted as 4 bytes), the embeddings, every layer's output
            label = f"LSTM LM T={t} N={n} {layers}x{h} vocab {v}"
        else:
            raise ValueError(f"model must be one of {TORCH_MODELS}, got {name!r}")
    params = sum(p.numel() for p in model.parameters())
    return model, x, target, flops, 4 * (params + acts), label


def _torch_model_call(torch, model, x, target, pass_):
    """The callable timed for one pass: a training step (forward, cross-entropy, backward, plain
    SGD) or inference (eval, no_grad)."""
    if pass_ == "inference":
        model.eval()

        def infer():
            with torch.no_grad():
                model(x)
        return infer
    if pass_ != "train step":
        raise ValueError(f"pass must be one of {TORCH_PASSES}, got {pass_!r}")
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=TORCH_LR)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        y = model(x)
        loss_fn(y.reshape(-1, y.shape[-1]), target.reshape(-1)).backward()
        opt.step()
    return step


def torch_model_fns(torch, name, pass_, seed=0):
    """({"brgemm": converted model's call, "torch": plain model's call}, FLOPs, bytes, label) for
    one model and pass. The converted model is a deep copy of the plain one (same starting
    weights, its own parameters and optimizer); both read the same input and target. A
    training step counts 3× the forward's FLOPs, less the first convolution's input gradient,
    which neither side computes (the input needs none)."""
    from .. import torch as bt  # here, not at the top: import brgemm must not import torch
    model, x, target, flops, nbytes, label = torch_model(torch, name, seed)
    ours = copy.deepcopy(model)
    if name == "resnet_optimized":  # Winograd where it pays in inference (networks.brgemm_network's rule)
        ours = bt.optimize(ours, algorithm="auto" if pass_ == "inference" else "direct")
    else:
        bt.convert(ours, blocked=name == "resnet_blocked")
    fns = {"brgemm": _torch_model_call(torch, ours, x, target, pass_),
           "torch": _torch_model_call(torch, model, x, target, pass_)}
    if pass_ == "train step":
        first = 0
        if name in _RESNETS:
            n, _, hw = TORCH_CONV_INPUT
            c, k, r = TORCH_CONV_STACK[0]
            first = 2 * n * k * c * r * r * hw * hw
        flops, nbytes = 3 * flops - first, 3 * nbytes
    return fns, flops, nbytes, f"{label} float32 {pass_}"


def torch_model_work(name, pass_):
    """The FLOPs torch_model_fns counts, but only the convolution taps that read the image (the
    bound for the ceiling; see conv_work). None for the LSTM tagger: its count is exact."""
    if name not in _RESNETS:
        return None
    n, _, hw = TORCH_CONV_INPUT
    works = [conv_work(n, c, k, hw, r, 1, r // 2) for c, k, r in TORCH_CONV_STACK]
    return 3 * sum(works) - works[0] if pass_ == "train step" else sum(works)


#: The runtimes model_peers runs an ONNX export on: module → the name the notes use.
RUNTIMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}


def _onnx_runtime(path, xn, threads):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"x": xn})


def _openvino(path, xn, threads):
    import openvino as ov
    # f32 said explicitly: on CPUs with bf16 instructions OpenVINO would compute in bf16.
    compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32",
                                                     "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    return lambda: request.infer({0: xn})


def _compiled(torch, model, x, log, freezing=False):
    """torch.compile's inductor on a copy of the model, compiled now (tens of seconds for the
    ResNet-style stack), or None with a note when it fails. ``freezing``: compiled with
    inductor's freezing (the weights folded in as constants, the convolutions' weights
    prepacked), the setting for inference under no_grad."""
    # Inductor writes the thread count into the code it generates: start afresh for each count.
    torch._dynamo.reset()
    compiled = torch.compile(copy.deepcopy(model))

    def call():
        with torch.no_grad():
            compiled(x)
    try:
        if freezing:
            from torch._inductor import config
            with config.patch(freezing=True):
                call()  # the first call compiles
        else:
            call()
    except Exception as e:
        log.note(f"torch.compile failed ({type(e).__name__}: {e}): the model rows skip it")
        return None
    return call


def model_peers(torch, model, x, threads, log, compile=False):
    """The plain model's other ways to run inference, pinned to ``threads``: PyTorch eager in
    channels_last (4-D inputs), ``compile``: torch.compile, and ONNX Runtime and OpenVINO on
    one ONNX export of it (``torch.onnx.export(dynamo=False)``: the TorchScript exporter, quick
    and without extra dependencies). A runtime that is not installed, or that fails on the
    model, is skipped with a note: a peer's trouble must not stop the benchmark."""
    model.eval()
    peers = {}
    if compile:
        call = _compiled(torch, model, x, log)
        if call is not None:
            peers["torch.compile"] = call
    if x.dim() == 4:
        model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)

        def channels_last():
            with torch.no_grad():
                model_cl(x_cl)
        peers["torch[channels_last]"] = channels_last
    peers.update(onnx_peers(torch, model, x, threads, log))
    return peers


def onnx_peers(torch, model, x, threads, log):
    """{runtime: callable} for ONNX Runtime and OpenVINO (those installed) on one ONNX export of
    ``model`` (in eval mode) for the input ``x``, written to a temporary folder and run on
    ``threads`` threads; a runtime that is not installed, or fails on the model, is left out
    with a note."""
    peers = {}
    for module, name in RUNTIMES.items():
        if not installed(module):
            log.note(f"{name} is not installed: the model rows skip it (pip install {module})")
    wanted = [module for module in RUNTIMES if installed(module)]
    if not wanted:
        return peers
    xn = x.numpy()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.onnx")
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (x,), path, dynamo=False, input_names=["x"], output_names=["y"])
        except Exception as e:  # e.g. the exporter needs the onnx package
            log.note(f"torch.onnx.export failed ({type(e).__name__}: {e}): the model rows skip "
                     + " and ".join(RUNTIMES[m] for m in wanted))
            return peers
        for module in wanted:
            try:
                peers[module] = (_onnx_runtime if module == "onnxruntime" else _openvino)(path, xn, threads)
            except Exception as e:
                log.note(f"{RUNTIMES[module]} could not load the model ({type(e).__name__}: {e}): skipped")
    return peers


def model_case(torch, name, pass_, threads, log, seed=0, compile=False, cache=None):
    """torch_model_fns, plus model_peers for inference: (callables, FLOPs, bytes, case, work).
    ``cache``: a dict that keeps the peers across calls, so that the two ResNet-style rows
    (the same plain model, converted two ways) export and compile it once per thread count."""
    fns, flops, nbytes, case = torch_model_fns(torch, name, pass_, seed)
    if pass_ == "inference":
        key = (name.replace("_blocked", ""), threads, seed)
        if cache is None or key not in cache:
            model, x = torch_model(torch, name, seed)[:2]
            got = model_peers(torch, model, x, threads, log, compile)
            if cache is None:
                return {**fns, **got}, flops, nbytes, case, torch_model_work(name, pass_)
            cache[key] = got
        fns.update(cache[key])
    return fns, flops, nbytes, case, torch_model_work(name, pass_)


def format_models(rows):
    """The model table: milliseconds per call, against PyTorch's fastest path (eager in either
    layout, torch.compile with --compile) and against the fastest peer of all."""
    width = max([44] + [len(r["case"]) for r in rows])
    lines = [f"{'model: brgemm.torch.convert vs peers':{width}} {'thr':>3} {'brgemm ms':>9} {'torch ms':>9} "
             f"{'x torch':>7} {'fastest peer':>20} {'x peer':>6} {'GFLOP/s':>8} {'%peak':>6}"]
    for r in rows:
        lines.append(f"{r['case']:{width}} {r['threads']:>3} {1e3 * r['brgemm_seconds']:9.1f} "
                     f"{1e3 * r.get(r.get('torch_best', 'torch') + '_seconds', float('nan')):9.1f} "
                     f"{r.get('ratio_vs_torch', float('nan')):7.2f} {r.get('best_peer', '-'):>20} "
                     f"{r.get('ratio_vs_best_peer', float('nan')):6.2f}{slower(r)}{r['brgemm_gflops']:8.1f} "
                     f"{r['percent_of_peak'] or float('nan'):6.1f}")
    return "\n".join(lines)


def run_torch(peers, rounds, threads_list, log, compile=False):
    """The --torch models (TORCH_CONV_STACK, plainly converted and with blocked=True,
    TORCH_LSTM and TORCH_LM), training step and inference, float32, converted by brgemm.torch.convert
    against the same model in plain PyTorch (inference: also model_peers, with torch.compile
    when ``compile``); every library's threads pinned to the row's count.

    Both sides allocate their outputs on every call, so page faults count: on this project's VM
    one costs ~1.4 µs, and whether glibc hands freed memory back (so the next call faults again)
    depends on what the process allocated before. Measured: plain PyTorch's ResNet-style
    inference on 1 thread faulted 18,752 times per call inside this loop (87 ms) and not at all
    alone (42 ms). MALLOC_TRIM_THRESHOLD_=-1 MALLOC_MMAP_THRESHOLD_=1000000000 in the
    environment removes the faults on both sides."""
    if peers.torch is None:
        log.note("PyTorch is not installed: no model rows (pip install torch)")
        return []
    rows, cache = [], {}
    for threads in threads_list:
        peers.set_threads(threads)
        for name in TORCH_MODELS:
            for pass_ in TORCH_PASSES:
                fns, flops, nbytes, case, work = model_case(peers.torch, name, pass_, threads, log, compile=compile,
                                                            cache=cache)
                med, rat = compare(fns, rounds, threads)
                rows.append(_row(case, threads, flops, nbytes, med, rat, peak_of("fma_f32", threads), work))
                rows[-1].update({f"{lib}_seconds": t for lib, t in med.items()})
                log.row(rows[-1])
    return rows


def torch_summary(rows):
    """Summary lines of measured ratios: per pass and thread count, converted against plain
    PyTorch and against the fastest peer."""
    lines = []
    for t in sorted({r["threads"] for r in rows}):
        for pass_ in TORCH_PASSES:
            got = [r for r in rows if r["threads"] == t and r["case"].endswith(pass_)]
            if got:
                lines.append(ratio_summary(f"models' {pass_}, {t} thread(s), vs PyTorch", got))
                if pass_ == "inference":
                    lines.append(ratio_summary(f"models' {pass_}, {t} thread(s), vs the fastest peer", got,
                                               "ratio_vs_best_peer", "the fastest peer"))
    return lines
