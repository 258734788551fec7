"""`python -m brgemm demo` (brgemm/demo.py) in a few epochs: plain PyTorch and brgemm.torch.convert
learn the digits alike from the same start, the numpy rebuild of the CNN computes what the torch
model does, and int8 keeps its accuracy. The floors were measured at seed 0 and 6 epochs (CNN
0.94, LSTM 0.85 on 1 and 2 threads; in plain PyTorch seeds 0-4 all reach CNN ≥ 0.91, LSTM ≥ 0.83)
and set below that."""

import subprocess
import sys

import numpy as np
import pytest

from conftest import subprocess_env

EPOCHS = 6
FLOOR = {"cnn": 0.90, "lstm": 0.78}


@pytest.fixture
def torch_threads_restored(threads_restored):
    """The demo sets brgemm's and torch's thread counts: both come back afterwards."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        yield torch
    finally:
        torch.set_num_threads(before)


def test_demo_trains_alike_and_int8_keeps_the_accuracy(torch_threads_restored):
    pytest.importorskip("sklearn")
    from brgemm import demo
    lines = []
    # One thread: on a shared 2-core machine, two threads wait at every tiny parallel region
    # for a core someone else holds (measured: 7 s instead of 24 s next to a running bench).
    r = demo.run(["--epochs", str(EPOCHS), "--seed", "0", "--threads", "1"], log=lines.append)
    for name, floor in FLOOR.items():
        m = r["models"][name]
        plain, converted = m["plain"]["accuracy"], m["brgemm"]["accuracy"]
        assert plain > floor and converted > floor, (name, plain, converted)
        assert abs(plain - converted) <= 0.03, (name, plain, converted)
        assert len(m["brgemm"]["epoch_times"]) == EPOCHS and m["ratio"] > 0
    q = r["int8"]
    assert "unavailable" not in q, q
    # The rebuild runs the same kernels on the same weights: at most 2 of 359 images differ.
    assert q["float32"] == pytest.approx(r["models"]["cnn"]["brgemm"]["accuracy"], abs=0.006)
    assert max(q["minmax"], q["l2"]) >= q["float32"] - 0.02, q
    assert all(layer["sqnr_db"] > 30 for layer in q["l2_report"]), q["l2_report"]
    assert any("ratio = plain / brgemm" in line for line in lines)
    assert any("lstm int8: not available" in line for line in lines)   # said, not faked


def test_numpy_rebuild_of_an_unconverted_model_applies_its_relus(torch_threads_restored):
    """A ReLU module (not fused by convert) becomes the previous layer's activation; a layer
    brgemm.nn lacks is named, not skipped."""
    torch = torch_threads_restored
    from brgemm import demo
    torch.manual_seed(0)
    build, shape = demo._models(torch)["cnn"]
    model = build().eval()
    x = torch.rand((5,) + shape)
    with torch.no_grad():
        ref = model(x).numpy()
    got = demo._numpy_sequential(model)(x.numpy())
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    with pytest.raises(NotImplementedError, match="Tanh"):
        demo._numpy_sequential(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh()))


def test_the_command_line_and_no_torch_at_import(torch_threads_restored):
    pytest.importorskip("sklearn")
    from brgemm.__main__ import main
    assert main(["demo", "--epochs", "1", "--threads", "1"]) == 0
    code = "import sys, brgemm, brgemm.__main__, brgemm.demo; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], env=subprocess_env(), check=True, timeout=60)
