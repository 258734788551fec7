"""The README's tour runs as written: a newcomer's first copy-paste must not fail."""

import copy
import pathlib
import re

import numpy as np
import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def _tour_blocks():
    text = README.read_text(encoding="utf-8")
    tour = text.split("## A short tour", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", tour, flags=re.S)


def test_tour_has_the_numpy_and_torch_blocks():
    blocks = _tour_blocks()
    assert len(blocks) == 2
    assert "brgemm.batch_reduce" in blocks[0] and "brgemm.torch" in blocks[1]


def test_numpy_tour_runs_and_agrees_with_numpy():
    ns = {}
    exec(compile(_tour_blocks()[0], "README tour", "exec"), ns)
    A, B, C = ns["A"], ns["B"], ns["C"]
    ref = np.einsum("bmk,bkn->mn", A.astype(np.float64), B.astype(np.float64))
    # f32 sums of 32·64 products: error within a few K·eps·Σ|a||b| (derived, not tuned).
    bound = 4 * 2048 * np.finfo(np.float32).eps * np.einsum("bmk,bkn->mn", abs(A), abs(B))
    assert np.all(np.abs(C - ref) <= bound)
    assert ns["y"].shape == (16, 64, 56, 56) and (ns["y"] >= 0).all()   # fused ReLU
    assert ns["out"].shape == (50, 64, 512) and ns["h"].shape == (1, 64, 512)


def test_torch_tour_runs_on_a_small_model():
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 10))
    x = torch.randn(2, 3, 6, 6)
    exact = copy.deepcopy(model).double()
    magnitude = copy.deepcopy(exact)            # Σ|a||b| through both layers bounds the f32 error
    for p in magnitude.parameters():
        p.data.abs_()
    ns = {"model": model, "calibration": [torch.randn(4, 3, 6, 6)]}
    exec(compile(_tour_blocks()[1], "README tour (torch)", "exec"), ns)
    assert "Conv2d" in str(ns["report"]) and "FusedConv2d + ReLU" in str(ns["fast"].brgemm_report)
    assert "QuantizedConv2d" in str(ns["int8"].brgemm_report)
    with torch.no_grad():   # the int8 model computes what the float one does, to 8-bit noise
        ref, got = ns["fast"](x).double(), ns["int8"](x).double()
    assert float(((got - ref) ** 2).sum()) < 0.01 * float((ref ** 2).sum())
    with torch.no_grad():
        bound = 2 * (27 + 288) * torch.finfo(torch.float32).eps * magnitude(x.double().abs())
        for m in (ns["fast"], model):   # the optimized copy, and the model converted in place
            err = (m(x).double() - exact(x.double())).abs()
            assert bool((err <= bound).all())
