"""Dropout as an operator: ``brgemm::dropout`` (the core's hashed mask, float32; its backward is
the same operator on ∂y with the same seed, so no mask is kept), and ``train_dropout``, which the
modules call in training with a seed drawn from PyTorch's default generator."""

import torch
from torch import nn

from ..nn import functional as _fn
from ._bridge import _F32, _np, _op, _tensor


@_op("dropout", "(Tensor x, float p, int seed) -> Tensor")
def _dropout(x, p, seed):
    """x · (kept ? 1/(1 − p) : 0) per value (float32), each kept with probability 1 − p by a hash
    of (seed, its flat position): brgemm.nn.functional.dropout."""
    x = _tensor(x, "x", (_F32,))
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    out = torch.empty_like(x)
    if x.numel():
        _fn.dropout(_np(x), p, seed, out=_np(out))
    return out


_dropout.register_fake(lambda x, p, seed: torch.empty_like(x, memory_format=torch.contiguous_format))


def _setup(ctx, inputs, output):
    ctx.p, ctx.seed = inputs[1], inputs[2]


_dropout.register_autograd(lambda ctx, g: (torch.ops.brgemm.dropout(g, ctx.p, ctx.seed), None, None),
                           setup_context=_setup)


def train_dropout(x, p):
    """Dropout of a training pass: brgemm::dropout for float32 (a seed from torch's default
    generator per call, so torch.manual_seed reproduces the masks), PyTorch's for other dtypes."""
    if p == 0.0 or x.dtype != torch.float32 or x.device.type != "cpu":
        return nn.functional.dropout(x, p, True)
    seed = int(torch.randint(-2**63, 2**63 - 1, (), dtype=torch.int64))
    return torch.ops.brgemm.dropout(x, float(p), seed)
