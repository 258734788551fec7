"""Dropout (brgemm.nn.functional.dropout, torch.ops.brgemm.dropout, brgemm.torch.Dropout).

The mask is a hash of (seed, position), so its statistics are checked on large arrays against
binomial bounds (six standard deviations: a fixed seed makes each check deterministic, and a
fair mask would miss one with probability ~2e-9): the keep fraction, and pairs of positions at
the lags where a vectorised hash could repeat itself (1, the 8- and 16-lane widths, a cache
line, a thread's 64-value cut). Kept values are x times PyTorch's factor exactly; every ISA and
thread count gives the same bits; the backward pass drops what the forward dropped.
"""

import math

import numpy as np
import pytest

import brgemm
from brgemm.nn import functional as F
from conftest import restore_isa

N = 1 << 20


@pytest.fixture
def isa_restored():
    yield
    restore_isa()


def _bound(n, q):
    """Six standard deviations of a count of n Bernoulli(q) trials (plus one for rounding)."""
    return 6.0 * math.sqrt(n * q * (1.0 - q)) + 1.0


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_fraction_is_one_minus_p(p):
    y = F.dropout(np.ones(N, np.float32), p, seed=12345)
    kept = int(np.count_nonzero(y))
    assert abs(kept - N * (1 - p)) <= _bound(N, 1 - p)


@pytest.mark.parametrize("p", [0.2, 0.5])
@pytest.mark.parametrize("lag", [1, 8, 16, 64, 1 << 16])
def test_positions_are_kept_independently(p, lag):
    """Both of positions i and i + lag kept: (1 − p)² of the pairs. The pairs overlap (each
    position is in two), which at most doubles the count's variance: the bound takes 2n."""
    k = F.dropout(np.ones(N, np.float32), p, seed=777) != 0
    both = int(np.count_nonzero(k[:-lag] & k[lag:]))
    q = (1 - p) ** 2
    assert abs(both - (N - lag) * q) <= _bound(2 * (N - lag), q)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.75])
def test_kept_values_are_scaled_by_pytorchs_factor(p, rng):
    x = rng.standard_normal(10_001).astype(np.float32) + np.float32(0.5)
    x[x == 0] = 1.0
    y = F.dropout(x, p, seed=5)
    kept = y != 0
    scale = np.float32(1.0) / np.float32(1.0 - p)  # PyTorch's: 1/(1 − p) in float32
    assert np.array_equal(y[kept], x[kept] * scale)
    assert 0 < kept.sum() < x.size


def test_the_seed_picks_the_mask(rng):
    x = np.ones(4096, np.float32)
    a, b, c = F.dropout(x, 0.5, 1), F.dropout(x, 0.5, 1), F.dropout(x, 0.5, 2)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    # Seeds are taken modulo 2⁶⁴: −1 and 2⁶⁴ − 1 are one seed.
    assert np.array_equal(F.dropout(x, 0.5, -1), F.dropout(x, 0.5, 2**64 - 1))


def test_every_isa_and_thread_count_gives_the_same_bits(rng, isa_restored):
    x = rng.standard_normal(3 * 65536 + 37).astype(np.float32)
    before = brgemm.get_num_threads()
    results = []
    try:
        for level in brgemm.available_isas():
            brgemm.set_isa(level)
            for t in (1, 2, 3):
                brgemm.set_num_threads(t)
                for n in (x.size, 1, 7, 8, 9, 15, 16, 17, 33):  # every vector tail
                    results.append(((level, t, n), F.dropout(x[:n], 0.3, 99)))
    finally:
        brgemm.set_num_threads(before)
    ref = {n: y for (level, t, n), y in results[: 9]}
    for (level, t, n), y in results:
        assert np.array_equal(y.view(np.uint32), ref[n].view(np.uint32)), f"{level}, {t} threads, n={n}"
        assert np.array_equal(y, ref[x.size][:n]), "a shorter array is a prefix of the longer one's mask"


def test_ends_and_special_values():
    x = np.array([1.0, -2.0, np.inf, np.nan, 0.0, 3.0], np.float32)
    assert np.array_equal(F.dropout(x, 0.0, 3), x, equal_nan=True)
    zero = F.dropout(x, 1.0, 3)  # x·0, as PyTorch: inf and NaN give NaN
    with np.errstate(invalid="ignore"):
        assert np.array_equal(zero, x * np.float32(0), equal_nan=True)
    y = F.dropout(np.full(256, np.nan, np.float32), 0.5, 4)
    assert np.isnan(y).all()  # dropped or kept, NaN stays NaN
    out = x.copy()
    assert F.dropout(out, 0.5, 8, out=out) is out
    assert np.array_equal(out, F.dropout(x, 0.5, 8), equal_nan=True)


def test_errors_name_the_argument():
    x = np.ones(8, np.float32)
    for p in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="p must be in"):
            F.dropout(x, p, 0)
    with pytest.raises(TypeError, match="x must"):
        F.dropout(np.ones(8), 0.5, 0)
    with pytest.raises(TypeError, match="x must"):
        F.dropout([1.0, 2.0], 0.5, 0)
    with pytest.raises(ValueError, match="x must be C-contiguous"):
        F.dropout(np.ones((4, 4), np.float32)[:, ::2], 0.5, 0)
    with pytest.raises(ValueError, match="out must have shape"):
        F.dropout(x, 0.5, 0, out=np.ones(9, np.float32))


# --- PyTorch ------------------------------------------------------------------------------------

torch = pytest.importorskip("torch")


def test_operator_backward_drops_what_forward_dropped():
    import brgemm.torch  # noqa: F401

    x = (torch.rand(37, 53) + 0.5).requires_grad_()
    y = torch.ops.brgemm.dropout(x, 0.4, 2024)
    g = torch.randn_like(y)
    y.backward(g)
    scale = torch.tensor(1.0) / torch.tensor(1.0 - 0.4)
    kept = y.detach() != 0
    assert torch.equal(x.grad, torch.where(kept, g * scale, torch.zeros_like(g)))
    assert torch.equal(y.detach(), torch.where(kept, x.detach() * scale, torch.zeros_like(g)))


def test_operator_checks():
    import brgemm.torch  # noqa: F401

    torch.library.opcheck(torch.ops.brgemm.dropout.default, (torch.randn(5, 7), 0.5, 11))
    with pytest.raises(TypeError, match="x must have dtype"):
        torch.ops.brgemm.dropout(torch.randn(4, dtype=torch.float64), 0.5, 1)
    with pytest.raises(ValueError, match="p must be in"):
        torch.ops.brgemm.dropout(torch.randn(4), 1.5, 1)


def test_module_follows_torch_manual_seed_and_modes():
    from brgemm.torch import Dropout

    m = Dropout.from_torch(torch.nn.Dropout(0.3))
    x = torch.randn(64, 65)
    torch.manual_seed(0)
    a = m(x)
    torch.manual_seed(0)
    assert torch.equal(m(x), a)
    assert not torch.equal(m(x), a)  # the next call draws another seed
    m.eval()
    assert m(x) is x
    bf = torch.randn(8, 9, dtype=torch.bfloat16)
    m.train()
    assert m(bf).dtype == torch.bfloat16  # other dtypes: PyTorch's dropout


def test_convert_swaps_dropout_and_the_model_trains():
    import brgemm.torch as bt

    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                                torch.nn.Linear(30, 4))
    report = bt.convert(model)
    assert ("2", "Dropout", "brgemm.torch.Dropout") in report.swapped
    x = torch.randn(16, 20)
    model.train()
    y = model(x)
    y.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    assert torch.equal(model(x), model(x))
