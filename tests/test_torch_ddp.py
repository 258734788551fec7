"""Data-parallel training on a converted model: two processes (torch.distributed, gloo, on
localhost) each build the same seeded model, swap its layers with brgemm.torch.convert (or
rebuild it with brgemm.torch.optimize: fused residual, blocked pooling), wrap it in
DistributedDataParallel and take 3 SGD steps on their half of a fixed batch of 8. The ranks
must end bit-identical, and equal to one process (no DDP) training the same model on the whole
batch. (The optimized model has no BatchNorm: each rank would normalise its own half, which is
what DDP does with BatchNorm, but not what one process does with the whole batch.)

Each run is a child Python (``python -c _WORKER``) that saves its parameters with torch.save;
the test waits for all three children at once and kills them all when one fails or the time
is up, so a stalled rank fails the test instead of hanging it.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch")
# Under the sanitizer build (.ci/run) the workers would inherit the preloaded ASan runtime; the
# operators they call run under it in tests/test_torch.py, DDP's machinery on the plain build.
pytestmark = pytest.mark.skipif(bool(os.environ.get("BRGEMM_SANITIZED")),
                                reason="DDP is tested on the plain build, not under ASan")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with the gloo backend is not available in this torch build",
                allow_module_level=True)

from conftest import subprocess_env  # noqa: E402 - after the skips: conftest imports brgemm

STEPS = 3
TIMEOUT = 120   # seconds for all three children together; a healthy run takes ~20 on 2 cores

# argv: rank world port steps out. world = 1: the single-process run on the whole batch.
_WORKER = r"""
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

import brgemm
import brgemm.torch

rank, world, port, steps, out = *map(int, sys.argv[1:5]), sys.argv[5]
brgemm.set_num_threads(1)  # 2 ranks and the single run share the machine's cores
torch.set_num_threads(1)


class LastStep(nn.Module):
    # The LSTM's last output through a Linear: a model convert walks into, not a Sequential.
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(5, 16, batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.head(y[:, -1])


class Residual(nn.Module):
    # What optimize fuses: a residual add and ReLUs into the convolutions, global pooling blocked.
    def __init__(self):
        super().__init__()
        self.stem, self.conv = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.pool, self.head = nn.AdaptiveAvgPool2d(1), nn.Linear(8, 4)

    def forward(self, x):
        y = torch.relu(self.stem(x))
        y = torch.relu(self.conv(y) + y)
        return self.head(torch.flatten(self.pool(y), 1))


def build(name):
    torch.manual_seed(0)
    if name == "optimized":
        return Residual(), torch.randn(8, 3, 6, 6), torch.randint(0, 4, (8,))
    if name == "conv":
        model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1), nn.Flatten(),
                              nn.Linear(8 * 6 * 6, 4))
        x = torch.randn(8, 3, 6, 6)
    else:
        model, x = LastStep(), torch.randn(8, 7, 5)
    return model, x, torch.randint(0, 4, (8,))


def params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


if world > 1:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
rows = slice(rank * 8 // world, (rank + 1) * 8 // world)
results = {}
for name in ("conv", "lstm", "optimized"):
    model, x, labels = build(name)
    if name == "optimized":
        model = brgemm.torch.optimize(model)
        report = model.brgemm_report
        report.swapped = report.fused = [str(report)]
    else:
        report = brgemm.torch.convert(model)
    initial = params(model)
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x[rows]), labels[rows]).backward()  # the mean over this rank's rows
        opt.step()
    results[name] = {"swapped": report.swapped, "fused": report.fused, "initial": initial, "final": params(model),
                     "brgemm_modules": [n for n, m in model.named_modules() if type(m).__module__ == "brgemm.torch"]}
torch.save(results, out)
if world > 1:
    dist.destroy_process_group()
