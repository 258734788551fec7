"""The modules an optimized network is made of (see :func:`brgemm.torch.optimize`): each takes and
returns the blocked layout (N, C/bc, H, W, bc).

:class:`FusedConv2d` is a convolution with what follows it in the model: a BatchNorm2d, a
residual add, a ReLU. In inference the BatchNorm is folded into the convolution's weights and
bias (refolded when a parameter or running statistic changes: version counters, no comparison),
the residual and the ReLU run in the product's epilogue, and the whole block is one pass over
memory. In training the BatchNorm normalises with the batch's statistics, which the convolution
gathers row by row while its output is in cache (brgemm::conv2d_moments), in one pass for
normalisation + residual + ReLU (brgemm::batch_norm_blocked), and updates the running ones
exactly as ``torch.nn.BatchNorm2d`` does.
"""

import threading

import torch
from torch import nn

from .._runners.conv import ConvGeometry, padding_arg
from .._runners.weights import WeightsKey
from ._bridge import _module_algorithm, mark_persistent
from ._conv import conv2d_inference
from ._norm import batch_norm_train, uses_batch_statistics


class Activations:
    """The buffers an optimized model's fused convolutions write in inference, one per slot of
    its plan (optimize gives two values the same slot only when the first is dead before the
    second is made), per thread, grown to the largest size asked and kept: a ResNet-50 at N = 16
    would otherwise fault some 700 MB of fresh pages in every call."""

    def __init__(self):
        self._local = threading.local()

    def __reduce__(self):
        return (Activations, ())   # buffers are a cache: a copied model starts with none

    def buffer(self, slot):
        def take(shape, dtype):
            buffers = self._local.__dict__.setdefault("buffers", {})
            nbytes = dtype.itemsize
            for d in shape:
                nbytes *= d
            buf = buffers.get(slot)
            if buf is None or buf.numel() < nbytes:
                buf = buffers[slot] = torch.empty(nbytes, dtype=torch.uint8)
            return buf[:nbytes].view(dtype).view(shape)
        return take


def _bn_folds(bn):
    """Whether the BatchNorm normalises with its running statistics now (then it folds)."""
    return bn is not None and not bn.training and bn.track_running_stats and bn.running_mean is not None


class FusedConv2d(nn.Module):
    """``conv`` (any groups) → ``bn`` (a BatchNorm2d or None) → + residual (when the call passes
    one) → ``activation`` ("none", "relu", "relu6"), on blocked tensors. The convolution's parameters are this module's (the same
    Parameter objects, under the same names); ``bn`` stays where it was in the model (its
    parameters and buffers keep their state_dict keys) and is only referenced here."""

    def __init__(self, conv, bn=None, activation="none", compute_dtype=None, algorithm="direct"):
        super().__init__()
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride, self.dilation = conv.kernel_size, list(conv.stride), list(conv.dilation)
        self.padding = list(padding_arg(conv.padding, conv.kernel_size, conv.dilation))
        self.groups = conv.groups
        self._geometry = ConvGeometry.of(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                                         self.padding, self.dilation, self.groups)
        self.weight = conv.weight
        self.bias = conv.bias
        self.__dict__["_bn"] = bn   # not a submodule: it keeps its own place in the model
        self.activation = activation  # "none", "relu" or "relu6"
        self.compute_dtype = compute_dtype
        self.algorithm = _module_algorithm(algorithm, self)  # optimize's argument (float32 only)
        self._algorithm_used = None
        self._fold_key, self._folded = None, None
        self.training = conv.training
        self.__dict__["_activations"] = None  # set by optimize: the model's Activations

    @property
    def bn(self):
        return self._bn

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fold_key"], state["_folded"] = None, None   # a cache keyed by weak references
        return state

    def _folded_weights(self):
        """(weight, bias) with the BatchNorm's inference transform folded in: W·s and
        (b − mean)·s + β with s = γ / √(var + ε), computed in float64 and rounded once. Cached
        by the tensors' versions unless autograd needs the fold (then it is recomputed, so
        gradients reach W, b, γ and β)."""
        bn = self._bn
        tensors = (self.weight, self.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)
        grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
        # Compiled: the fold is part of the graph (version counters are not traceable; with
        # inductor's freezing it is computed once).
        cache = not grad and not torch.compiler.is_compiling()
        key = (WeightsKey(*tensors), bn.eps) if cache else None  # one key for every packed weight
        if cache and key == self._fold_key:
            return self._folded
        with torch.set_grad_enabled(grad):
            w, b = self.weight, self.bias
            dt = torch.float64
            scale = 1.0 / (bn.running_var.to(dt) + bn.eps).sqrt()  # correctly rounded: the same when compiled
            if bn.weight is not None:
                scale = scale * bn.weight.to(dt)
            shift = -bn.running_mean.to(dt) * scale
            if b is not None:
                shift = shift + b.to(dt) * scale
            if bn.bias is not None:
                shift = shift + bn.bias.to(dt)
            folded = ((w.to(dt) * scale.reshape(-1, 1, 1, 1)).to(w.dtype), shift.to(w.dtype))
        if cache:
            self._fold_key, self._folded = key, tuple(mark_persistent(t) for t in folded)
        return folded

    def forward(self, x, residual=None, slot=None):
        """x: blocked (N, C/bc, H, W, bc) of the compute dtype; residual: blocked like the output;
        slot: the output's buffer in the model's plan (inference only)."""
        bn = self._bn
        conv = torch.ops.brgemm.conv2d
        if bn is None or _bn_folds(bn):
            w, b = (self.weight, self.bias) if bn is None else self._folded_weights()
            if not torch.is_grad_enabled() and not torch.compiler.is_compiling() and w.dtype == torch.float32:
                # Inference: the runner directly, skipping the operator's dispatch (≈ half the
                # Python time of a call, which counts at batch 1).
                pool = self._activations
                out = None if pool is None or slot is None else pool.buffer(slot)
                y, self._algorithm_used = conv2d_inference(x, w, b, self._geometry, self.activation, residual, out,
                                                           self.algorithm)
                return y
            return conv(x, w, b, self.stride, self.padding, self.dilation, self.groups, self.activation, True,
                        residual, self.algorithm)
        moments = None
        if uses_batch_statistics(bn):  # gathered by the convolution while its rows are in cache
            y, moments = torch.ops.brgemm.conv2d_moments(x, self.weight, self.bias, self.stride, self.padding,
                                                         self.dilation, self.groups, self.algorithm)
        else:
            y = conv(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups, "none", True,
                     None, self.algorithm)
        y = batch_norm_train(y, bn, self.out_channels, residual, self.activation == "relu", moments)
        return y.clamp(0.0, 6.0) if self.activation == "relu6" else y

    @property
    def algorithm_used(self):
        """What the last inference call without autograd ran ("direct", "winograd F(4x4,3x3)",
        ...), None before one."""
        return self._algorithm_used

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={tuple(self.kernel_size)}, "
                f"stride={tuple(self.stride)}, padding={tuple(self.padding)}, groups={self.groups}, "
                f"bn={self._bn is not None}, "
                f"activation={self.activation!r}")
