"""brgemm.torch.prune: a converted model's layers pruned in place, the masks held while it trains
with a stock optimizer, and block-pruned Linear layers packed block-sparse."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import brgemm.torch as bt  # noqa: E402


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(8 * 6 * 6, 130), torch.nn.ReLU(), torch.nn.Linear(130, 10))


def test_converted_model_pruned_in_place_trains_on_with_masks_held():
    m = model()
    bt.convert(m)
    masks = bt.prune(m, 0.5)
    assert set(masks) == {"0.weight", "3.weight", "5.weight"}
    assert bt.sparsity(m) == pytest.approx(1 - sum(int(k.sum()) for k in masks.values())
                                           / sum(k.numel() for k in masks.values()))
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    x, labels = torch.randn(16, 3, 6, 6), torch.randint(0, 10, (16,))
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(m(x), labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    params = dict(m.named_parameters())
    for name, mask in masks.items():
        assert not params[name][~mask].any() and params[name][mask].ne(0).all()
    more = bt.prune(m, 0.75, block=1)   # iterative, unstructured this time: only adds
    for name in masks:
        assert not more[name][~masks[name]].any()


def test_block_pruned_linear_runs_block_sparse_and_matches_torch():
    torch.manual_seed(1)
    seq = torch.nn.Sequential(torch.nn.Linear(256, 192))
    bt.convert(seq)
    lin = seq[0]
    bt.prune(seq, 0.6)
    x = torch.randn(5, 256, requires_grad=True)
    y = seq(x)
    ref = torch.nn.functional.linear(x, lin.weight, lin.bias)
    tol = 257 * 2.0 ** -23 * (x.abs() @ lin.weight.abs().t() + lin.bias.abs())
    assert torch.all((y - ref).abs() <= tol + 1e-7)
    y.sum().backward()
    from brgemm.torch import _bridge
    runner = _bridge._built[("linear", "float32", 256, 192, "none", lin.weight.data_ptr())]
    assert runner.fc.block_sparse
    mask = lin.weight._brgemm_mask
    assert not lin.weight.grad[~mask].any()