"""

EXPECTED = {
    "conv": ([("0", "Conv2d", "brgemm.torch.Conv2d"), ("2", "Conv2d", "brgemm.torch.Conv2d"),
              ("4", "Linear", "brgemm.torch.Linear")], [("1", "0")]),
    "lstm": ([("lstm", "LSTM", "brgemm.torch.LSTM"), ("head", "Linear", "brgemm.torch.Linear")], []),
}


def _free_port():
    """A port nothing listens on now (the OS's pick); rank 0's store binds it a moment later."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gloo_env():
    # Gloo picks its interface from the hostname, which may not resolve to this machine in a
    # container; the loopback keeps both ranks on localhost.
    names = [name for _, name in socket.if_nameindex()] if hasattr(socket, "if_nameindex") else []
    return {"GLOO_SOCKET_IFNAME": "lo"} if "GLOO_SOCKET_IFNAME" not in os.environ and "lo" in names else {}


def _run_all(runs, tmp_path):
    """Starts one child per (name, argv), waits for them together and returns {name: saved dict}.
    Fails, after killing every child still running, when one exits non-zero or TIMEOUT passes."""
    env = subprocess_env(**_gloo_env())
    procs, logs = {}, {}
    start = time.monotonic()
    try:
        for name, argv in runs.items():
            logs[name] = open(tmp_path / f"{name}.log", "w+")
            procs[name] = subprocess.Popen([sys.executable, "-c", _WORKER, *map(str, argv)], env=env,
                                           stdout=logs[name], stderr=subprocess.STDOUT)
        while True:
            codes = [p.poll() for p in procs.values()]  # every child polled: any() would stop early
            if None not in codes or any(c not in (None, 0) for c in codes) or time.monotonic() - start > TIMEOUT:
                break   # a failed rank leaves the other waiting for it: stop now
            time.sleep(0.05)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
            p.wait()
        output = {}
        for name, f in logs.items():
            f.seek(0)
            output[name] = f.read()[-4000:]
            f.close()
    bad = {n: p.returncode for n, p in procs.items() if p.returncode != 0}
    assert not bad, (f"children failed after {time.monotonic() - start:.0f} s (limit {TIMEOUT} s; exit codes {bad}, "
                     f"-{int(signal.SIGKILL)}: killed here):\n" + "\n".join(f"--- {n}\n{output[n]}" for n in bad))
    return {name: torch.load(tmp_path / f"{name}.pt") for name in runs}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """{run: {model: saved dict}} for rank0 and rank1 (DDP) and single (no DDP): both models
    in each child, so torch, brgemm and DDP's imports are paid once per process."""
    tmp = tmp_path_factory.mktemp("ddp")
    port = _free_port()
    runs = {f"rank{r}": (r, 2, port, STEPS, tmp / f"rank{r}.pt") for r in range(2)}
    runs["single"] = (0, 1, 0, STEPS, tmp / "single.pt")
    return _run_all(runs, tmp)


@pytest.mark.parametrize("model", ["conv", "lstm", "optimized"])
def test_ddp_matches_one_process(model, trained):
    for run, res in trained.items():
        r = res[model]
        if model == "optimized":
            assert "stem  FusedConv2d + ReLU" in r["swapped"][0] and "conv  FusedConv2d + residual add, ReLU" in \
                r["swapped"][0], run
            continue
        swapped, fused = EXPECTED[model]
        assert r["swapped"] == swapped, run
        assert r["fused"] == fused, run
        assert r["brgemm_modules"] == [n for n, _, _ in swapped], run
    r0, r1, single = (trained[run][model] for run in ("rank0", "rank1", "single"))
    assert r0["final"].keys() == r1["final"].keys() == single["final"].keys()
    for n, p in single["final"].items():
        assert torch.equal(r0["initial"][n], single["initial"][n]), f"{n}: the seeded models differ"
        # Every parameter moved: a run that never stepped would otherwise pass.
        assert not torch.equal(p, single["initial"][n]), f"{n} did not change in {STEPS} steps"
        # All-reduced gradients: the ranks apply the same update to the same values.
        assert torch.equal(r0["final"][n], r1["final"][n]), f"{n} differs between the ranks"
        # The same gradient as the whole batch's: (mean of 4 + mean of 4) / 2 = mean of 8, with
        # the divisions by powers of 2 exact; only the order of the summation differs (inside
        # each rank's backward, then across the ranks), a few ulps over 3 steps.
        torch.testing.assert_close(r0["final"][n], p, rtol=1e-5, atol=1e-6, msg=lambda m: f"{n}: {m}")
