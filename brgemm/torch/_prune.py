"""Magnitude pruning of a PyTorch model's layers in place (Han et al. 2015), with brgemm.nn's rule
(brgemm/nn/_pruning.py): :func:`prune`. The model keeps training with any optimizer: the pruned
weights are zeroed and a gradient hook zeroes their gradients, so a step that moves a weight only
through its gradient (SGD with momentum, Adam; weight decay of a zero weight) leaves them zero.
Converted Linear layers (:func:`brgemm.torch.convert`) whose zeros fill whole weight blocks are then
packed block-sparse and skip the pruned blocks (layers/linear.h)."""

import numpy as np
import torch
from torch import nn

from .. import _core
from ..nn._pruning import amount_arg, block_arg, magnitude_mask
from ._modules import _Recurrent


def _pruned_weights(model):
    """(qualified name, parameter, the kernels' block of its (rows, cols) matrix) of every weight
    matrix of the model's Linear, Conv2d, LSTM and GRU layers (brgemm.torch's or PyTorch's)."""
    for prefix, m in model.named_modules():
        dot = prefix + "." if prefix else ""
        if isinstance(m, nn.Linear):
            yield dot + "weight", m.weight, (_core.fc_block(m.out_features), _core.fc_block(m.in_features))
        elif isinstance(m, nn.Conv2d):
            k, c, r, s = m.weight.shape
            yield dot + "weight", m.weight, (_core.fc_block(k), _core.fc_block(c) * r * s)
        elif isinstance(m, (nn.LSTM, nn.GRU, _Recurrent)):
            for name, p in m.named_parameters(recurse=False):
                if name.startswith("weight_"):
                    yield dot + name, p, (_core.fc_block(p.shape[0]), _core.fc_block(p.shape[1]))


def prune(model, amount, block=None):
    """Zeroes the fraction ``amount`` of each weight matrix of the model's Linear, Conv2d, LSTM and
    GRU layers by magnitude, in place, and keeps them zero while the model trains; returns
    {parameter name: mask} (bool tensors, False where pruned).

    ``block``: None for the kernels' own blocks (64 × 64 of a Linear or recurrent weight; 64
    output × 64 input channels with all their taps of a convolution; edge blocks partial), an int
    b or a pair (rows, cols) of the (out, in·R·S) matrix (1: single weights). Called again with a
    larger amount, it prunes more; the earlier pruned weights stay pruned."""
    amount = amount_arg(amount)
    masks = {}
    with torch.no_grad():
        for name, p, default in _pruned_weights(model):
            w = p.detach().float().cpu().numpy().reshape(p.shape[0], -1)
            previous = getattr(p, "_brgemm_mask", None)
            keep = magnitude_mask(w, amount, block_arg(block, w.shape, default),
                                  None if previous is None else previous.cpu().numpy().reshape(w.shape))
            mask = torch.from_numpy(np.ascontiguousarray(keep).reshape(p.shape)).to(p.device)
            p.masked_fill_(~mask, 0.0)
            if getattr(p, "_brgemm_hook", None) is not None:
                p._brgemm_hook.remove()
            p._brgemm_mask = mask
            p._brgemm_hook = p.register_hook(lambda g, m=mask: g * m.to(g.dtype))
            masks[name] = mask.clone()
    return masks


def sparsity(model):
    """The fraction of the pruned weight matrices' entries their masks zero (0.0 when none is)."""
    kept = total = 0
    for _, p, _ in _pruned_weights(model):
        mask = getattr(p, "_brgemm_mask", None)
        if mask is not None:
            kept += int(mask.sum())
            total += mask.numel()
    return 1.0 - kept / total if total else 0.0
