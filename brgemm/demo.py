"""`python -m brgemm demo`: brgemm end to end on real data (scikit-learn's digits, 8×8 images of
0–9). A small CNN and an LSTM (reading an image row by row) are each trained twice from the
same initial weights, with the same data order, optimizer and epochs: once as plain PyTorch and
once after :func:`brgemm.torch.convert`. Printed: test accuracy and median seconds per epoch of
both, their ratio (plain / brgemm: above 1 means brgemm is faster), then the trained CNN rebuilt
as a numpy :class:`brgemm.nn.Sequential` and quantized to int8 by
:func:`brgemm.quant.quantize_model`, with its test accuracy next to the float one.

Needs torch and scikit-learn; both are imported here, when the demo runs, so that
``import brgemm`` and ``python -m brgemm`` never import them."""

import argparse
import copy
import os
import statistics
import sys
import time

import numpy as np

from . import get_num_threads, set_num_threads

TEST_FRACTION = 0.2   # the last 20% of the 1797 images (a fixed split, no shuffling)
BATCH = 64
LR = 1e-2             # Adam; measured best of 1e-3, 3e-3, 1e-2 for both models over 30 epochs


def load_digits():
    """(x_train, y_train, x_test, y_test): pixels scaled from 0..16 to [0, 1], (N, 8, 8) float32."""
    from sklearn.datasets import load_digits as _load
    d = _load()
    x = (d.images / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    split = len(y) - int(round(TEST_FRACTION * len(y)))
    return x[:split], y[:split], x[split:], y[split:]


def _models(torch):
    """{name: (build, input shape of one sample)}; build() makes the model with the current seed."""
    nn = torch.nn

    class RowLSTM(nn.Module):
        """The image as a sequence of its 8 rows (8 features each); classes from the last hidden state."""

        def __init__(self, hidden=64):
            super().__init__()
            self.lstm = nn.LSTM(8, hidden, batch_first=True)
            self.fc = nn.Linear(hidden, 10)

        def forward(self, x):
            _, (h, _) = self.lstm(x)
            return self.fc(h[-1])

    def cnn():
        return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                             nn.Flatten(), nn.Linear(32 * 8 * 8, 10))

    return {"cnn": (cnn, (1, 8, 8)), "lstm": (RowLSTM, (8, 8))}


def _accuracy(torch, model, x, y):
    model.eval()
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
    model.train()
    return acc


class _Training:
    """One model under Adam on cross-entropy; :meth:`epoch` runs one pass in a given order."""

    def __init__(self, torch, model, data):
        self.torch, self.model, self.data = torch, model, data
        self.opt = torch.optim.Adam(model.parameters(), lr=LR)
        self.times = []
        model.train()

    def epoch(self, order):
        """(mean loss, seconds) of one epoch in batches of BATCH taken in ``order``."""
        x, y = self.data[0], self.data[1]
        cross_entropy = self.torch.nn.functional.cross_entropy
        total, start = 0.0, time.perf_counter()
        for i in range(0, len(order), BATCH):
            b = order[i:i + BATCH]
            self.opt.zero_grad()
            loss = cross_entropy(self.model(x[b]), y[b])
            loss.backward()
            self.opt.step()
            total += loss.item() * len(b)
        self.times.append(time.perf_counter() - start)
        return total / len(order), self.times[-1]

    def accuracy(self):
        return _accuracy(self.torch, self.model, self.data[2], self.data[3])


def _numpy_sequential(trained):
    """A torch Sequential (converted or not) of Conv2d, Linear, ReLU, Flatten and Identity as a
    brgemm.nn.Sequential on copies of its weights: a ReLU, fused by convert (its place is then an
    Identity) or not, becomes the activation of the layer before it. Anything else raises
    NotImplementedError, naming it."""
    from .nn import Conv2d, Flatten, Linear, Sequential
    mods = [(n, m) for n, m in trained.named_children() if type(m).__name__ != "Identity"]
    layers = []
    for i, (name, m) in enumerate(mods):
        kind = type(m).__name__
        relu = (getattr(m, "activation", None) == "relu"
                or (i + 1 < len(mods) and type(mods[i + 1][1]).__name__ == "ReLU"))
        if kind == "Conv2d" and not isinstance(m.padding, str):
            layer = Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                           bias=m.bias is not None, activation="relu" if relu else None, groups=m.groups)
        elif kind == "Linear":
            layer = Linear(m.in_features, m.out_features, bias=m.bias is not None, activation="relu" if relu else None)
        elif kind == "ReLU" and i > 0 and type(mods[i - 1][1]).__name__ in ("Conv2d", "Linear"):
            continue   # the layer before applies it
        elif kind == "Flatten" and (m.start_dim, m.end_dim) == (1, -1):
            layers.append(Flatten())
            continue
        else:
            raise NotImplementedError(f"layer {name} ({m}) has no brgemm.nn counterpart here")
        layer.weight[...] = m.weight.detach().numpy()
        if m.bias is not None:
            layer.bias[...] = m.bias.detach().numpy()
        layers.append(layer)
    return Sequential(*layers).eval()


def _int8(trained, data, log):
    """Float and int8 (min-max and l2 calibration) test accuracy of the numpy rebuild of the
    trained CNN, with quantize_model's per-layer reports."""
    from .quant import quantize_model
    x, _, xt, yt = data
    model = _numpy_sequential(trained)
    x4, xt4 = x.reshape(-1, 1, 8, 8), xt.reshape(-1, 1, 8, 8)
    calibration = [x4[i:i + 256] for i in range(0, 1024, 256)]   # training images only
    out = {"float32": float((model(xt4).argmax(1) == yt).mean())}
    for method in ("minmax", "l2"):
        qmodel, report = quantize_model(model, calibration, method=method)
        out[method] = float((np.asarray(qmodel(xt4)).argmax(1) == yt).mean())
        out[f"{method}_report"] = report
        log(f"  {method:6} " + ", ".join(f"{r['type']} {r['sqnr_db']:.1f} dB" for r in report)
            + f"  (each layer's SQNR on the calibration data); test accuracy {out[method]:.4f}")
    return out


def run(argv=None, log=None):
    """Parses ``argv`` (the demo's options), runs the demo, prints it through ``log`` (default:
    print, flushed) and returns the results: {"threads", "epochs", "seed", "models": {name:
    {"plain" | "brgemm": {"accuracy", "epoch_s" (median), "best_epoch_s", "epoch_times"}, "ratio"
    (plain / brgemm median)}}, "int8": {"float32", "minmax", "l2" (test accuracies), "minmax_report",
    "l2_report"} or {"unavailable": why}}."""
    parser = argparse.ArgumentParser(prog="python -m brgemm demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=15, help="epochs per model and version (default 15)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for brgemm and torch alike (default: every core this process may use)")
    parser.add_argument("--seed", type=int, default=0, help="initial weights and data order (default 0)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if log is None:
        def log(line):
            print(line, flush=True)

    import torch
    from . import torch as brgemm_torch

    threads = args.threads or len(os.sched_getaffinity(0))
    set_num_threads(threads)
    torch.set_num_threads(threads)
    xtr, ytr, xte, yte = load_digits()
    log(f"digits: {len(ytr)} training and {len(yte)} test images (8x8, 10 classes); {args.epochs} epochs, "
        f"batch {BATCH}, Adam lr {LR}; threads: brgemm {get_num_threads()}, torch {torch.get_num_threads()}; "
        f"seed {args.seed}")

    results = {"threads": threads, "epochs": args.epochs, "seed": args.seed, "models": {}}
    trained = {}
    for name, (build, shape) in _models(torch).items():
        data = tuple(torch.from_numpy(a) for a in (xtr.reshape((-1,) + shape), ytr, xte.reshape((-1,) + shape), yte))
        torch.manual_seed(args.seed)
        plain = build()
        converted = copy.deepcopy(plain)   # the same initial weights, before either trains
        report = brgemm_torch.convert(converted)
        log(f"{name}: brgemm.torch.convert: {report}")
        runs = {"plain": _Training(torch, plain, data), "brgemm": _Training(torch, converted, data)}
        # Epoch by epoch in turn, so that both see the same machine (other load, warm caches).
        for epoch in range(args.epochs):
            order = torch.from_numpy(np.random.default_rng((args.seed, epoch)).permutation(len(ytr)))
            line = f"  {name:4} epoch {epoch + 1:3}/{args.epochs}"
            for version, tr in runs.items():
                loss, seconds = tr.epoch(order)
                line += f"   {version} loss {loss:.4f} {seconds:6.3f} s"
            log(line)
        r = {v: {"accuracy": tr.accuracy(), "epoch_s": statistics.median(tr.times), "best_epoch_s": min(tr.times),
                 "epoch_times": tr.times} for v, tr in runs.items()}
        r["ratio"] = r["plain"]["epoch_s"] / r["brgemm"]["epoch_s"]
        results["models"][name] = r
        trained[name] = converted

    log("cnn int8: the trained brgemm CNN rebuilt in brgemm.nn, quantized by brgemm.quant.quantize_model "
        "(calibration: 1024 training images)")
    try:
        results["int8"] = q = _int8(trained["cnn"], (xtr, ytr, xte, yte), log)
    except NotImplementedError as e:
        results["int8"] = q = {"unavailable": str(e)}

    log("")
    log(f"{threads} thread(s); seconds per epoch: median (best) of {args.epochs}; ratio = plain / brgemm median "
        "(above 1: brgemm faster)")
    log(f"{'model':6} {'version':7} {'test acc':>8} {'s/epoch (best)':>17} {'ratio':>7}")
    for name, r in results["models"].items():
        for version in ("plain", "brgemm"):
            v = r[version]
            ratio = f"{r['ratio']:6.2f}x" if version == "brgemm" else ""
            log(f"{name:6} {version:7} {v['accuracy']:8.4f} {v['epoch_s']:8.4f} ({v['best_epoch_s']:.4f}) {ratio:>7}")
    if "unavailable" in q:
        log(f"cnn int8: not available ({q['unavailable']})")
    else:
        log(f"cnn int8 (brgemm.nn rebuild): float32 {q['float32']:.4f}, int8 min-max {q['minmax']:.4f}, "
            f"int8 l2 {q['l2']:.4f}")
    log("lstm int8: not available (quantize_model takes a Sequential of Conv2d / Linear / Flatten; "
        "there is no quantized LSTM layer)")
    return results


def main(argv=None):
    run(sys.argv[1:] if argv is None else argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
